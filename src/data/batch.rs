//! Assembly of normalised `f32` NCHW batches from `u8` or `f32` datasets
//! of any shape, with optional augmentation, into reusable buffers.

use ndarray::ArrayView4;

use super::augment::{Augmentation, SampleAugment};
use super::dataset::{Dataset, SampleRef, Shape};
use super::normalize::Normalizer;
use super::shard::StepShard;
use crate::{Error, Result};

/// A batch assembled by a [`BatchBuilder`]: views into its buffers, valid
/// until the next fill.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Normalised samples, shape `(n, C, H, W)` for the dataset's
    /// [`Shape`], standard (C) layout.
    pub images: ArrayView4<'a, f32>,
    /// The `n` labels.
    pub labels: &'a [u8],
}

impl Batch<'_> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the batch has no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Fills reusable image and label buffers from dataset indices.
///
/// Each sample is (optionally) augmented on its raw values (crop with zero
/// padding, flip), then normalised: `u8` pixels through a per-channel
/// lookup table, `f32` values per channel. Any [`Shape`] works, as long as
/// the normaliser has one entry per channel of the data. The buffers grow
/// to the largest batch (and sample) seen and are reused: once warm, a fill
/// allocates nothing. With augmentation, the crop and flip of each sample
/// come from [`Augmentation::sample`] with `(seed, epoch, position)`, so the
/// result does not depend on how a global batch is split across ranks.
///
/// ```
/// use ringsgd::data::{synthetic, Augmentation, BatchBuilder, Normalizer, ShardPlan};
/// let train = synthetic::generate(64, 1);
/// let norm = Normalizer::from_dataset(&train)?;
/// let mut builder = BatchBuilder::new(norm, Some(Augmentation::standard()))?;
/// let plan = ShardPlan::new(train.len(), 16, true, 1, 0, 2)?;
/// let epoch = plan.epoch(0);
/// let shard = epoch.step(0)?;
/// let batch = builder.fill_shard(&train, &shard)?;
/// assert_eq!(batch.images.shape(), &[8, 3, 32, 32]);
/// assert_eq!(batch.labels.len(), 8);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    normalizer: Normalizer,
    lut: Vec<[f32; 256]>,
    augment: Option<Augmentation>,
    /// Shape of the samples in `images` (of the last fill or reserve).
    shape: Shape,
    images: Vec<f32>,
    labels: Vec<u8>,
    scratch: Vec<u8>,
    scratch_f32: Vec<f32>,
}

impl BatchBuilder {
    /// A builder normalising with `normalizer` and augmenting training
    /// batches with `augment` (`None`: no augmentation). Errors if the
    /// augmentation policy is invalid.
    pub fn new(normalizer: Normalizer, augment: Option<Augmentation>) -> Result<Self> {
        if let Some(a) = &augment {
            a.validate()?;
        }
        Ok(BatchBuilder {
            lut: normalizer.lookup_table(),
            normalizer,
            augment,
            shape: Shape::CIFAR,
            images: Vec::new(),
            labels: Vec::new(),
            scratch: Vec::new(),
            scratch_f32: Vec::new(),
        })
    }

    /// Grows the buffers to hold `max_batch` CIFAR-shaped samples now, so
    /// that no later fill of at most `max_batch` samples allocates
    /// ([`reserve_for`](Self::reserve_for) for other shapes).
    pub fn reserve(&mut self, max_batch: usize) {
        self.reserve_for(Shape::CIFAR, max_batch);
    }

    /// Grows the buffers to hold `max_batch` samples of `shape` now, so
    /// that no later fill of at most `max_batch` such samples allocates.
    pub fn reserve_for(&mut self, shape: Shape, max_batch: usize) {
        let len = shape.sample_len();
        self.shape = shape;
        if self.images.len() < max_batch * len {
            self.images.resize(max_batch * len, 0.0);
        }
        self.labels
            .reserve(max_batch.saturating_sub(self.labels.len()));
        // Room to augment one sample of either kind.
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        if self.scratch_f32.len() < len {
            self.scratch_f32.resize(len, 0.0);
        }
    }

    /// Samples of the last filled (or reserved) shape the buffers hold
    /// without growing.
    pub fn capacity(&self) -> usize {
        (self.images.len() / self.shape.sample_len()).min(self.labels.capacity())
    }

    /// The normaliser in use.
    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    /// The augmentation policy for training batches, if any.
    pub fn augmentation(&self) -> Option<&Augmentation> {
        self.augment.as_ref()
    }

