//! Direct convolution microkernel (stride 1): an `MR x 16` tile of
//! output channels x consecutive output pixels, read straight from a
//! zero-padded input with a per-`k` offset table, so neither an im2col matrix
//! nor a packed copy of it is ever written.
//!
//! ```text
//! tile[i][j] = sum_k a[k*MR + i] * xp[base + offs[k] + j]     (k in order)
//! ```
//!
//! `a` is a packed panel of weights (`MR` output channels per `k`), `offs[k]`
//! the offset of tap `k = (c, ky, kx)` in the padded input and `base` that of
//! the tile's first pixel. Each element is accumulated on its own in `k`
//! order, so results do not depend on tiling.

use super::microkernel::MAX_TILE;

/// Pixels per tile.
pub(crate) const NP: usize = 16;

/// A tap offset table with its maximum, checked once when built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offsets<'a> {
    v: &'a [u32],
    max: usize,
}

impl<'a> Offsets<'a> {
    /// Wraps `v`, recording its largest entry.
    pub(crate) fn new(v: &'a [u32]) -> Self {
        Offsets {
            v,
            max: v.iter().copied().max().unwrap_or(0) as usize,
        }
    }
}

/// `tile = a~ · X` for one `MR x 16` tile; see the module docs. `MR` is 4 or 6.
#[inline]
pub(crate) fn tile<const MR: usize>(
    a: &[f32],
    xp: &[f32],
    base: usize,
    offs: Offsets<'_>,
    out: &mut [f32; MAX_TILE],
) {
    let kc = offs.v.len();
    assert!(MR * NP <= MAX_TILE && a.len() >= kc * MR);
    assert!(
        kc == 0 || base + offs.max + NP <= xp.len(),
        "tile reads past the input"
    );
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = super::microkernel::Avx2Fma::detect() {
        return x86::tile::<MR>(k, kc, a, xp, base, offs.v, out);
    }
    portable::<MR>(kc, a, &xp[base..], offs.v, out)
}

