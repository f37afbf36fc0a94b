//! What a run trains and tests on, in a few numbers: enough to tell another
//! data set apart, cheap to compute (CRC-32 runs at several GB/s), and
//! small enough to store in a checkpoint and to compare across ranks.

use super::dataset::Dataset;

/// The identity of a run's data: its kind, the sizes of the training and
/// test sets, and a CRC-32 of each set's pixels and of its labels.
///
/// A checkpoint records it ([`Checkpoint::data`](crate::checkpoint::Checkpoint::data)),
/// and a resume with other data is refused, naming what differs
/// ([`DataIdentity::differences`]); ranks compare it before training
/// ([`DataIdentity::entries`] with
/// [`ensure_agree_keyed`](crate::collectives::ensure_agree_keyed)), so
/// that a rank holding other labels or another test set is named.
///
/// ```
/// use ringsgd::data::{synthetic, DataIdentity};
/// let (a, b) = (synthetic::generate(64, 1), synthetic::generate(16, 2));
/// let here = DataIdentity::new("synthetic", &a, &b);
/// let other = DataIdentity::new("synthetic", &synthetic::generate(128, 1), &b);
/// assert_eq!(here, DataIdentity::new("synthetic", &a, &b));
/// let diff = here.differences(&other);
/// assert!(diff[0].starts_with("training set size: 64 images"), "{diff:?}");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataIdentity {
    /// What kind of data: e.g. `"CIFAR-10"` or `"synthetic"` (free text,
    /// compared as is; not the path, which may change between runs).
    pub kind: String,
    /// Training images.
    pub train_images: u64,
    /// Test images.
    pub test_images: u64,
    /// CRC-32 of the training pixels (all samples back to back; `f32`
    /// values as little-endian bytes, see [`Samples::crc32`](crate::data::Samples::crc32)).
    pub train_pixels_crc: u32,
    /// CRC-32 of the training labels.
    pub train_labels_crc: u32,
    /// CRC-32 of the test pixels.
    pub test_pixels_crc: u32,
    /// CRC-32 of the test labels.
    pub test_labels_crc: u32,
}

impl DataIdentity {
    /// The identity of `train` and `test`, of the given kind.
    pub fn new(kind: &str, train: &Dataset, test: &Dataset) -> Self {
        DataIdentity {
            kind: kind.to_string(),
            train_images: train.len() as u64,
            test_images: test.len() as u64,
            train_pixels_crc: train.samples().crc32(),
            train_labels_crc: crc32fast::hash(train.labels()),
            test_pixels_crc: test.samples().crc32(),
            test_labels_crc: crc32fast::hash(test.labels()),
        }
    }

    /// The fields as `(name, value)`, e.g. `("training labels", "crc32
    /// 1a2b3c4d")`: what ranks compare, and what
    /// [`differences`](Self::differences) names.
    pub fn entries(&self) -> Vec<(String, Option<String>)> {
        let crc = |v: u32| Some(format!("crc32 {v:08x}"));
        vec![
            ("kind".into(), Some(self.kind.clone())),
            (
                "training set size".into(),
                Some(format!("{} images", self.train_images)),
            ),
            (
                "test set size".into(),
                Some(format!("{} images", self.test_images)),
            ),
            ("training images".into(), crc(self.train_pixels_crc)),
            ("training labels".into(), crc(self.train_labels_crc)),
            ("test images".into(), crc(self.test_pixels_crc)),
            ("test labels".into(), crc(self.test_labels_crc)),
        ]
    }

    /// What differs between `self` (e.g. what a checkpoint recorded) and
    /// `other` (this run's data), one `name: A, here B` per field; empty
    /// when they are the same.
    pub fn differences(&self, other: &DataIdentity) -> Vec<String> {
        self.entries()
            .into_iter()
            .zip(other.entries())
            .filter(|(a, b)| a.1 != b.1)
            .map(|((name, a), (_, b))| {
                format!(
                    "{name}: {} in the checkpoint, {} here",
                    a.unwrap_or_default(),
                    b.unwrap_or_default()
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic;

    #[test]
    fn every_part_is_seen_and_named() {
        let (train, test) = (synthetic::generate(40, 1), synthetic::generate(10, 2));
        let base = DataIdentity::new("synthetic", &train, &test);
        let relabel = |d: &Dataset| {
            let mut labels = d.labels().to_vec();
            labels[3] = (labels[3] + 1) % 10;
            Dataset::cifar(d.pixels().unwrap().to_vec(), labels, 10).unwrap()
        };
        let repaint = |d: &Dataset| {
            let mut pixels = d.pixels().unwrap().to_vec();
            pixels[100] ^= 1;
            Dataset::cifar(pixels, d.labels().to_vec(), 10).unwrap()
        };
        let cases = [
            (DataIdentity::new("CIFAR-10", &train, &test), "kind"),
            (
                DataIdentity::new("synthetic", &relabel(&train), &test),
                "training labels",
            ),
            (
                DataIdentity::new("synthetic", &repaint(&train), &test),
                "training images",
            ),
            (
                DataIdentity::new("synthetic", &train, &relabel(&test)),
                "test labels",
            ),
            (
                DataIdentity::new("synthetic", &train, &repaint(&test)),
                "test images",
            ),
            (
                DataIdentity::new("synthetic", &train, &test.truncated(5)),
                "test set size",
            ),
        ];
        for (other, name) in cases {
            let d = base.differences(&other);
            assert!(d.iter().any(|l| l.starts_with(name)), "{name}: {d:?}");
        }
        assert!(base.differences(&base.clone()).is_empty());
    }
}
