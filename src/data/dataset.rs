//! In-memory labelled datasets of any shape: samples stored as `u8` or
//! `f32`, CHW layout, one label byte per sample.

use crate::{Error, Result};

/// CIFAR image channels (red, green, blue).
pub const CHANNELS: usize = 3;
/// CIFAR image height in pixels.
pub const HEIGHT: usize = 32;
/// CIFAR image width in pixels.
pub const WIDTH: usize = 32;
/// Bytes of one CIFAR image: `CHANNELS * HEIGHT * WIDTH` = 3072.
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

/// The shape of one sample: channels x height x width (CHW order).
///
/// Tabular data with `k` features is `Shape::new(k, 1, 1)` (or `(1, 1, k)`):
/// whatever the model's input expects.
///
/// ```
/// use ringsgd::data::Shape;
/// let mnist = Shape::new(1, 28, 28);
/// assert_eq!(mnist.sample_len(), 784);
/// assert_eq!(Shape::CIFAR.to_array(), [3, 32, 32]);
/// assert_eq!(mnist.to_string(), "1x28x28");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Channels (planes).
    pub channels: usize,
    /// Rows of each plane.
    pub height: usize,
    /// Columns of each plane.
    pub width: usize,
}

impl Shape {
    /// The CIFAR-10/100 image shape, 3x32x32.
    pub const CIFAR: Shape = Shape::new(CHANNELS, HEIGHT, WIDTH);
    /// The MNIST / Fashion-MNIST image shape, 1x28x28.
    pub const MNIST: Shape = Shape::new(1, 28, 28);

    /// A shape of `channels` planes of `height x width` values.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Shape {
            channels,
            height,
            width,
        }
    }

    /// Values of one sample: `channels * height * width`.
    pub const fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Values of one plane: `height * width`.
    pub const fn plane(&self) -> usize {
        self.height * self.width
    }

    /// `[channels, height, width]`, as [`Model::from_spec`](crate::nn::Model::from_spec)
    /// takes its input shape.
    pub const fn to_array(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Errors unless every dimension is at least 1 (and the product fits).
    pub fn validate(&self) -> Result<()> {
        let ok = self.channels > 0
            && self.height > 0
            && self.width > 0
            && self
                .channels
                .checked_mul(self.height)
                .and_then(|v| v.checked_mul(self.width))
                .is_some();
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "sample shape {self} must have every dimension at least 1"
            )))
        }
    }
}

impl From<[usize; 3]> for Shape {
    fn from([c, h, w]: [usize; 3]) -> Self {
        Shape::new(c, h, w)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// The values of a dataset's samples, back to back: raw bytes (images,
/// normalised per batch through a lookup table) or `f32` (tabular or
/// pre-processed data, normalised per channel).
#[derive(Clone, Debug, PartialEq)]
pub enum Samples {
    /// Bytes `0..=255`, scaled to `[0, 1]` before normalisation.
    U8(Vec<u8>),
    /// Values used as they are (then normalised per channel).
    F32(Vec<f32>),
}

impl Samples {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Samples::U8(v) => v.len(),
            Samples::F32(v) => v.len(),
        }
    }

    /// True when there is no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `"u8"` or `"f32"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Samples::U8(_) => "u8",
            Samples::F32(_) => "f32",
        }
    }

    /// CRC-32 of the values (bytes as they are, `f32` as little-endian bit
    /// patterns).
    pub fn crc32(&self) -> u32 {
        match self {
            Samples::U8(v) => crc32fast::hash(v),
            Samples::F32(v) => {
                let mut h = crc32fast::Hasher::new();
                for x in v {
                    h.update(&x.to_le_bytes());
                }
                h.finalize()
            }
        }
    }
}

impl From<Vec<u8>> for Samples {
    fn from(v: Vec<u8>) -> Self {
        Samples::U8(v)
    }
}

impl From<Vec<f32>> for Samples {
    fn from(v: Vec<f32>) -> Self {
        Samples::F32(v)
    }
}

