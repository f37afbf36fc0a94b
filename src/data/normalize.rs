//! Per-channel normalisation of u8 pixels.

use super::dataset::{Dataset, CHANNELS, HEIGHT, WIDTH};
use crate::{Error, Result};

/// Per-channel normalisation: a pixel byte `b` of channel `c` becomes
/// `(b / 255 - mean[c]) / std[c]` (the convention of torchvision's
/// `ToTensor()` followed by `Normalize(mean, std)`).
///
/// ```
/// use ringsgd::data::Normalizer;
/// let n = Normalizer::new([0.5; 3], [0.25; 3])?;
/// assert_eq!(n.normalize(0, 255), 2.0);
/// assert_eq!(n.normalize(2, 0), -2.0);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalizer {
    /// Channel means, in units of the [0, 1] pixel range.
    pub mean: [f32; CHANNELS],
    /// Channel standard deviations, in units of the [0, 1] pixel range.
    pub std: [f32; CHANNELS],
}

impl Normalizer {
    /// The usual CIFAR-10 training-set statistics (mean 0.4914, 0.4822,
    /// 0.4465; std 0.2470, 0.2435, 0.2616), for when the data is not at hand.
    pub const CIFAR10: Normalizer = Normalizer {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };

    /// A normaliser with the given statistics; errors unless every value is
    /// finite and every `std` positive.
    pub fn new(mean: [f32; CHANNELS], std: [f32; CHANNELS]) -> Result<Self> {
        for c in 0..CHANNELS {
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

    /// Pixels scaled to [0, 1] only (mean 0, std 1).
    pub fn identity() -> Self {
        Normalizer {
            mean: [0.0; CHANNELS],
            std: [1.0; CHANNELS],
        }
    }

    /// Mean and (population) standard deviation of each channel over all
    /// pixels of `data`.
    ///
    /// Sums are exact integers (u64) converted to f64 once, so the result
    /// does not depend on summation order, thread count or platform.
    /// Errors if `data` is empty or a channel is constant (std 0).
    pub fn from_dataset(data: &Dataset) -> Result<Self> {
        if data.is_empty() {
            return Err(Error::invalid(
                "cannot compute normalisation statistics of an empty dataset",
            ));
        }
        let plane = HEIGHT * WIDTH;
        let mut sum = [0u64; CHANNELS];
        let mut sum_sq = [0u64; CHANNELS];
        for img in data.pixels().chunks_exact(CHANNELS * plane) {
            for c in 0..CHANNELS {
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
        let count = (data.len() * plane) as f64;
        let mut mean = [0f32; CHANNELS];
        let mut std = [0f32; CHANNELS];
        for c in 0..CHANNELS {
            let m = sum[c] as f64 / count;
            let var = (sum_sq[c] as f64 / count - m * m).max(0.0);
            mean[c] = (m / 255.0) as f32;
            std[c] = (var.sqrt() / 255.0) as f32;
        }
        Normalizer::new(mean, std).map_err(|_| {
            Error::invalid(format!(
                "a channel of the dataset is constant (std {std:?}): cannot normalise"
            ))
        })
    }

    /// The normalised value of byte `b` in channel `c` (`c < 3`).
    pub fn normalize(&self, c: usize, b: u8) -> f32 {
        (f32::from(b) / 255.0 - self.mean[c]) / self.std[c]
    }

    /// The normalised value of every byte for every channel: `lut[c][b] ==
    /// self.normalize(c, b)`. Normalising through the table costs one load
    /// per pixel.
    pub fn lookup_table(&self) -> [[f32; 256]; CHANNELS] {
        let mut lut = [[0f32; 256]; CHANNELS];
        for (c, row) in lut.iter_mut().enumerate() {
            for (b, v) in row.iter_mut().enumerate() {
                *v = self.normalize(c, b as u8);
            }
        }
        lut
    }
}
