//! Loader for MNIST and Fashion-MNIST (IDX files, each optionally gzipped).
//!
//! [`load`] takes a folder holding the four files of the official
//! distribution, under their official names, each either plain or with
//! `.gz` (the compressed form is recognised by its magic bytes, not its
//! name; see [`idx`](super::idx)):
//!
//! | file | holds |
//! | --- | --- |
//! | `train-images-idx3-ubyte` | training images (60,000 x 28 x 28) |
//! | `train-labels-idx1-ubyte` | training labels |
//! | `t10k-images-idx3-ubyte` | test images (10,000) |
//! | `t10k-labels-idx1-ubyte` | test labels |
//!
//! The names with a dot (`train-images.idx3-ubyte`), as some mirrors use,
//! are accepted too. Beyond what [`idx`](super::idx) checks for each file,
//! the image and label files of a split must hold the same number of
//! records (the error names both), and every label must be below 10 (the
//! error names the label file and the record). The datasets have shape
//! `1 x rows x cols` ([`Shape::MNIST`](super::Shape::MNIST) for the real
//! sets) and `u8` pixels; the training and test images must have the same
//! size.
//!
//! MNIST digits should not be flipped: augment them with
//! [`Augmentation::crop`](super::Augmentation::crop), if at all.

use std::path::{Path, PathBuf};

use super::dataset::{DataSplits, Dataset, Shape};
use super::idx;
use crate::{Error, Result};

/// Classes of both data sets.
pub const NUM_CLASSES: usize = 10;
/// Training images file (without `.gz`).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// Training labels file (without `.gz`).
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// Test images file (without `.gz`).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// Test labels file (without `.gz`).
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
/// The digit names.
pub const DIGIT_NAMES: [&str; NUM_CLASSES] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// The Fashion-MNIST class names, in label order.
pub const FASHION_NAMES: [&str; NUM_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which of the two data sets (same files, other class names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Variant {
    /// Handwritten digits 0-9.
    #[default]
    Digits,
    /// Zalando's Fashion-MNIST articles.
    Fashion,
}

impl Variant {
    /// The class names in label order.
    pub fn class_names(self) -> [&'static str; NUM_CLASSES] {
        match self {
            Variant::Digits => DIGIT_NAMES,
            Variant::Fashion => FASHION_NAMES,
        }
    }

    /// `"MNIST"` or `"Fashion-MNIST"`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Digits => "MNIST",
            Variant::Fashion => "Fashion-MNIST",
        }
    }
}

/// Loads the training and test sets of MNIST (or Fashion-MNIST, which
/// differs only in its class names) from folder `dir`; see the [module
/// docs](self).
///
/// ```
/// # fn main() -> ringsgd::Result<()> {
/// use ringsgd::data::{mnist, synthetic};
/// let dir = std::env::temp_dir().join(format!("ringsgd-doc-mnist-{}", std::process::id()));
/// synthetic::write_mnist_dir(&dir, 30, 10, 1, true)?; // gzipped
/// let data = mnist::load(&dir, mnist::Variant::Digits)?;
/// assert_eq!((data.train.len(), data.test.len()), (30, 10));
/// assert_eq!(data.train.shape().to_array(), [1, 28, 28]);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn load(dir: &Path, variant: Variant) -> Result<DataSplits> {
    if !dir.is_dir() {
        let what = if dir.exists() {
            "not a folder"
        } else {
            "no such folder"
        };
        return Err(Error::Data {
            file: dir.to_path_buf(),
            record: None,
            msg: format!("{what}; {}", expected_layout()),
        });
    }
    let files = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS].map(|f| find(dir, f));
    let missing: Vec<&str> = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
        .iter()
        .zip(&files)
        .filter(|(_, f)| f.is_none())
        .map(|(n, _)| *n)
        .collect();
    if let Some(first) = missing.first() {
        let listing = super::cifar::folder_listing(dir)?;
        return Err(Error::Data {
            file: dir.join(first),
            record: None,
            msg: format!(
                "missing {} file (missing: {}; {listing}); {}",
                variant.name(),
                missing.join(", "),
                expected_layout()
            ),
        });
    }
    let [ti, tl, vi, vl] = files.map(|f| f.expect("checked above"));
    let train = load_pair(&ti, &tl, NUM_CLASSES)?;
    let test = load_pair(&vi, &vl, NUM_CLASSES)?;
    if train.shape() != test.shape() {
        return Err(Error::Data {
            file: vi,
            record: None,
            msg: format!(
                "test images are {} but the training images ({}) are {}",
                test.shape(),
                ti.display(),
                train.shape()
            ),
        });
    }
    log::info!(
        "loaded {} from {}: {} training images, {} test images of {}",
        variant.name(),
        dir.display(),
        train.len(),
        test.len(),
        train.shape()
    );
    Ok(DataSplits {
        train,
        test,
        class_names: variant
            .class_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    })
}

/// One split: the images of IDX file `images` with the labels of IDX file
/// `labels`, which must hold as many records, each below `num_classes`.
/// The dataset has shape `1 x rows x cols`.
pub fn load_pair(images: &Path, labels: &Path, num_classes: usize) -> Result<Dataset> {
    let img = idx::read_images(images)?;
    let lab = idx::read_labels(labels)?;
    if img.count != lab.len() {
        return Err(Error::Data {
            file: labels.to_path_buf(),
            record: None,
            msg: format!(
                "holds {} labels but the image file {} holds {} images",
                lab.len(),
                images.display(),
                img.count
            ),
        });
    }
    if let Some((i, &l)) = lab
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= num_classes)
    {
        return Err(Error::Data {
            file: labels.to_path_buf(),
            record: Some(i),
            msg: format!("label {l} out of range 0..={}", num_classes - 1),
        });
    }
    Dataset::new(
        Shape::new(1, img.rows, img.cols),
        img.pixels,
        lab,
        num_classes,
    )
}

fn expected_layout() -> String {
    format!(
        "expected a folder with the four MNIST IDX files {TRAIN_IMAGES}, {TRAIN_LABELS}, \
         {TEST_IMAGES} and {TEST_LABELS}, each plain or gzipped (.gz)"
    )
}

/// The file of `name` in `dir`: plain, `.gz`, or with the dotted name
/// (`train-images.idx3-ubyte`), plain first.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    let dotted = name.replacen("-idx", ".idx", 1);
    [
        name.to_string(),
        format!("{name}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}
