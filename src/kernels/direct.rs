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
//! order, so results do not depend on tiling (nor, with a fused
//! multiply-add, on whether AVX2 or AVX-512 computed them).
//!
//! Tile shapes: portable and AVX2 `{4, 6} x 16` (two ymm per channel),
//! AVX-512 `{4, 8, 16} x 16` (one zmm per channel: the 16-channel tile runs
//! 16 FMAs per tap against 1 load of the input and 16 broadcasts).

use super::isa::Simd;
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

/// Rows (output channels) of the next weight panel on `simd` when `rem`
/// remain. Portable and AVX2: panels of 6 and 4 rows tile any even count
/// exactly (32 = 4x6 + 2x4), an odd count gets one zero row. AVX-512:
/// panels of 16, then 8 or 4 (at most 15 zero rows in all).
pub(crate) fn panel_rows(simd: Simd, rem: usize) -> usize {
    match simd {
        #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
        Simd::Avx512(_) => match rem {
            0 => 0,
            r if r > 8 => 16,
            r if r > 4 => 8,
            _ => 4,
        },
        _ => {
            let even = rem + rem % 2;
            match even {
                0 => 0,
                e if e % 6 == 0 => 6,
                2 | 4 | 8 => 4,
                _ => 6,
            }
        }
    }
}

/// Extra zero rows [`panel_rows`] may add to a layer's weight panels.
pub(crate) const MAX_PANEL_PAD: usize = 15;

/// `tile = a~ · X` for one `mr x 16` tile on `simd`; see the module docs.
/// `mr` is a value [`panel_rows`] returns for `simd`.
#[inline]
pub(crate) fn tile(
    simd: Simd,
    mr: usize,
    a: &[f32],
    xp: &[f32],
    base: usize,
    offs: Offsets<'_>,
    out: &mut [f32; MAX_TILE],
) {
    let kc = offs.v.len();
    assert!(mr * NP <= MAX_TILE && a.len() >= kc * mr);
    assert!(
        kc == 0 || base + offs.max + NP <= xp.len(),
        "tile reads past the input"
    );
    match (simd, mr) {
        #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
        (Simd::Avx512(k), 16) => x86_512::tile::<16>(k, kc, a, xp, base, offs.v, out),
        #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
        (Simd::Avx512(k), 8) => x86_512::tile::<8>(k, kc, a, xp, base, offs.v, out),
        #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
        (Simd::Avx512(k), 4) => x86_512::tile::<4>(k, kc, a, xp, base, offs.v, out),
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2(k), 6) => x86::tile::<6>(k, kc, a, xp, base, offs.v, out),
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2(k), 4) => x86::tile::<4>(k, kc, a, xp, base, offs.v, out),
        // NEON: LLVM's code for the portable tile is at the FP-pipe bound
        // (`.ci/aarch64-mca`), so the NEON family uses it as it is.
        #[cfg(target_arch = "aarch64")]
        (Simd::Neon(_), 6) => portable_6x16(kc, a, &xp[base..], offs.v, out),
        #[cfg(target_arch = "aarch64")]
        (Simd::Neon(_), 4) => portable_4x16(kc, a, &xp[base..], offs.v, out),
        (Simd::Portable, 6) => portable_6x16(kc, a, &xp[base..], offs.v, out),
        (Simd::Portable, 4) => portable_4x16(kc, a, &xp[base..], offs.v, out),
        _ => panic!("direct::tile: no {mr}-row tile on {simd:?}"),
    }
}

/// The portable 6-row tile. The tiles are never inlined: one call per tile
/// costs nothing against its `kc` taps, and `.ci/aarch64-mca` finds each
/// loop by its name.
#[inline(never)]
fn portable_6x16(kc: usize, a: &[f32], xb: &[f32], offs: &[u32], out: &mut [f32; MAX_TILE]) {
    portable::<6>(kc, a, xb, offs, out)
}

/// The portable 4-row tile (see [`portable_6x16`]).
#[inline(never)]
fn portable_4x16(kc: usize, a: &[f32], xb: &[f32], offs: &[u32], out: &mut [f32; MAX_TILE]) {
    portable::<4>(kc, a, xb, offs, out)
}

#[inline(always)]
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

#[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
// Built only by rustc >= 1.89 (build.rs sets `ringsgd_avx512`).
#[clippy::msrv = "1.89"]
#[allow(unsafe_code)]
mod x86_512 {
    use super::{MAX_TILE, NP};
    use crate::kernels::microkernel::Avx512;
    use std::arch::x86_64::*;

