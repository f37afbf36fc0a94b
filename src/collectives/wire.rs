//! How gradient values travel between ranks: `f32`, or 16 bits (`bf16`,
//! `fp16`) with every partial sum formed in `f32`.

use std::fmt;
use std::str::FromStr;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::{Error, Result};

/// The number format of values on the wire during a ring allreduce.
///
/// With a 16-bit format each rank rounds what it sends to 16 bits and adds
/// what it receives into `f32`, so only the values in flight lose
/// precision (each partial sum is rounded once per hop), and the bytes on
/// the wire halve. The final sum is rounded once more and every rank,
/// including the one that formed it, keeps the rounded value, so replicas
/// stay identical. Spelled `f32`, `bf16`, `fp16`.
///
/// ```
/// use ringsgd::collectives::Wire;
///
/// let w: Wire = "bf16".parse()?;
/// assert_eq!(w.bytes_per_value(), 2);
/// assert_eq!(Wire::F32.to_string(), "f32");
/// assert!("int8".parse::<Wire>().is_err());
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Wire {
    /// Exact: 4 bytes per value.
    #[default]
    F32,
    /// bfloat16: `f32`'s range, 8 bits of mantissa; rounded to nearest even.
    Bf16,
    /// IEEE half precision: 11 bits of mantissa, range up to 65504 (larger
    /// values become infinite, which the trainer's finite check catches).
    Fp16,
}

impl Wire {
    /// Every format, in the order reports list them.
    pub const ALL: [Wire; 3] = [Wire::F32, Wire::Bf16, Wire::Fp16];

    /// The name used by [`Display`](fmt::Display) and [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Wire::F32 => "f32",
            Wire::Bf16 => "bf16",
            Wire::Fp16 => "fp16",
        }
    }

    /// Bytes one value takes on the wire.
    pub fn bytes_per_value(self) -> usize {
        match self {
            Wire::F32 => 4,
            Wire::Bf16 | Wire::Fp16 => 2,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Wire::F32 => 1,
            Wire::Bf16 => 2,
            Wire::Fp16 => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Wire> {
        Wire::ALL.into_iter().find(|w| w.code() == code)
    }

    /// `dst` (wire bytes) = `src` in this format.
    pub(crate) fn encode(self, src: &[f32], dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), src.len() * self.bytes_per_value());
        match self {
            Wire::F32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
            Wire::Bf16 => as_bf16_mut(dst).convert_from_f32_slice(src),
            Wire::Fp16 => as_f16_mut(dst).convert_from_f32_slice(src),
        }
    }

    /// `dst` = the values of `src` (wire bytes) as `f32`.
    pub(crate) fn decode(self, src: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len() * self.bytes_per_value());
        match self {
            Wire::F32 => copy_f32(src, dst),
            Wire::Bf16 => as_bf16(src).convert_to_f32_slice(dst),
            Wire::Fp16 => as_f16(src).convert_to_f32_slice(dst),
        }
    }

    /// Hands `incoming` (wire bytes of `n` values) to `f(offset, values)` as
    /// `f32`: all at once when it can be read in place (aligned f32), else
    /// decoded a block at a time into a stack buffer (the slice conversions
    /// use the CPU's conversion instructions where it has them).
    fn for_decoded(self, incoming: &[u8], mut f: impl FnMut(usize, &[f32])) {
        if self == Wire::F32 {
            if let Ok(v) = bytemuck::try_cast_slice::<u8, f32>(incoming) {
                return f(0, v);
            }
        }
        const BLOCK: usize = 1024;
        let mut tmp = [0.0f32; BLOCK];
        let es = self.bytes_per_value();
        for (i, inc) in incoming.chunks(BLOCK * es).enumerate() {
            let t = &mut tmp[..inc.len() / es];
            self.decode(inc, t);
            f(i * BLOCK, t);
        }
    }

    /// `dst[i] = own[i] + incoming[i]`, `incoming` in wire bytes, the sum in
    /// `f32` (local value first; `+` is commutative, so only the ring's
    /// grouping decides the result).
    pub(crate) fn add(self, own: &[f32], incoming: &[u8], dst: &mut [f32]) {
        debug_assert_eq!(own.len(), dst.len());
        debug_assert_eq!(incoming.len(), dst.len() * self.bytes_per_value());
        self.for_decoded(incoming, |off, inc| {
            let (d, o) = (&mut dst[off..off + inc.len()], &own[off..off + inc.len()]);
            for ((d, &a), &b) in d.iter_mut().zip(o).zip(inc) {
                *d = a + b;
            }
        });
    }

    /// `acc[i] += incoming[i]` (`incoming` in wire bytes), in `f32`.
    pub(crate) fn add_in_place(self, acc: &mut [f32], incoming: &[u8]) {
        debug_assert_eq!(incoming.len(), acc.len() * self.bytes_per_value());
        self.for_decoded(incoming, |off, inc| {
            for (a, &b) in acc[off..off + inc.len()].iter_mut().zip(inc) {
                *a += b;
            }
        });
    }

    /// `dst` (wire bytes) = `own + incoming` rounded to this format: a
    /// partial sum passed on to the next rank.
    pub(crate) fn add_encode(self, own: &[f32], incoming: &[u8], dst: &mut [u8]) {
        if self == Wire::F32 {
            if let Ok(d) = bytemuck::try_cast_slice_mut::<u8, f32>(dst) {
                return self.add(own, incoming, d);
            }
        }
        const BLOCK: usize = 1024;
        let mut sum = [0.0f32; BLOCK];
        let es = self.bytes_per_value();
        self.for_decoded(incoming, |off, inc| {
            for (k, (o, i)) in own[off..off + inc.len()]
                .chunks(BLOCK)
                .zip(inc.chunks(BLOCK))
                .enumerate()
            {
                let t = &mut sum[..o.len()];
                for ((t, &a), &b) in t.iter_mut().zip(o).zip(i) {
                    *t = a + b;
                }
                let at = (off + k * BLOCK) * es;
                self.encode(t, &mut dst[at..at + t.len() * es]);
            }
        });
    }
}

