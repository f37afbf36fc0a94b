//! Counter-based random streams for the data pipeline.
//!
//! Every random choice in [`crate::data`] is a pure function of
//! `(seed, purpose, counter, stream)`: a [`ChaCha8Rng`] keyed with those
//! values laid out little-endian (`seed`, purpose tag, counter, and the
//! constant `b"RINGSGD1"`, 8 bytes each) and set to ChaCha stream `stream`.
//! ChaCha is a pseudo-random function of its key and stream, so distinct
//! inputs give independent streams, and any rank or thread can jump straight
//! to the stream it needs without generating the ones before it. Bounded
//! integers use Lemire's multiply-and-reject on `next_u64`, written here so
//! that the sequences do not change with the `rand` version.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Purpose tag of the per-epoch training-set permutation.
pub(crate) const PERMUTATION: u64 = u64::from_le_bytes(*b"permute\0");
/// Purpose tag of the per-sample augmentation draws.
pub(crate) const AUGMENT: u64 = u64::from_le_bytes(*b"augment\0");
/// Purpose tag of synthetic data generation.
pub(crate) const SYNTHETIC: u64 = u64::from_le_bytes(*b"synthet\0");

/// The generator for `(seed, purpose, counter)` positioned at the start of
/// ChaCha stream `stream`.
pub(crate) fn stream_rng(seed: u64, purpose: u64, counter: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&purpose.to_le_bytes());
    key[16..24].copy_from_slice(&counter.to_le_bytes());
    key[24..32].copy_from_slice(b"RINGSGD1");
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// A uniform integer in `0..bound` (Lemire's method, unbiased).
///
/// `bound` must be at least 1.
pub(crate) fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    assert!(bound > 0, "below() needs a positive bound");
    let mut m = u128::from(rng.next_u64()) * u128::from(bound);
    if (m as u64) < bound {
        let threshold = bound.wrapping_neg() % bound;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(bound);
        }
    }
    (m >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = stream_rng(1, AUGMENT, 0, 0);
        let mut seen = [0usize; 9];
        for _ in 0..9000 {
            let v = below(&mut rng, 9) as usize;
            seen[v] += 1;
        }
        // Each value expected 1000 times; 6 sigma is about 190.
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(below(&mut rng, 1), 0);
    }

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = {
            let mut r = stream_rng(5, PERMUTATION, 2, 7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = stream_rng(5, PERMUTATION, 2, 7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = stream_rng(5, PERMUTATION, 2, 8);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let d: Vec<u64> = {
            let mut r = stream_rng(5, AUGMENT, 2, 7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