    /// Safe entry: the caller checked `a.len() >= kc*MR` and
    /// `base + max(offs) + 16 <= xp.len()`; `_k` proves AVX-512F.
    #[inline]
    pub(super) fn tile<const MR: usize>(
        _k: Avx512,
        kc: usize,
        a: &[f32],
        xp: &[f32],
        base: usize,
        offs: &[u32],
        out: &mut [f32; MAX_TILE],
    ) {
        assert!(MR * NP <= MAX_TILE);
        // SAFETY: AVX-512F is present (an `Avx512` exists only after
        // detection). Reads: a[..kc*MR] and, for each k < kc,
        // xp[base + offs[k] .. + 16], all in bounds by the caller's checks
        // (offs has kc entries). Writes: out[..MR*16] <= MAX_TILE (asserted).
        unsafe {
            tile_avx512::<MR>(
                kc,
                a.as_ptr(),
                xp.as_ptr().add(base),
                offs.as_ptr(),
                out.as_mut_ptr(),
            )
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512<const MR: usize>(
        kc: usize,
        a: *const f32,
        xb: *const f32,
        offs: *const u32,
        out: *mut f32,
    ) {
        let mut c = [_mm512_setzero_ps(); MR];
        for k in 0..kc {
            // SAFETY: k < kc; see `tile`.
            unsafe {
                let x = _mm512_loadu_ps(xb.add(*offs.add(k) as usize));
                let ak = a.add(k * MR);
                for (i, ci) in c.iter_mut().enumerate() {
                    *ci = _mm512_fmadd_ps(_mm512_set1_ps(*ak.add(i)), x, *ci);
                }
            }
        }
        for (i, ci) in c.iter().enumerate() {
            // SAFETY: i*16+15 < MR*16 <= MAX_TILE.
            unsafe { _mm512_storeu_ps(out.add(i * NP), *ci) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    /// Every tile shape of `isa` against the definition and the portable
    /// kernel (NaN-poisoned tile); returns the bits of each shape's tile.
    fn check(isa: Isa) -> Option<Vec<Vec<u32>>> {
        let Some(simd) = Simd::for_isa(isa) else {
            eprintln!("skipped: this CPU or build cannot run the {isa} kernels");
            return None;
        };
        let xp: Vec<f32> = (0..300)
            .map(|i| ((i * 7) % 11) as f32 - 5.0 + 0.01 * (i % 13) as f32)
            .collect();
        let offs: Vec<u32> = vec![0, 3, 17, 40, 41, 100, 7, 250];
        let kc = offs.len();
        let mut shapes: Vec<usize> = (1..=40).map(|r| panel_rows(simd, r)).collect();
        shapes.sort_unstable();
        shapes.dedup();
        let mut bits = Vec::new();
        for &mr in &shapes {
            let a: Vec<f32> = (0..kc * mr)
                .map(|i| ((i * 5) % 7) as f32 * 0.5 - 1.0 + 0.001 * i as f32)
                .collect();
            let mut out = [f32::NAN; MAX_TILE];
            tile(simd, mr, &a, &xp, 9, Offsets::new(&offs), &mut out);
            for i in 0..mr {
                for j in 0..NP {
                    let want: f64 = (0..kc)
                        .map(|k| a[k * mr + i] as f64 * xp[9 + offs[k] as usize + j] as f64)
                        .sum();
                    let got = out[i * NP + j] as f64;
                    assert!((got - want).abs() < 1e-3, "{isa} mr {mr} ({i},{j})");
                }
            }
            bits.push(out[..mr * NP].iter().map(|v| v.to_bits()).collect());
        }
        Some(bits)
    }

    /// Panels of [`panel_rows`] cover any channel count with at most
    /// [`MAX_PANEL_PAD`] zero rows, on every family.
    #[test]
    fn panels_cover_every_channel_count() {
        for isa in Isa::ALL {
            let Some(simd) = Simd::for_isa(isa) else {
                continue;
            };
            for n in 1..200 {
                let (mut start, mut rows) = (0, 0);
                while start < n {
                    let mr = panel_rows(simd, n - start);
                    assert!(mr > 0);
                    start += mr;
                    rows += mr;
                }
                assert!(rows - n <= MAX_PANEL_PAD, "{isa} {n}");
            }
        }
    }

    #[test]
    fn portable_direct_tile_matches_definition() {
        check(Isa::Portable);
    }

    /// NEON (the portable tile, dispatched through the NEON token) against
    /// the definition and bit for bit against the portable family.
    #[test]
    fn neon_direct_tile_matches_definition_and_portable_bits() {
        if let Some(neon) = check(Isa::Neon) {
            assert!(
                neon == check(Isa::Portable).unwrap(),
                "NEON and portable differ"
            );
        }
    }

    #[test]
    fn avx2_direct_tile_matches_definition() {
        check(Isa::Avx2Fma);
    }

    #[test]
    fn avx512_direct_tile_matches_definition() {
        check(Isa::Avx512);
    }

    #[test]
    #[should_panic(expected = "past the input")]
    fn out_of_bounds_offsets_panic() {
        let xp = vec![0f32; 20];
        let mut out = [0f32; MAX_TILE];
        tile(
            Simd::Portable,
            4,
            &[0.0; 4],
            &xp,
            0,
            Offsets::new(&[5]),
            &mut out,
        );
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
/// vectorised over 8 pixels (`ow % 8 == 0`; AVX-512: over 16 pixels when
/// `ow % 16 == 0`), lane sums added at the end in a fixed order. The order
/// depends on the lane count only: the portable and AVX2 paths agree up to
/// the fused multiply-add, AVX-512's 16 lanes sum differently.
pub(crate) fn dw_tile_4x3(
    simd: Simd,
    dy: &[f32],
    xp: &[f32],
    xoff: usize,
    d: DwDims,
    out: &mut [f32; 12],
) {
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
    match simd {
        #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
        Simd::Avx512(k) if d.ow % 16 == 0 => x86_dw512::dw_4x3(k, dy, xp, xoff, d, out),
        #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
        Simd::Avx512(k) => x86_dw::dw_4x3(k.avx2(), dy, xp, xoff, d, out),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(k) => x86_dw::dw_4x3(k, dy, xp, xoff, d, out),
        #[cfg(target_arch = "aarch64")]
        Simd::Neon(k) => neon::dw_4x3(k, dy, xp, xoff, d, out),
        Simd::Portable => dw_portable(dy, &xp[xoff..], d, out),
    }
}

/// The portable weight-gradient tile. Never inlined (one call per tile
/// reduces over whole images); `.ci/aarch64-mca` finds its loop by name.
#[inline(never)]
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

/// The 12 outputs of a weight-gradient tile from its 8-lane accumulators,
/// each summed by [`hsum8`] (the NEON and AVX2 tiles).
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
#[inline(always)]
fn sum_lanes8(lanes: &[[f32; 8]; 12], out: &mut [f32; 12]) {
    for (o, l) in out.iter_mut().zip(lanes) {
        *o = hsum8(l);
    }
}

/// Sum of 8 lanes in a fixed pairwise order (the same as the AVX2 path).
#[inline(always)]
fn hsum8(v: &[f32; 8]) -> f32 {
    let a = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let b = [a[0] + a[2], a[1] + a[3]];
    b[0] + b[1]
}

#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
mod neon {
    use super::{sum_lanes8, DwDims};
    use crate::kernels::microkernel::Neon;
    use std::arch::aarch64::*;

    /// See [`super::dw_tile_4x3`]; bounds checked there, `_k` proves NEON.
    /// 8 lanes per accumulator as two q registers, summed by [`super::hsum8`]: the
    /// same fused multiply-adds in the same order as the portable kernel on
    /// aarch64, so the same bits.
    pub(crate) fn dw_4x3(
        _k: Neon,
        dy: &[f32],
        xp: &[f32],
        xoff: usize,
        d: DwDims,
        out: &mut [f32; 12],
    ) {
        let mut lanes = [[0f32; 8]; 12];
        // SAFETY: NEON detected. The caller checked that every read,
        // dy[n*dy_img + i*dys + oy*ow + ox .. +8] for i < 4 and
        // xp[n*x_img + xoff + oy*wp + ox + kx .. +8] for kx < 3, n < nimg,
        // ox a multiple of 8 below ow (ow % 8 == 0), lies inside the
        // slices; writes go to `lanes`.
        unsafe { dw_4x3_neon(dy.as_ptr(), xp.as_ptr().add(xoff), d, &mut lanes) };
        sum_lanes8(&lanes, out);
    }

    /// Never inlined: `.ci/aarch64-mca` finds the loop by name.
    ///
    /// # Safety
    /// NEON present; the reads of [`dw_4x3`] in bounds.
    #[inline(never)]
    #[target_feature(enable = "neon")]
    unsafe fn dw_4x3_neon(dy0: *const f32, xb0: *const f32, d: DwDims, lanes: &mut [[f32; 8]; 12]) {
        let DwDims {
            oh, ow, wp, dys, ..
        } = d;
        // acc[i*3 + kx] = [lanes 0..4, lanes 4..8].
        let mut acc = [[vdupq_n_f32(0.0); 2]; 12];
        for n in 0..d.nimg {
            // SAFETY: n < nimg; see dw_4x3.
            let (dy, xb) = unsafe { (dy0.add(n * d.dy_img), xb0.add(n * d.x_img)) };
            for oy in 0..oh {
                // Lanes 0..4 of every 8-pixel group of the row, then lanes
                // 4..8 (the row stays in L1): the inner loop holds 12
                // accumulators, 3 input vectors and 1 of dy; with all 24
                // accumulators and 6 input vectors LLVM spills. Each lane's
                // sum runs in the same pixel order either way.
                // `h` picks the half in acc[i*3 + kx][h]: no single iterator.
                #[allow(clippy::needless_range_loop)]
                for h in 0..2 {
                    // SAFETY: oy < oh, h < 2; see dw_4x3.
                    let (mut x, mut dr) =
                        unsafe { (xb.add(oy * wp + 4 * h), dy.add(oy * ow + 4 * h)) };
                    for _ in 0..ow / 8 {
                        // SAFETY: in bounds by the caller's checks (see dw_4x3).
                        unsafe {
                            let xs: [float32x4_t; 3] =
                                std::array::from_fn(|kx| vld1q_f32(x.add(kx)));
                            for i in 0..4 {
                                let di = vld1q_f32(dr.add(i * dys));
                                for (kx, xk) in xs.iter().enumerate() {
                                    let a = &mut acc[i * 3 + kx][h];
                                    *a = vfmaq_f32(*a, di, *xk);
                                }
                            }
                            x = x.add(8);
                            dr = dr.add(8);
                        }
                    }
                }
            }
        }
        for (l, a) in lanes.iter_mut().zip(&acc) {
            // SAFETY: l is 8 floats.
            unsafe {
                vst1q_f32(l.as_mut_ptr(), a[0]);
                vst1q_f32(l.as_mut_ptr().add(4), a[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86_dw {
    use super::{sum_lanes8, DwDims};
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
        sum_lanes8(&lanes, out);
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

#[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
// Built only by rustc >= 1.89 (build.rs sets `ringsgd_avx512`).
#[clippy::msrv = "1.89"]
#[allow(unsafe_code)]
mod x86_dw512 {
    use super::{hsum8, DwDims};
    use crate::kernels::microkernel::Avx512;
    use std::arch::x86_64::*;

    /// See [`super::dw_tile_4x3`]; bounds checked there (and `ow % 16 == 0`
    /// here), `_k` proves AVX-512F.
    pub(crate) fn dw_4x3(
        _k: Avx512,
        dy: &[f32],
        xp: &[f32],
        xoff: usize,
        d: DwDims,
        out: &mut [f32; 12],
    ) {
        assert!(
            d.ow.is_multiple_of(16),
            "the AVX-512 dw tile needs ow % 16 == 0"
        );
        let mut lanes = [[0f32; 16]; 12];
        // SAFETY: AVX-512F detected. The caller checked that every read,
        // dy[n*dy_img + i*dys + oy*ow + ox .. +16] for i < 4 and
        // xp[n*x_img + xoff + oy*wp + ox + kx .. +16] for kx < 3, n < nimg,
        // ox a multiple of 16 below ow (ow % 16 == 0, asserted), lies inside
        // the slices; writes go to `lanes`.
        unsafe { dw_avx512(dy.as_ptr(), xp.as_ptr().add(xoff), d, &mut lanes) };
        for (o, l) in out.iter_mut().zip(&lanes) {
            // Fixed order: the two 8-lane halves, then as on 8 lanes.
            let h: [f32; 8] = std::array::from_fn(|j| l[j] + l[j + 8]);
            *o = hsum8(&h);
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dw_avx512(dy0: *const f32, xb0: *const f32, d: DwDims, lanes: &mut [[f32; 16]; 12]) {
        let DwDims {
            oh, ow, wp, dys, ..
        } = d;
        let mut acc = [_mm512_setzero_ps(); 12];
        for n in 0..d.nimg {
            // SAFETY: n < nimg; see dw_4x3.
            let (dy, xb) = unsafe { (dy0.add(n * d.dy_img), xb0.add(n * d.x_img)) };
            for oy in 0..oh {
                for ox in (0..ow).step_by(16) {
                    // SAFETY: in bounds by the caller's checks (see dw_4x3).
                    unsafe {
                        let x = xb.add(oy * wp + ox);
                        let x0 = _mm512_loadu_ps(x);
                        let x1 = _mm512_loadu_ps(x.add(1));
                        let x2 = _mm512_loadu_ps(x.add(2));
                        let d = dy.add(oy * ow + ox);
                        for i in 0..4 {
                            let di = _mm512_loadu_ps(d.add(i * dys));
                            acc[i * 3] = _mm512_fmadd_ps(di, x0, acc[i * 3]);
                            acc[i * 3 + 1] = _mm512_fmadd_ps(di, x1, acc[i * 3 + 1]);
                            acc[i * 3 + 2] = _mm512_fmadd_ps(di, x2, acc[i * 3 + 2]);
                        }
                    }
                }
            }
        }
        for (l, a) in lanes.iter_mut().zip(&acc) {
            // SAFETY: l is 16 floats.
            unsafe { _mm512_storeu_ps(l.as_mut_ptr(), *a) };
        }
    }

    /// See [`super::dw_taps_tile`] (bounds checked there).
    pub(crate) fn taps<const NV: usize>(
        _k: Avx512,
        op: super::DwTaps<'_>,
        offs: &[usize; super::DW_TAPS],
        j0: usize,
        out: &mut [f32; crate::kernels::microkernel::MAX_TILE],
    ) {
        // SAFETY: AVX-512F detected. The caller checked that the reads
        // xp[n*x_img + offs[i] + q] (n < nimg, q < qlen) and
        // dyt[(n*qlen + q)*ldd + j0 .. + 16*NV] are in bounds; writes go to
        // out[i*32 + 16*v ..][..16] for i < 8, v < NV (< 256 = MAX_TILE).
        unsafe { taps_avx512::<NV>(op, offs, j0, out.as_mut_ptr()) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn taps_avx512<const NV: usize>(
        op: super::DwTaps<'_>,
        offs: &[usize; super::DW_TAPS],
        j0: usize,
        out: *mut f32,
    ) {
        let mut c = [[_mm512_setzero_ps(); NV]; super::DW_TAPS];
        for n in 0..op.nimg {
            // SAFETY: in bounds by the caller's checks (see `taps`).
            unsafe {
                let xb = op.xp.as_ptr().add(n * op.x_img);
                let rows: [*const f32; super::DW_TAPS] = std::array::from_fn(|i| xb.add(offs[i]));
                let mut d = op.dyt.as_ptr().add(n * op.qlen * op.ldd + j0);
                for q in 0..op.qlen {
                    let mut dv = [_mm512_setzero_ps(); NV];
                    for (v, dvv) in dv.iter_mut().enumerate() {
                        *dvv = _mm512_loadu_ps(d.add(16 * v));
                    }
                    for (ci, r) in c.iter_mut().zip(&rows) {
                        let a = _mm512_set1_ps(*r.add(q));
                        for v in 0..NV {
                            ci[v] = _mm512_fmadd_ps(a, dv[v], ci[v]);
                        }
                    }
                    d = d.add(op.ldd);
                }
            }
        }
        for (i, ci) in c.iter().enumerate() {
            for (v, cv) in ci.iter().enumerate() {
                // SAFETY: i*32 + 16*v + 15 < 256 = MAX_TILE.
                unsafe { _mm512_storeu_ps(out.add(i * 32 + 16 * v), *cv) };
            }
        }
    }
}

/// Taps per tile of [`dw_taps_tile`].
#[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
pub(crate) const DW_TAPS: usize = 8;

/// Operands of a [`dw_taps_tile`]: the padded images and the transposed,
/// zero-padded output gradient.
#[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct DwTaps<'a> {
    /// Zero-padded input images, `x_img` floats apart.
    pub xp: &'a [f32],
    /// Floats between two padded images.
    pub x_img: usize,
    /// `dyt[(n*qlen + q)*ldd + co]`: the output gradient of image `n` at
    /// padded-grid position `q = oy*wp + ox` (zero where `ox >= ow`), for
    /// output channel `co` (zero past the layer's channels).
    pub dyt: &'a [f32],
    /// Floats between two positions of `dyt` (a multiple of 16).
    pub ldd: usize,
    /// Images reduced over.
    pub nimg: usize,
    /// Positions per image (`(oh - 1)*wp + ow`).
    pub qlen: usize,
}

/// Weight-gradient tile of a stride-1 convolution on AVX-512, vectorised
/// over output channels (no horizontal sums): for 8 taps `i` (tap offsets
/// `offs[i]` in a padded image) and `16*nv` output channels `j` from `j0`,
///
/// ```text
/// out[i*32 + j] = sum_{n, q < qlen} xp[n*x_img + offs[i] + q] * dyt[(n*qlen + q)*ldd + j0 + j]
/// ```
///
/// accumulated in `(n, q)` order; `nv` is 1 or 2 (`j < 16*nv`).
#[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
pub(crate) fn dw_taps_tile(
    k: super::microkernel::Avx512,
    op: DwTaps<'_>,
    offs: &[usize; DW_TAPS],
    j0: usize,
    nv: usize,
    out: &mut [f32; MAX_TILE],
) {
    assert!(op.nimg > 0 && op.qlen > 0 && (nv == 1 || nv == 2));
    let omax = offs.iter().copied().max().unwrap_or(0);
    assert!(
        (op.nimg - 1) * op.x_img + omax + op.qlen <= op.xp.len(),
        "dw_taps_tile reads past the input"
    );
    assert!(
        op.ldd % 16 == 0
            && j0 + 16 * nv <= op.ldd
            && (op.nimg * op.qlen - 1) * op.ldd + op.ldd <= op.dyt.len(),
        "dw_taps_tile reads past dy"
    );
    if nv == 2 {
        x86_dw512::taps::<2>(k, op, offs, j0, out)
    } else {
        x86_dw512::taps::<1>(k, op, offs, j0, out)
    }
}

#[cfg(test)]
mod dw_tests {
    use super::*;
    use crate::kernels::Isa;

    /// The weight-gradient tile of `isa` against the definition (f64), for
    /// output widths of 8 (AVX-512 falls back to AVX2), 16 and 32, with a
    /// NaN-poisoned output; returns the bits of every tile.
    fn check(isa: Isa) -> Option<Vec<u32>> {
        let Some(simd) = Simd::for_isa(isa) else {
            eprintln!("skipped: this CPU or build cannot run the {isa} kernels");
            return None;
        };
        let mut bits = Vec::new();
        for &(nimg, oh, ow) in &[(2usize, 3usize, 16usize), (1, 5, 8), (3, 2, 32), (1, 1, 48)] {
            let wp = ow + 3;
            let dys = oh * ow + 5;
            let d = DwDims {
                nimg,
                dys,
                dy_img: 4 * dys + 1,
                x_img: (oh + 1) * wp + 3,
                oh,
                ow,
                wp,
            };
            let dy: Vec<f32> = (0..nimg * d.dy_img)
                .map(|i| ((i * 7) % 13) as f32 - 6.0 + 0.01 * (i % 5) as f32)
                .collect();
            let xp: Vec<f32> = (0..nimg * d.x_img + 8)
                .map(|i| ((i * 5) % 9) as f32 * 0.5 + 0.001 * (i % 17) as f32)
                .collect();
            let mut out = [f32::NAN; 12];
            dw_tile_4x3(simd, &dy, &xp, 3, d, &mut out);
            for i in 0..4 {
                for kx in 0..3 {
                    let mut want = 0f64;
                    for n in 0..nimg {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                want += dy[n * d.dy_img + i * dys + oy * ow + ox] as f64
                                    * xp[n * d.x_img + 3 + oy * wp + ox + kx] as f64;
                            }
                        }
                    }
                    let got = out[i * 3 + kx] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * want.abs().max(1.0),
                        "{isa} ow {ow} ({i},{kx}): {got} vs {want}"
                    );
                }
            }
            bits.extend(out.iter().map(|v| v.to_bits()));
        }
        Some(bits)
    }

    /// NEON against the definition and bit for bit against the portable
    /// tile (the same fused multiply-adds and lane sums on aarch64).
    #[test]
    fn neon_dw_tile_matches_definition_and_portable_bits() {
        if let Some(neon) = check(Isa::Neon) {
            assert!(
                neon == check(Isa::Portable).unwrap(),
                "NEON and portable differ"
            );
        }
    }

    #[test]
    fn portable_dw_tile_matches_definition() {
        check(Isa::Portable);
    }

    #[test]
    fn avx2_dw_tile_matches_definition() {
        check(Isa::Avx2Fma);
    }

    #[test]
    fn avx512_dw_tile_matches_definition() {
        check(Isa::Avx512);
    }
}