/// One sample's values, borrowed from a [`Dataset`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SampleRef<'a> {
    /// Bytes (CHW).
    U8(&'a [u8]),
    /// Values (CHW).
    F32(&'a [f32]),
}

/// A set of labelled samples of one [`Shape`], kept as `u8` or `f32`.
///
/// Samples are stored back to back, each in CHW order (all of channel 0 row
/// by row, then channel 1, ...), exactly as in a CIFAR-10 record. Keeping
/// images as `u8` costs a quarter of the memory of `f32` (the CIFAR-10
/// training set is 150 MB as `u8`); conversion and normalisation happen per
/// batch in [`BatchBuilder`](crate::data::BatchBuilder).
///
/// ```
/// use ringsgd::data::{Dataset, Shape, IMAGE_BYTES};
/// // CIFAR-shaped bytes:
/// let ds = Dataset::cifar(vec![7u8; 2 * IMAGE_BYTES], vec![3, 9], 10)?;
/// assert_eq!((ds.len(), ds.label(1), ds.image(0)[0]), (2, 9, 7));
/// // Tabular f32 data: 3 samples of 4 features in 2 classes.
/// let tab = Dataset::new(Shape::new(4, 1, 1), vec![0.5f32; 12], vec![0, 1, 1], 2)?;
/// assert_eq!(tab.shape().sample_len(), 4);
/// assert!(tab.pixels().is_none());
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    shape: Shape,
    samples: Samples,
    labels: Vec<u8>,
    num_classes: usize,
}

impl Dataset {
    /// Builds a dataset of `labels.len()` samples of `shape`, stored back to
    /// back in `samples` (CHW, `shape.sample_len()` values each; a `Vec<u8>`
    /// or a `Vec<f32>`).
    ///
    /// Errors if a dimension of `shape` is 0, if `samples` does not hold
    /// exactly `labels.len()` samples, if `num_classes` is 0 or above 256,
    /// if a label is `>= num_classes` (the message names the record), or if
    /// an `f32` value is not finite (named by record).
    pub fn new(
        shape: Shape,
        samples: impl Into<Samples>,
        labels: Vec<u8>,
        num_classes: usize,
    ) -> Result<Self> {
        let samples = samples.into();
        shape.validate()?;
        if num_classes == 0 || num_classes > 256 {
            return Err(Error::invalid(format!(
                "num_classes must be in 1..=256 (labels are bytes), got {num_classes}"
            )));
        }
        let per = shape.sample_len();
        if Some(samples.len()) != labels.len().checked_mul(per) {
            return Err(Error::invalid(format!(
                "dataset samples hold {} {} values but {} labels need {} ({per} per {shape} \
                 sample)",
                samples.len(),
                samples.kind(),
                labels.len(),
                labels.len().saturating_mul(per),
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
        if let Samples::F32(v) = &samples {
            if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "value {} of record {} (index {} in the sample) is not finite",
                    v[p],
                    p / per,
                    p % per
                )));
            }
        }
        Ok(Dataset {
            shape,
            samples,
            labels,
            num_classes,
        })
    }

    /// A dataset of CIFAR-shaped (3x32x32) `u8` images: [`Dataset::new`]
    /// with [`Shape::CIFAR`].
    pub fn cifar(images: Vec<u8>, labels: Vec<u8>, num_classes: usize) -> Result<Self> {
        Dataset::new(Shape::CIFAR, images, labels, num_classes)
    }

    /// The shape of every sample.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes (labels are `0..num_classes`).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// All values, samples back to back (CHW each).
    pub fn samples(&self) -> &Samples {
        &self.samples
    }