fn portable<const MR: usize>(
    kc: usize,
    a: &[f32],
    xb: &[f32],
    offs: &[u32],
    out: &mut [f32; MAX_TILE],
) {
    let mut acc = [[0f32; NP]; MR];
    for (ak, &o) in a[..kc * MR].chunks_exact(MR).zip(offs) {
        let xr: &[f32; NP] = xb[o as usize..o as usize + NP].try_into().unwrap();
        for i in 0..MR {
            for j in 0..NP {
                #[cfg(target_arch = "aarch64")]
                {
                    acc[i][j] = ak[i].mul_add(xr[j], acc[i][j]);
                }
                #[cfg(not(target_arch = "aarch64"))]
                {
                    acc[i][j] += ak[i] * xr[j];
                }
            }
        }
    }
    for i in 0..MR {
        out[i * NP..(i + 1) * NP].copy_from_slice(&acc[i]);
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{MAX_TILE, NP};
    use crate::kernels::microkernel::Avx2Fma;
    use std::arch::x86_64::*;

    /// Safe entry: the caller checked `a.len() >= kc*MR` and
    /// `base + max(offs) + 16 <= xp.len()`; `_k` proves AVX2+FMA.
    #[inline]
    pub(super) fn tile<const MR: usize>(
        _k: Avx2Fma,
        kc: usize,
        a: &[f32],
        xp: &[f32],
        base: usize,
        offs: &[u32],
        out: &mut [f32; MAX_TILE],
    ) {
        // SAFETY: AVX2 and FMA are present (an `Avx2Fma` exists only after
        // detection). Reads: a[..kc*MR] and, for each k < kc,
        // xp[base + offs[k] .. + 16], all in bounds by the caller's checks
        // (offs has kc entries). Writes: out[..MR*16] <= MAX_TILE.
        unsafe {
            tile_avx2::<MR>(
                kc,
                a.as_ptr(),
                xp.as_ptr().add(base),
                offs.as_ptr(),
                out.as_mut_ptr(),
            )
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_avx2<const MR: usize>(
        kc: usize,
        a: *const f32,
        xb: *const f32,
        offs: *const u32,
        out: *mut f32,
    ) {
        let mut c = [[_mm256_setzero_ps(); 2]; MR];
        for k in 0..kc {
            // SAFETY: k < kc; see `tile`.
            unsafe {
                let p = xb.add(*offs.add(k) as usize);
                let b0 = _mm256_loadu_ps(p);
                let b1 = _mm256_loadu_ps(p.add(8));
                let ak = a.add(k * MR);
                for (i, ci) in c.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*ak.add(i));
                    ci[0] = _mm256_fmadd_ps(ai, b0, ci[0]);
                    ci[1] = _mm256_fmadd_ps(ai, b1, ci[1]);
                }
            }
        }
        for (i, ci) in c.iter().enumerate() {
            // SAFETY: i*16+15 < MR*16 <= MAX_TILE.
            unsafe {
                _mm256_storeu_ps(out.add(i * NP), ci[0]);
                _mm256_storeu_ps(out.add(i * NP + 8), ci[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<const MR: usize>() {
        let xp: Vec<f32> = (0..200).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let offs: Vec<u32> = vec![0, 3, 17, 40, 41, 100];
        let kc = offs.len();
        let a: Vec<f32> = (0..kc * MR)
            .map(|i| ((i * 5) % 7) as f32 * 0.5 - 1.0)
            .collect();
        let mut out = [f32::NAN; MAX_TILE];
        tile::<MR>(&a, &xp, 9, Offsets::new(&offs), &mut out);
        let mut por = [f32::NAN; MAX_TILE];
        portable::<MR>(kc, &a, &xp[9..], &offs, &mut por);
        for i in 0..MR {
            for j in 0..NP {
                let want: f32 = (0..kc)
                    .map(|k| a[k * MR + i] * xp[9 + offs[k] as usize + j])
                    .sum();
                assert!((out[i * NP + j] - want).abs() < 1e-4);
                assert!((por[i * NP + j] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn direct_tile_matches_definition() {
        check::<4>();
        check::<6>();
    }

    #[test]
    #[should_panic(expected = "past the input")]
    fn out_of_bounds_offsets_panic() {
        let xp = vec![0f32; 20];
        let mut out = [0f32; MAX_TILE];
        tile::<4>(&[0.0; 4], &xp, 0, Offsets::new(&[5]), &mut out);
    }
}

/// Strides of a weight-gradient tile's operands over `nimg` images.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DwDims {
    /// Images reduced over.
    pub nimg: usize,
    /// `dy` floats between two output channels (`oh * ow`).
    pub dys: usize,
    /// `dy` floats between two images.
    pub dy_img: usize,
    /// Padded-input floats between two images.
    pub x_img: usize,
    /// Output rows.
    pub oh: usize,
    /// Output columns (a multiple of 8).
    pub ow: usize,
    /// Padded input row length (`>= ow + 2`).
    pub wp: usize,
}

/// Weight-gradient tile of a stride-1 convolution with 3-wide kernels: for
/// 4 output channels `i` and the 3 taps `kx` of one input row (`xoff`),
/// summed over `nimg` images `n`:
///
/// ```text
/// out[i*3 + kx] = sum_{n, oy < oh, ox < ow} dy[n*dy_img + i*dys + oy*ow + ox]
///                                          * xp[n*x_img + xoff + oy*wp + ox + kx]
/// ```
///
/// vectorised over 8 pixels (`ow % 8 == 0`), lane sums added at the end in a
/// fixed order.
pub(crate) fn dw_tile_4x3(dy: &[f32], xp: &[f32], xoff: usize, d: DwDims, out: &mut [f32; 12]) {
    assert!(
        d.ow % 8 == 0 && d.oh > 0 && d.ow > 0 && d.nimg > 0,
        "dw_tile_4x3 needs ow % 8 == 0"
    );
    let last = d.nimg - 1;
    assert!(
        last * d.dy_img + 3 * d.dys + d.oh * d.ow <= dy.len(),
        "dy too short"
    );
    assert!(
        last * d.x_img + xoff + (d.oh - 1) * d.wp + d.ow + 2 <= xp.len() && d.wp >= d.ow + 2,
        "input too short"
    );
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = super::microkernel::Avx2Fma::detect() {
        return x86_dw::dw_4x3(k, dy, xp, xoff, d, out);
    }
    dw_portable(dy, &xp[xoff..], d, out)
}

fn dw_portable(dy: &[f32], xb: &[f32], d: DwDims, out: &mut [f32; 12]) {
    let mut acc = [[[0f32; 8]; 3]; 4];
    let DwDims {
        oh, ow, wp, dys, ..
    } = d;
    for n in 0..d.nimg {
        let (dy, xb) = (&dy[n * d.dy_img..], &xb[n * d.x_img..]);
        for oy in 0..oh {
            for ox in (0..ow).step_by(8) {
                for (i, ai) in acc.iter_mut().enumerate() {
                    let dv = &dy[i * dys + oy * ow + ox..][..8];
                    for (kx, a) in ai.iter_mut().enumerate() {
                        let x = &xb[oy * wp + ox + kx..][..8];
                        for l in 0..8 {
                            #[cfg(target_arch = "aarch64")]
                            {
                                a[l] = dv[l].mul_add(x[l], a[l]);
                            }
                            #[cfg(not(target_arch = "aarch64"))]
                            {
                                a[l] += dv[l] * x[l];
                            }
                        }
                    }
                }
            }
        }
    }
    for i in 0..4 {
        for kx in 0..3 {
            out[i * 3 + kx] = hsum8(&acc[i][kx]);
        }
    }
}

/// Sum of 8 lanes in a fixed pairwise order (the same as the AVX2 path).
#[inline(always)]
fn hsum8(v: &[f32; 8]) -> f32 {
    let a = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let b = [a[0] + a[2], a[1] + a[3]];
    b[0] + b[1]
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86_dw {
    use super::{hsum8, DwDims};
    use crate::kernels::microkernel::Avx2Fma;
    use std::arch::x86_64::*;

    /// See [`super::dw_tile_4x3`]; bounds checked there, `_k` proves AVX2+FMA.
    pub(crate) fn dw_4x3(
        _k: Avx2Fma,
        dy: &[f32],
        xp: &[f32],
        xoff: usize,
        d: DwDims,
        out: &mut [f32; 12],
    ) {
        let mut lanes = [[0f32; 8]; 12];
        // SAFETY: AVX2+FMA detected. The caller checked that every read,
        // dy[n*dy_img + i*dys + oy*ow + ox .. +8] for i < 4 and
        // xp[n*x_img + xoff + oy*wp + ox + kx .. +8] for kx < 3, n < nimg,
        // lies inside the slices (ow % 8 == 0); writes go to `lanes`.
        unsafe { dw_avx2(dy.as_ptr(), xp.as_ptr().add(xoff), d, &mut lanes) };
        for (o, l) in out.iter_mut().zip(&lanes) {
            *o = hsum8(l);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dw_avx2(dy0: *const f32, xb0: *const f32, d: DwDims, lanes: &mut [[f32; 8]; 12]) {
        let DwDims {
            oh, ow, wp, dys, ..
        } = d;
        let mut acc = [_mm256_setzero_ps(); 12];
        for n in 0..d.nimg {
            // SAFETY: n < nimg; see dw_4x3.
            let (dy, xb) = unsafe { (dy0.add(n * d.dy_img), xb0.add(n * d.x_img)) };
            for oy in 0..oh {
                for ox in (0..ow).step_by(8) {
                    // SAFETY: in bounds by the caller's checks (see dw_4x3).
                    unsafe {
                        let x = xb.add(oy * wp + ox);
                        let x0 = _mm256_loadu_ps(x);
                        let x1 = _mm256_loadu_ps(x.add(1));
                        let x2 = _mm256_loadu_ps(x.add(2));
                        let d = dy.add(oy * ow + ox);
                        for i in 0..4 {
                            let di = _mm256_loadu_ps(d.add(i * dys));
                            acc[i * 3] = _mm256_fmadd_ps(di, x0, acc[i * 3]);
                            acc[i * 3 + 1] = _mm256_fmadd_ps(di, x1, acc[i * 3 + 1]);
                            acc[i * 3 + 2] = _mm256_fmadd_ps(di, x2, acc[i * 3 + 2]);
                        }
                    }
                }
            }
        }
        for (l, a) in lanes.iter_mut().zip(&acc) {
            // SAFETY: l is 8 floats.
            unsafe { _mm256_storeu_ps(l.as_mut_ptr(), *a) };
        }
    }
}

#[cfg(test)]
mod dw_tests {
    use super::*;

    #[test]
    fn dw_tile_matches_definition() {
        let (oh, ow, wp) = (3usize, 16usize, 19usize);
        let dys = oh * ow + 5;
        let d = DwDims {
            nimg: 2,
            dys,
            dy_img: 4 * dys + 1,
            x_img: (oh + 1) * wp + 3,
            oh,
            ow,
            wp,
        };
        let dy: Vec<f32> = (0..2 * d.dy_img)
            .map(|i| ((i * 7) % 13) as f32 - 6.0)
            .collect();
        let xp: Vec<f32> = (0..2 * d.x_img + 8)
            .map(|i| ((i * 5) % 9) as f32 * 0.5)
            .collect();
        let mut out = [0f32; 12];
        let mut por = [0f32; 12];
        dw_tile_4x3(&dy, &xp, 3, d, &mut out);
        dw_portable(&dy, &xp[3..], d, &mut por);
        for i in 0..4 {
            for kx in 0..3 {
                assert!((por[i * 3 + kx] - out[i * 3 + kx]).abs() < 1e-3);
                let mut want = 0f64;
                for n in 0..2 {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            want += dy[n * d.dy_img + i * dys + oy * ow + ox] as f64
                                * xp[n * d.x_img + 3 + oy * wp + ox + kx] as f64;
                        }
                    }
                }
                assert!((out[i * 3 + kx] as f64 - want).abs() < 1e-3, "{i} {kx}");
            }
        }
    }
}