    /// A training batch for one rank's shard of a step: augmentation (if
    /// configured) keyed by `(shard.seed, shard.epoch, position)` for each
    /// sample's position in the epoch permutation.
    pub fn fill_shard(&mut self, data: &Dataset, shard: &StepShard<'_>) -> Result<Batch<'_>> {
        self.fill_train(
            data,
            shard.indices,
            shard.seed,
            shard.epoch,
            shard.positions.start,
        )
    }

    /// A training batch of the samples `indices`, where `indices[k]` sits at
    /// position `first_position + k` of the permutation of `epoch`.
    /// Augmentation (if configured) is keyed by `(seed, epoch, position)`.
    ///
    /// Errors naming the first index out of range for `data`.
    pub fn fill_train(
        &mut self,
        data: &Dataset,
        indices: &[usize],
        seed: u64,
        epoch: u64,
        first_position: usize,
    ) -> Result<Batch<'_>> {
        let augment = self.augment;
        self.fill_with(data, indices, |k| {
            augment.map(|a| a.sample(seed, epoch, first_position + k))
        })
    }

    /// An evaluation batch of the samples `indices`: normalised, never
    /// augmented. Errors naming the first index out of range for `data`.
    pub fn fill_eval(&mut self, data: &Dataset, indices: &[usize]) -> Result<Batch<'_>> {
        self.fill_with(data, indices, |_| None)
    }

    /// An evaluation batch of the contiguous samples `range` of `data`.
    pub fn fill_eval_range(
        &mut self,
        data: &Dataset,
        range: std::ops::Range<usize>,
    ) -> Result<Batch<'_>> {
        if range.start > range.end || range.end > data.len() {
            return Err(Error::invalid(format!(
                "evaluation range {range:?} out of bounds for a dataset of {} images",
                data.len()
            )));
        }
        let n = range.len();
        self.prepare(data, n)?;
        for (k, i) in range.enumerate() {
            self.write_sample(data, i, k, None);
        }
        Ok(self.view(n))
    }

    fn fill_with(
        &mut self,
        data: &Dataset,
        indices: &[usize],
        augment_of: impl Fn(usize) -> Option<SampleAugment>,
    ) -> Result<Batch<'_>> {
        if let Some((k, &i)) = indices.iter().enumerate().find(|(_, &i)| i >= data.len()) {
            return Err(Error::invalid(format!(
                "batch index {i} (entry {k} of the batch) out of range for a dataset of {} images",
                data.len()
            )));
        }
        let n = indices.len();
        self.prepare(data, n)?;
        for (k, &i) in indices.iter().enumerate() {
            self.write_sample(data, i, k, augment_of(k));
        }
        Ok(self.view(n))
    }

    /// Checks that the normaliser fits `data` and sizes the buffers.
    fn prepare(&mut self, data: &Dataset, n: usize) -> Result<()> {
        let shape = data.shape();
        if shape.channels != self.normalizer.channels() {
            return Err(Error::invalid(format!(
                "the dataset has {} channel{} ({shape} samples) but the normaliser has {}: \
                 compute it from this data (Normalizer::from_dataset)",
                shape.channels,
                if shape.channels == 1 { "" } else { "s" },
                self.normalizer.channels()
            )));
        }
        self.reserve_for(shape, n);
        self.labels.clear();
        Ok(())
    }

    fn write_sample(&mut self, data: &Dataset, i: usize, k: usize, aug: Option<SampleAugment>) {
        let shape = data.shape();
        let (len, plane) = (shape.sample_len(), shape.plane());
        let out = &mut self.images[k * len..(k + 1) * len];
        match data.sample(i) {
            SampleRef::U8(image) => {
                let src: &[u8] = match aug {
                    Some(a) => {
                        let scratch = &mut self.scratch[..len];
                        a.apply(shape, image, scratch);
                        scratch
                    }
                    None => image,
                };
                for (c, lut) in self.lut.iter().enumerate() {
                    for (o, &b) in out[c * plane..(c + 1) * plane]
                        .iter_mut()
                        .zip(&src[c * plane..(c + 1) * plane])
                    {
                        *o = lut[usize::from(b)];
                    }
                }
            }
            SampleRef::F32(values) => {
                let src: &[f32] = match aug {
                    Some(a) => {
                        let scratch = &mut self.scratch_f32[..len];
                        a.apply(shape, values, scratch);
                        scratch
                    }
                    None => values,
                };
                let (mean, std) = (self.normalizer.mean(), self.normalizer.std());
                for c in 0..shape.channels {
                    let (m, s) = (mean[c], std[c]);
                    for (o, &v) in out[c * plane..(c + 1) * plane]
                        .iter_mut()
                        .zip(&src[c * plane..(c + 1) * plane])
                    {
                        *o = (v - m) / s;
                    }
                }
            }
        }
        self.labels.push(data.label(i));
    }

    fn view(&self, n: usize) -> Batch<'_> {
        let s = self.shape;
        let images = ArrayView4::from_shape(
            (n, s.channels, s.height, s.width),
            &self.images[..n * s.sample_len()],
        )
        .expect("buffer holds n samples");
        Batch {
            images,
            labels: &self.labels[..n],
        }
    }
}