    /// The CHW values of sample `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`, like slice indexing. Code taking indices from
    /// outside should check them first ([`BatchBuilder`](crate::data::BatchBuilder)
    /// does and returns an error).
    pub fn sample(&self, i: usize) -> SampleRef<'_> {
        let per = self.shape.sample_len();
        let r = i * per..(i + 1) * per;
        match &self.samples {
            Samples::U8(v) => SampleRef::U8(&v[r]),
            Samples::F32(v) => SampleRef::F32(&v[r]),
        }
    }

    /// The CHW pixels of `u8` image `i` (`shape().sample_len()` bytes).
    ///
    /// # Panics
    /// If `i >= self.len()`, or if the dataset holds `f32` samples (use
    /// [`sample`](Self::sample) for either kind).
    pub fn image(&self, i: usize) -> &[u8] {
        match self.sample(i) {
            SampleRef::U8(v) => v,
            SampleRef::F32(_) => panic!("Dataset::image on f32 samples: use Dataset::sample"),
        }
    }

    /// The label of sample `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    /// All labels, one per sample.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// All pixels of a `u8` dataset, images back to back (CHW each); `None`
    /// for `f32` samples.
    pub fn pixels(&self) -> Option<&[u8]> {
        match &self.samples {
            Samples::U8(v) => Some(v),
            Samples::F32(_) => None,
        }
    }

    /// Number of samples of each class (`num_classes` entries).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// A new dataset with the samples at `indices`, in that order (an index
    /// may repeat). Useful to train or benchmark on a slice of a data set.
    ///
    /// Errors naming the first index `>= self.len()`.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::invalid(format!(
                "subset index {i} out of range for a dataset of {} samples",
                self.len()
            )));
        }
        let per = self.shape.sample_len();
        fn gather<T: Copy>(v: &[T], per: usize, indices: &[usize]) -> Vec<T> {
            let mut out = Vec::with_capacity(indices.len() * per);
            for &i in indices {
                out.extend_from_slice(&v[i * per..(i + 1) * per]);
            }
            out
        }
        let samples = match &self.samples {
            Samples::U8(v) => Samples::U8(gather(v, per, indices)),
            Samples::F32(v) => Samples::F32(gather(v, per, indices)),
        };
        Ok(Dataset {
            shape: self.shape,
            samples,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            num_classes: self.num_classes,
        })
    }

    /// The first `min(n, len)` samples.
    pub fn truncated(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let end = n * self.shape.sample_len();
        let samples = match &self.samples {
            Samples::U8(v) => Samples::U8(v[..end].to_vec()),
            Samples::F32(v) => Samples::F32(v[..end].to_vec()),
        };
        Dataset {
            shape: self.shape,
            samples,
            labels: self.labels[..n].to_vec(),
            num_classes: self.num_classes,
        }
    }

    /// Appends the samples and labels of `other` (same shape, value type
    /// and number of classes).
    pub fn extend(&mut self, other: &Dataset) -> Result<()> {
        if other.num_classes != self.num_classes {
            return Err(Error::invalid(format!(
                "cannot append a dataset of {} classes to one of {}",
                other.num_classes, self.num_classes
            )));
        }
        if other.shape != self.shape {
            return Err(Error::invalid(format!(
                "cannot append a dataset of {} samples to one of {} samples",
                other.shape, self.shape
            )));
        }
        match (&mut self.samples, &other.samples) {
            (Samples::U8(a), Samples::U8(b)) => a.extend_from_slice(b),
            (Samples::F32(a), Samples::F32(b)) => a.extend_from_slice(b),
            (a, b) => {
                return Err(Error::invalid(format!(
                    "cannot append {} samples to a dataset of {} samples",
                    b.kind(),
                    a.kind()
                )))
            }
        }
        self.labels.extend_from_slice(&other.labels);
        Ok(())
    }

    /// The dataset in the CIFAR-10 binary record layout: per image one label
    /// byte then the 3072 CHW pixel bytes (3073 bytes per record).
    ///
    /// Errors unless the dataset holds `u8` samples of [`Shape::CIFAR`].
    pub fn to_cifar_records(&self) -> Result<Vec<u8>> {
        let pixels = match (&self.samples, self.shape) {
            (Samples::U8(v), Shape::CIFAR) => v,
            _ => {
                return Err(Error::invalid(format!(
                    "CIFAR records hold u8 3x32x32 images, this dataset has {} {} samples",
                    self.samples.kind(),
                    self.shape
                )))
            }
        };
        let mut out = Vec::with_capacity(self.len() * (IMAGE_BYTES + 1));
        for (label, img) in self.labels.iter().zip(pixels.chunks_exact(IMAGE_BYTES)) {
            out.push(*label);
            out.extend_from_slice(img);
        }
        Ok(out)
    }
}

/// A data set's training and test sets with the class names (what every
/// loader returns).
#[derive(Clone, Debug, PartialEq)]
pub struct DataSplits {
    /// The training set (for CIFAR-10 the five training batches, in file
    /// order, `data_batch_1` first).
    pub train: Dataset,
    /// The test set.
    pub test: Dataset,
    /// Class names in label order (from the data set's meta file when
    /// present, otherwise the published names).
    pub class_names: Vec<String>,
}

/// The name [`cifar::load`](crate::data::cifar::load) has always returned.
pub type CifarData = DataSplits;
