//! Per-channel normalisation of `u8` pixels and `f32` values, for any
//! number of channels.

use super::dataset::{Dataset, Samples};
use crate::{Error, Result};

/// Per-channel normalisation.
///
/// A byte `b` of channel `c` (a `u8` dataset) becomes `(b / 255 - mean[c])
/// / std[c]` (the convention of torchvision's `ToTensor()` followed by
/// `Normalize(mean, std)`: statistics in units of the `[0, 1]` pixel range);
/// an `f32` value `v` becomes `(v - mean[c]) / std[c]` (statistics in the
/// units of the values).
///
/// ```
/// use ringsgd::data::Normalizer;
/// let n = Normalizer::new(vec![0.5; 3], vec![0.25; 3])?;
/// assert_eq!(n.normalize(0, 255), 2.0);
/// assert_eq!(n.normalize(2, 0), -2.0);
/// assert_eq!(n.normalize_f32(1, 1.0), 2.0);
/// assert_eq!(Normalizer::identity(1).channels(), 1);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Normalizer {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Normalizer {
    /// The usual CIFAR-10 training-set statistics (mean 0.4914, 0.4822,
    /// 0.4465; std 0.2470, 0.2435, 0.2616), for when the data is not at hand.
    pub fn cifar10() -> Normalizer {
        Normalizer {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// A normaliser with the given statistics (one value per channel);
    /// errors unless both have the same, non-zero length, every value is
    /// finite and every `std` positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(Error::invalid(format!(
                "normaliser needs one mean and one std per channel, got {} means and {} stds",
                mean.len(),
                std.len()
            )));
        }
        for c in 0..mean.len() {
            if !mean[c].is_finite() {
                return Err(Error::invalid(format!(
                    "normaliser mean of channel {c} is {}, not finite",
                    mean[c]
                )));
            }
            if !(std[c].is_finite() && std[c] > 0.0) {
                return Err(Error::invalid(format!(
                    "normaliser std of channel {c} is {}, must be finite and positive",
                    std[c]
                )));
            }
        }
        Ok(Normalizer { mean, std })
    }

    /// Mean 0 and std 1 for each of `channels` channels: bytes scaled to
    /// `[0, 1]` only, `f32` values unchanged.
    pub fn identity(channels: usize) -> Self {
        Normalizer {
            mean: vec![0.0; channels.max(1)],
            std: vec![1.0; channels.max(1)],
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Channel means.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Channel standard deviations.
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// Mean and (population) standard deviation of each channel over all
    /// values of `data` (for `u8` data in units of the `[0, 1]` range).
    ///
    /// For `u8` data the sums are exact integers (u64) converted to f64
    /// once; for `f32` data they are f64 sums in storage order. Either way
    /// the result does not depend on thread count or platform. Errors if
    /// `data` is empty or a channel is constant (std 0).
    pub fn from_dataset(data: &Dataset) -> Result<Self> {
        if data.is_empty() {
            return Err(Error::invalid(
                "cannot compute normalisation statistics of an empty dataset",
            ));
        }
        let shape = data.shape();
        let (channels, plane) = (shape.channels, shape.plane());
        let count = (data.len() * plane) as f64;
        let (mean, std): (Vec<f32>, Vec<f32>) = match data.samples() {
            Samples::U8(pixels) => {
                let mut sum = vec![0u64; channels];
                let mut sum_sq = vec![0u64; channels];
                for img in pixels.chunks_exact(shape.sample_len()) {
                    for c in 0..channels {
                        let (mut s, mut q) = (0u64, 0u64);
                        for &b in &img[c * plane..(c + 1) * plane] {
                            let v = u64::from(b);
                            s += v;
                            q += v * v;
                        }
                        sum[c] += s;
                        sum_sq[c] += q;
                    }
                }
                (0..channels)
                    .map(|c| {
                        let m = sum[c] as f64 / count;
                        let var = (sum_sq[c] as f64 / count - m * m).max(0.0);
                        ((m / 255.0) as f32, (var.sqrt() / 255.0) as f32)
                    })
                    .unzip()
            }
            Samples::F32(values) => {
                // Two passes (mean, then squared deviations): exact enough
                // for values far from 0, unlike E[x^2] - E[x]^2.
                let mut sum = vec![0f64; channels];
                for s in values.chunks_exact(shape.sample_len()) {
                    for c in 0..channels {
                        sum[c] += s[c * plane..(c + 1) * plane]
                            .iter()
                            .map(|&v| f64::from(v))
                            .sum::<f64>();
                    }
                }
                let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
                let mut dev = vec![0f64; channels];
                for s in values.chunks_exact(shape.sample_len()) {
                    for c in 0..channels {
                        dev[c] += s[c * plane..(c + 1) * plane]
                            .iter()
                            .map(|&v| (f64::from(v) - mean[c]).powi(2))
                            .sum::<f64>();
                    }
                }
                (
                    mean.iter().map(|&m| m as f32).collect(),
                    dev.iter().map(|d| (d / count).sqrt() as f32).collect(),
                )
            }
        };
        if let Some(c) = std.iter().position(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(Error::invalid(format!(
                "channel {c} of the dataset is constant (std {std:?}): cannot normalise"
            )));
        }
        Normalizer::new(mean, std)
    }

    /// The normalised value of byte `b` in channel `c`.
    ///
    /// # Panics
    /// If `c >= self.channels()`.
    pub fn normalize(&self, c: usize, b: u8) -> f32 {
        (f32::from(b) / 255.0 - self.mean[c]) / self.std[c]
    }

    /// The normalised value of `f32` value `v` in channel `c`.
    ///
    /// # Panics
    /// If `c >= self.channels()`.
    pub fn normalize_f32(&self, c: usize, v: f32) -> f32 {
        (v - self.mean[c]) / self.std[c]
    }

    /// The normalised value of every byte for every channel: `lut[c][b] ==
    /// self.normalize(c, b)`. Normalising through the table costs one load
    /// per pixel.
    pub fn lookup_table(&self) -> Vec<[f32; 256]> {
        let mut lut = vec![[0f32; 256]; self.channels()];
        for (c, row) in lut.iter_mut().enumerate() {
            for (b, v) in row.iter_mut().enumerate() {
                *v = self.normalize(c, b as u8);
            }
        }
        lut
    }
}
