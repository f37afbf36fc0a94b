//! In-memory image datasets: u8 pixels, CHW layout, one label byte per image.

use crate::{Error, Result};

/// Image channels (red, green, blue).
pub const CHANNELS: usize = 3;
/// Image height in pixels.
pub const HEIGHT: usize = 32;
/// Image width in pixels.
pub const WIDTH: usize = 32;
/// Bytes of one image: `CHANNELS * HEIGHT * WIDTH` = 3072.
pub const IMAGE_BYTES: usize = CHANNELS * HEIGHT * WIDTH;
/// Number of CIFAR-10 classes.
pub const NUM_CLASSES: usize = 10;
/// CIFAR-10 class names in label order (the content of `batches.meta.txt`).
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// A set of labelled 3x32x32 images kept as raw `u8` pixels.
///
/// Images are stored back to back, each in CHW order (1024 red bytes, then
/// 1024 green, then 1024 blue, rows top to bottom), exactly as in a CIFAR-10
/// record. Keeping `u8` costs a quarter of the memory of `f32` (the CIFAR-10
/// training set is 150 MB as `u8`); conversion and normalisation happen per
/// batch in [`BatchBuilder`](crate::data::BatchBuilder).
///
/// ```
/// use ringsgd::data::{Dataset, IMAGE_BYTES};
/// let ds = Dataset::new(vec![7u8; 2 * IMAGE_BYTES], vec![3, 9], 10)?;
/// assert_eq!(ds.len(), 2);
/// assert_eq!(ds.label(1), 9);
/// assert_eq!(ds.image(0)[0], 7);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    num_classes: usize,
}

impl Dataset {
    /// Builds a dataset from `labels.len()` images stored back to back in
    /// `images` (CHW, [`IMAGE_BYTES`] each).
    ///
    /// Errors if `images.len() != labels.len() * IMAGE_BYTES`, if
    /// `num_classes` is 0 or above 256, or if a label is `>= num_classes`
    /// (the message names the record).
    pub fn new(images: Vec<u8>, labels: Vec<u8>, num_classes: usize) -> Result<Self> {
        if num_classes == 0 || num_classes > 256 {
            return Err(Error::invalid(format!(
                "num_classes must be in 1..=256 (labels are bytes), got {num_classes}"
            )));
        }
        if images.len() != labels.len() * IMAGE_BYTES {
            return Err(Error::invalid(format!(
                "dataset images hold {} bytes but {} labels need {} ({} bytes per image)",
                images.len(),
                labels.len(),
                labels.len() * IMAGE_BYTES,
                IMAGE_BYTES
            )));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= num_classes)
        {
            return Err(Error::invalid(format!(
                "label {l} of record {i} is out of range 0..{num_classes}"
            )));
        }
        Ok(Dataset {
            images,
            labels,
            num_classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes (labels are `0..num_classes`).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The CHW pixels of image `i` ([`IMAGE_BYTES`] bytes).
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing. Code taking indices from
    /// outside should check them first ([`BatchBuilder`](crate::data::BatchBuilder)
    /// does and returns an error).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// The label of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// All labels, one per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// All pixels, images back to back (CHW each).
    pub fn pixels(&self) -> &[u8] {
        &self.images
    }

    /// Number of images of each class (`num_classes` entries).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// A new dataset with the images at `indices`, in that order (an index
    /// may repeat). Useful to train or benchmark on a slice of CIFAR-10.
    ///
    /// Errors naming the first index `>= self.len()`.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let mut images = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::invalid(format!(
                    "subset index {i} out of range for a dataset of {} images",
                    self.len()
                )));
            }
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok(Dataset {
            images,
            labels,
            num_classes: self.num_classes,
        })
    }

    /// The first `min(n, len)` images.
    pub fn truncated(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * IMAGE_BYTES].to_vec(),
            labels: self.labels[..n].to_vec(),
            num_classes: self.num_classes,
        }
    }

    /// Appends the images and labels of `other` (same number of classes).
    pub fn extend(&mut self, other: &Dataset) -> Result<()> {
        if other.num_classes != self.num_classes {
            return Err(Error::invalid(format!(
                "cannot append a dataset of {} classes to one of {}",
                other.num_classes, self.num_classes
            )));
        }
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
        Ok(())
    }

    /// The dataset in the CIFAR-10 binary record layout: per image one label
    /// byte then the 3072 CHW pixel bytes (3073 bytes per record).
    pub fn to_cifar_records(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * (IMAGE_BYTES + 1));
        for i in 0..self.len() {
            out.push(self.labels[i]);
            out.extend_from_slice(self.image(i));
        }
        out
    }
}

/// The CIFAR-10 training and test sets with the class names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CifarData {
    /// The five training batches, in file order (`data_batch_1` first).
    pub train: Dataset,
    /// The test batch.
    pub test: Dataset,
    /// Class names in label order (from `batches.meta.txt` when present,
    /// otherwise [`CLASS_NAMES`]).
    pub class_names: Vec<String>,
}
