//! Seeded, counter-based data augmentation: random crop with zero padding
//! and horizontal flip.
//!
//! The augmentation of a sample is a pure function of `(seed, epoch,
//! position)`, where `position` is the sample's place in the epoch
//! permutation ([`epoch_permutation`](crate::data::epoch_permutation)). It
//! does not depend on which rank or thread processes the sample, nor on how
//! a global batch is split: rank `r` of `p` applies to its shard exactly
//! what a 1-rank run applies to the same samples.

use rand_chacha::rand_core::Rng;

use super::dataset::Shape;
use super::rng::{below, stream_rng, AUGMENT};
use crate::{Error, Result};

/// Largest supported crop padding.
pub const MAX_PAD: usize = 16;

/// The augmentation policy: a random `H x W` crop of the `H x W` sample
/// zero-padded by `pad` values on each side, then (if `hflip`) a horizontal
/// flip with probability 1/2, for samples of any [`Shape`] (the same crop
/// and flip for every channel). Like torchvision's `RandomCrop((H, W),
/// padding=pad)` then `RandomHorizontalFlip()` on the raw image: padding
/// pixels are black (byte 0, or `0.0` for `f32` data) *before*
/// normalisation.
///
/// Flips suit photographs (CIFAR) but not digits or text, whose mirror
/// image is another symbol: use [`Augmentation::crop`] for those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augmentation {
    /// Zero padding on each side before the crop (0 disables cropping).
    pub pad: usize,
    /// Whether to flip horizontally with probability 1/2.
    pub hflip: bool,
}

impl Default for Augmentation {
    fn default() -> Self {
        Augmentation::standard()
    }
}

impl Augmentation {
    /// The standard CIFAR-10 policy: padding 4 and horizontal flips.
    pub fn standard() -> Self {
        Augmentation {
            pad: 4,
            hflip: true,
        }
    }

    /// Random crops with padding `pad` and no flip (for digits, where a
    /// mirrored 2 is not a 2).
    pub fn crop(pad: usize) -> Self {
        Augmentation { pad, hflip: false }
    }

    /// Errors unless `pad <= MAX_PAD`.
    pub fn validate(&self) -> Result<()> {
        if self.pad > MAX_PAD {
            return Err(Error::invalid(format!(
                "augmentation padding {} exceeds the maximum {MAX_PAD}",
                self.pad
            )));
        }
        Ok(())
    }

    /// The crop and flip of the sample at `position` of the permutation of
    /// `epoch` for `seed`.
    ///
    /// Draws, in this order, from ChaCha8 keyed by `(seed, "augment", epoch)`
    /// on stream `position`: the crop row offset and the crop column offset
    /// (each uniform in `0..=2*pad`), then one `u32` whose low bit decides
    /// the flip (only drawn when `hflip`).
    ///
    /// ```
    /// use ringsgd::data::Augmentation;
    /// let aug = Augmentation::standard();
    /// let a = aug.sample(1, 0, 17);
    /// assert_eq!(a, aug.sample(1, 0, 17));
    /// assert!(a.offset_y <= 8 && a.offset_x <= 8);
    /// ```
    pub fn sample(&self, seed: u64, epoch: u64, position: usize) -> SampleAugment {
        let mut rng = stream_rng(seed, AUGMENT, epoch, position as u64);
        let span = 2 * self.pad as u64 + 1;
        let offset_y = below(&mut rng, span) as usize;
        let offset_x = below(&mut rng, span) as usize;
        let flip = self.hflip && rng.next_u32() & 1 == 1;
        SampleAugment {
            pad: self.pad,
            offset_y,
            offset_x,
            flip,
        }
    }
}

/// The augmentation drawn for one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleAugment {
    /// Padding of the policy it was drawn from.
    pub pad: usize,
    /// Row of the crop origin in the padded image (`0..=2*pad`; `pad` means
    /// no vertical shift).
    pub offset_y: usize,
    /// Column of the crop origin in the padded image (`0..=2*pad`).
    pub offset_x: usize,
    /// Whether the crop is then flipped left to right.
    pub flip: bool,
}

impl SampleAugment {
    /// No change (crop at the centre, no flip).
    pub fn identity() -> Self {
        SampleAugment {
            pad: 0,
            offset_y: 0,
            offset_x: 0,
            flip: false,
        }
    }

    /// Writes the augmented CHW sample of `shape` (`u8` pixels or `f32`
    /// values): `out[c][y][x] = image[c][y + oy - pad][x' + ox - pad]` with
    /// `x' = W - 1 - x` when flipped and `x` otherwise, and 0 where that
    /// falls outside the image.
    ///
    /// # Panics
    /// If `image` or `out` is not `shape.sample_len()` long.
    pub fn apply<T: Copy + Default>(&self, shape: Shape, image: &[T], out: &mut [T]) {
        let len = shape.sample_len();
        assert_eq!(image.len(), len, "image must be {shape}");
        assert_eq!(out.len(), len, "output must be {shape}");
        let (height, width) = (shape.height, shape.width);
        let shift_y = self.offset_y as isize - self.pad as isize;
        let shift_x = self.offset_x as isize - self.pad as isize;
        let plane = shape.plane();
        for c in 0..shape.channels {
            let src = &image[c * plane..(c + 1) * plane];
            let dst = &mut out[c * plane..(c + 1) * plane];
            for (y, row) in dst.chunks_exact_mut(width).enumerate() {
                let sy = y as isize + shift_y;
                if !(0..height as isize).contains(&sy) {
                    row.fill(T::default());
                    continue;
                }
                let src_row = &src[sy as usize * width..(sy as usize + 1) * width];
                for (x, v) in row.iter_mut().enumerate() {
                    let cx = if self.flip { width - 1 - x } else { x };
                    let sx = cx as isize + shift_x;
                    *v = if (0..width as isize).contains(&sx) {
                        src_row[sx as usize]
                    } else {
                        T::default()
                    };
                }
            }
        }
    }
}