fn copy_f32(src: &[u8], dst: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, f32>(src) {
        Ok(s) => dst.copy_from_slice(s),
        Err(_) => {
            for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}

// Wire buffers of 16-bit formats are carved from `u32` words at even byte
// offsets, so they are always 2-byte aligned.
fn as_bf16(b: &[u8]) -> &[bf16] {
    bytemuck::cast_slice(b)
}
fn as_bf16_mut(b: &mut [u8]) -> &mut [bf16] {
    bytemuck::cast_slice_mut(b)
}
fn as_f16(b: &[u8]) -> &[f16] {
    bytemuck::cast_slice(b)
}
fn as_f16_mut(b: &mut [u8]) -> &mut [f16] {
    bytemuck::cast_slice_mut(b)
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Wire {
    type Err = Error;

    fn from_str(s: &str) -> Result<Wire> {
        Wire::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown wire format {s:?}: expected one of f32, bf16, fp16"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n_bytes: usize) -> Vec<u32> {
        vec![0; n_bytes.div_ceil(4)]
    }

    #[test]
    fn names_round_trip() {
        for w in Wire::ALL {
            assert_eq!(w.to_string().parse::<Wire>().unwrap(), w);
            assert_eq!(Wire::from_code(w.code()), Some(w));
        }
    }

    #[test]
    fn f32_is_exact_and_16_bit_rounds_to_nearest() {
        let x = [1.0f32, -2.5, 3.0e-3, 1.0 + 1.0 / 256.0 + 1.0 / 512.0, 7.0e4];
        for w in Wire::ALL {
            let mut buf = words(x.len() * 4);
            let bytes =
                &mut bytemuck::cast_slice_mut::<u32, u8>(&mut buf)[..x.len() * w.bytes_per_value()];
            w.encode(&x, bytes);
            let mut back = [0.0f32; 5];
            w.decode(bytes, &mut back);
            match w {
                Wire::F32 => assert_eq!(back, x),
                Wire::Bf16 => {
                    assert_eq!(back[0], 1.0);
                    assert_eq!(back[1], -2.5);
                    // 1 + 2^-8 + 2^-9 lies above the midpoint of bf16's
                    // 2^-7 spacing at 1: rounds up to 1 + 2^-7.
                    assert_eq!(back[3], 1.0 + 1.0 / 128.0);
                    assert!((back[2] - 3.0e-3).abs() < 3.0e-3 / 128.0);
                }
                Wire::Fp16 => {
                    assert_eq!(back[3], 1.0 + 1.0 / 256.0 + 1.0 / 512.0);
                    assert!(back[4].is_infinite(), "7e4 is beyond fp16's range");
                }
            }
        }
    }

    #[test]
    fn add_sums_in_f32_and_add_encode_rounds_once() {
        let own: Vec<f32> = (0..3000).map(|i| i as f32 * 0.25).collect();
        let inc: Vec<f32> = (0..3000).map(|i| 1.0 + i as f32).collect();
        for w in Wire::ALL {
            let mut ib = words(inc.len() * 4);
            let ib = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut ib)
                [..inc.len() * w.bytes_per_value()];
            w.encode(&inc, ib);
            let mut dec = vec![0.0f32; inc.len()];
            w.decode(ib, &mut dec);
            let mut sum = vec![0.0f32; inc.len()];
            w.add(&own, ib, &mut sum);
            for i in 0..own.len() {
                assert_eq!(sum[i], own[i] + dec[i], "{w} at {i}");
            }
            let mut acc = own.clone();
            w.add_in_place(&mut acc, ib);
            assert_eq!(acc, sum, "{w}: in place");
            let mut ob = words(inc.len() * 4);
            let ob = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut ob)
                [..inc.len() * w.bytes_per_value()];
            w.add_encode(&own, ib, ob);
            let mut enc = words(inc.len() * 4);
            let enc = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut enc)
                [..inc.len() * w.bytes_per_value()];
            w.encode(&sum, enc);
            assert_eq!(ob, enc, "{w}");
        }
    }
}
