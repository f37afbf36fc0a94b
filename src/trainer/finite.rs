//! The check that stops a diverging run before its first bad update.
//!
//! After the allreduce every rank holds the same averaged gradient, bit for
//! bit, so a finiteness check of it gives the same answer on every rank:
//! all ranks stop at the same step without exchanging anything. A rank
//! whose own loss is not finite poisons its gradient before the allreduce
//! (NaN propagates through the sum), so that case reaches every rank too.
//!
//! Cost: one read of the gradient per step (PiNet: 1,116,970 floats, 4.5
//! MB, just written by the allreduce), next to the 1.1 GFLOP x batch of
//! the step's forward and backward; the loop is a vectorised maximum over
//! the bit patterns.

/// Whether every value is finite (neither infinite nor NaN).
///
/// The absolute value's bit pattern is at least `0x7f80_0000` exactly for
/// the infinities and NaNs; a maximum over `u32`s vectorises, and the scan
/// stops at the first chunk that holds one.
pub(crate) fn all_finite(values: &[f32]) -> bool {
    const NON_FINITE: u32 = 0x7f80_0000;
    values
        .chunks(4096)
        .all(|c| c.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff)) < NON_FINITE)
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn sees_every_kind_of_non_finite_value_anywhere() {
        let mut v = vec![1.0f32; 10_000];
        assert!(all_finite(&v));
        assert!(all_finite(&[]));
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 4095, 4096, 9_999] {
                v[at] = bad;
                assert!(!all_finite(&v), "{bad} at {at}");
                v[at] = 1.0;
            }
        }
        v[5] = f32::MAX;
        v[6] = -f32::MAX;
        v[7] = f32::MIN_POSITIVE / 2.0;
        assert!(all_finite(&v));
    }
}
