//! Packed single-precision GEMM, `C = A·B` or `C += A·B`, single-threaded,
//! with packing buffers owned by the caller ([`GemmWorkspace`]) so that a
//! warm training step allocates nothing.
//!
//! Loop nest (BLIS order), what each loop splits and what stays where:
//!
//! ```text
//! for jc in N by NC           5th loop: column block of B and C
//!   for pc in K by KC         4th loop: K block; pack B[pc.., jc..] -> B~ (L3/L2)
//!     for ic in M by MC       3rd loop: row block; pack A[ic.., pc..] -> A~ (L2)
//!       for jr in NC by NR    2nd loop: one NR-wide micro-panel of B~ (L1)
//!         for ir in MC by MR  1st loop: one MR-tall micro-panel of A~
//!           microkernel: MR x NR tile over kc steps, then added into C
//! ```
//!
//! Determinism: an element of C is the sum, in `pc` order, of per-block dot
//! products each accumulated in `k` order. That depends on `K` only (the K
//! blocking is a function of `K`),
//! never on `M`, `N`, the tile position or how callers split C between
//! threads, so splitting rows or columns of C never changes a bit.

use super::isa::Simd;
use super::microkernel::{Kernel, Portable, MAX_TILE};

/// Largest K block (rows of B~, columns of A~); see [`k_block`].
const KC_MAX: usize = 320;
/// Micro-panels of A per A~ block: MC = MR * MC_PANELS.
const MC_PANELS: usize = 16;
/// Columns of B per B~ block (a multiple of every kernel's NR).
const NC: usize = 1024;

/// A read-only strided matrix over a slice: element `(i, j)` is
/// `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` view with row stride `rs` and column stride `cs`.
    /// Panics if the view does not fit in `data` (an internal invariant).
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * rs + (cols - 1) * cs;
            assert!(last < data.len(), "MatRef out of bounds");
        }
        MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A row-major `rows x cols` matrix (row stride `cols`).
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose (a view, no copy).
    pub(crate) fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// A matrix that can pack its own micro-panels: a strided [`MatRef`], or a
/// matrix that is never materialised (the im2col matrix of a convolution,
/// generated straight into the panels).
pub(crate) trait PackA {
    /// Number of rows.
    fn rows(&self) -> usize;
    /// Number of columns.
    fn cols(&self) -> usize;
    /// `dst[p*kc*w + k*w + i] = self(r0 + p*w + i, k0 + k)` for the panels
    /// covering rows `r0..r0+rn` (`rn <= MAX_PACK_ROWS`), rows past `rn` zero.
    fn pack(&self, dst: &mut [f32], r0: usize, rn: usize, k0: usize, kc: usize, w: usize);
    /// The matrix as a strided view the microkernel can read in place
    /// (`None`: it must be packed).
    fn view(&self) -> Option<MatRef<'_>> {
        None
    }
}

/// The most rows [`PackA::pack`] is asked for at once (`MC`, for the
/// kernel with the tallest panels).
pub(crate) const MAX_PACK_ROWS: usize = 8 * MC_PANELS;

/// A (a strided matrix) is read in place, not packed, when `N` is at most
/// this: each A panel is then used by few tiles, and one pass over A (a
/// linear layer's weights) is saved. Never changes results.
const DIRECT_A_MAX_N: usize = 256;

/// B (with contiguous rows) is read in place when `M` is at most this:
/// each B panel is then used by few tiles. Never changes results.
const DIRECT_B_MAX_M: usize = 256;

/// The most columns [`PackA::pack`] is asked for at once (`KC`).
pub(crate) const MAX_PACK_COLS: usize = KC_MAX;

impl PackA for MatRef<'_> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn pack(&self, dst: &mut [f32], r0: usize, rn: usize, k0: usize, kc: usize, w: usize) {
        pack(dst, *self, r0, rn, k0, kc, w)
    }
    fn view(&self) -> Option<MatRef<'_>> {
        Some(*self)
    }
}

/// Packing buffers for [`gemm`]; grow on first use, then reused.
#[derive(Debug, Default)]
pub(crate) struct GemmWorkspace {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl GemmWorkspace {
    /// Sizes the buffers for any GEMM (A~ is at most `MC x KC`, B~ at most
    /// `KC x NC`, about 1.4 MiB together), so that no later call allocates
    /// whichever thread runs which shape first.
    pub(crate) fn preallocate(&mut self) {
        let a = 8 * MC_PANELS * KC_MAX;
        let b = NC * KC_MAX;
        if self.a.len() < a {
            self.a.resize(a, 0.0);
        }
        if self.b.len() < b {
            self.b.resize(b, 0.0);
        }
    }
}

/// `C = A·B` (or `C += A·B` when `accumulate`), C row-major with row stride
/// `ldc`: `c[i * ldc + j]` for `i < a.rows`, `j < b.cols`.
pub(crate) fn gemm(
    ws: &mut GemmWorkspace,
    a: impl PackA,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    gemm_checked(super::isa::simd(), ws, a, b, c, ldc, accumulate, false)
}

/// Like [`gemm`] but stores the product transposed: `C = A·B` goes to
/// `ct[j * ldct + i]` (so `ct` holds `(A·B)^T` row-major). Lets a GEMM with a
/// long `M` and a short `N` write a short-by-long result directly.
pub(crate) fn gemm_ct(
    ws: &mut GemmWorkspace,
    a: impl PackA,
    b: MatRef<'_>,
    ct: &mut [f32],
    ldct: usize,
    accumulate: bool,
) {
    gemm_checked(super::isa::simd(), ws, a, b, ct, ldct, accumulate, true)
}

/// [`gemm`] (or, when `trans_c`, [`gemm_ct`]) after checking the shapes,
/// on the kernels of `simd`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_checked(
    simd: Simd,
    ws: &mut GemmWorkspace,
    a: impl PackA,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    trans_c: bool,
) {
    assert_eq!(a.cols(), b.rows, "gemm: inner dimensions differ");
    let (m, n) = (a.rows(), b.cols);
    if m == 0 || n == 0 {
        return;
    }
    // C's rows and columns as stored.
    let (rows, cols) = if trans_c { (n, m) } else { (m, n) };
    assert!(
        ldc >= cols && (rows - 1) * ldc + cols <= c.len(),
        "gemm: C too small"
    );
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2(k) => gemm_with(k, ws, a, b, c, ldc, accumulate, trans_c),
        #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
        Simd::Avx512(k) => gemm_with(k, ws, a, b, c, ldc, accumulate, trans_c),
        #[cfg(target_arch = "aarch64")]
        Simd::Neon(k) => gemm_with(k, ws, a, b, c, ldc, accumulate, trans_c),
        Simd::Portable => gemm_with(Portable, ws, a, b, c, ldc, accumulate, trans_c),
    }
}

/// The K block for a given K: blocks of at most `KC` (and at least half of
/// it), all the same size but the last. Depends on `K` only.
fn k_block(kk: usize) -> usize {
    let blocks = kk.div_ceil(KC_MAX);
    kk.div_ceil(blocks)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_with<K: Kernel, A: PackA>(
    kern: K,
    ws: &mut GemmWorkspace,
    a: A,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    trans_c: bool,
) {
    let (m, kk, n) = (a.rows(), a.cols(), b.cols);
    let (mr, nr) = (K::MR, K::NR);
    if kk == 0 {
        if !accumulate {
            let (rows, cols) = if trans_c { (n, m) } else { (m, n) };
            for i in 0..rows {
                c[i * ldc..i * ldc + cols].fill(0.0);
            }
        }
        return;
    }
    let kcb = k_block(kk);
    let mc_max = mr * MC_PANELS;
    let nc_max = NC;
    let a_need = mc_max.min(m.next_multiple_of(mr)) * kcb;
    let b_need = nc_max.min(n.next_multiple_of(nr)) * kcb;
    if ws.a.len() < a_need {
        ws.a.resize(a_need, 0.0);
    }
    if ws.b.len() < b_need {
        ws.b.resize(b_need, 0.0);
    }
    // Operands read in place instead of packed (see DIRECT_A_MAX_N): A
    // when it is a strided matrix and N is short; B when its rows are
    // contiguous and M is short. Only a ragged last panel is packed. Same
    // bits either way.
    let a_view = a.view().filter(|_| n <= DIRECT_A_MAX_N);
    let b_direct = b.cs == 1 && b.rs >= nr && m <= DIRECT_B_MAX_M;
    let mut tile = [0f32; MAX_TILE];
    for jc in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - jc);
        for pc in (0..kk).step_by(kcb) {
            let kc = kcb.min(kk - pc);
            let add = accumulate || pc > 0;
            let nfull = nc / nr * nr;
            if !b_direct {
                pack(&mut ws.b, b.t(), jc, nc, pc, kc, nr);
            } else if nfull < nc {
                pack(&mut ws.b, b.t(), jc + nfull, nc - nfull, pc, kc, nr);
            }
            for ic in (0..m).step_by(mc_max) {
                let mc = mc_max.min(m - ic);
                let mfull = mc / mr * mr;
                if a_view.is_none() {
                    a.pack(&mut ws.a, ic, mc, pc, kc, mr);
                } else if mfull < mc {
                    a.pack(&mut ws.a, ic + mfull, mc - mfull, pc, kc, mr);
                }
                for jr in (0..nc).step_by(nr) {
                    let nr_eff = nr.min(nc - jr);
                    let (bp, ldb) = if !b_direct {
                        (&ws.b[(jr / nr) * kc * nr..][..kc * nr], nr)
                    } else if jr < nfull {
                        (&b.data[pc * b.rs + jc + jr..], b.rs)
                    } else {
                        (&ws.b[..kc * nr], nr)
                    };
                    for ir in (0..mc).step_by(mr) {
                        let mr_eff = mr.min(mc - ir);
                        let (ap, strides) = match a_view {
                            None => (&ws.a[(ir / mr) * kc * mr..][..kc * mr], (1, mr)),
                            Some(v) if ir < mfull => {
                                (&v.data[(ic + ir) * v.rs + pc * v.cs..], (v.rs, v.cs))
                            }
                            Some(_) => (&ws.a[..kc * mr], (1, mr)),
                        };
                        kern.tile(kc, ap, strides, bp, ldb, &mut tile);
                        if trans_c {
                            for j in 0..nr_eff {
                                let col0 = (jc + jr + j) * ldc + ic + ir;
                                store_col(&mut c[col0..col0 + mr_eff], &tile, j, nr, add);
                            }
                        } else {
                            for i in 0..mr_eff {
                                let row0 = (ic + ir + i) * ldc + jc + jr;
                                let t = &tile[i * nr..i * nr + nr_eff];
                                store_row(&mut c[row0..row0 + nr_eff], t, add);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `c = t` or `c += t`, with fixed-size fast paths for full tile rows.
#[inline(always)]
fn store_row(c: &mut [f32], t: &[f32], add: bool) {
    #[inline(always)]
    fn fixed<const N: usize>(c: &mut [f32; N], t: &[f32; N], add: bool) {
        if add {
            for j in 0..N {
                c[j] += t[j];
            }
        } else {
            *c = *t;
        }
    }
    match c.len() {
        32 => fixed::<32>(c.try_into().unwrap(), t.try_into().unwrap(), add),
        16 => fixed::<16>(c.try_into().unwrap(), t.try_into().unwrap(), add),
        8 => fixed::<8>(c.try_into().unwrap(), t.try_into().unwrap(), add),
        _ => {
            if add {
                c.iter_mut().zip(t).for_each(|(c, t)| *c += t);
            } else {
                c.copy_from_slice(t);
            }
        }
    }
}

/// `c[i] = tile[i*nr + j]` (or `+=`) for the rows of one tile column.
#[inline(always)]
fn store_col(c: &mut [f32], tile: &[f32; MAX_TILE], j: usize, nr: usize, add: bool) {
    if add {
        for (i, v) in c.iter_mut().enumerate() {
            *v += tile[i * nr + j];
        }
    } else {
        for (i, v) in c.iter_mut().enumerate() {
            *v = tile[i * nr + j];
        }
    }
}

/// Packs rows `r0..r0+rn` and columns `k0..k0+kc` of `src` into micro-panels
/// of `w` rows: `dst[p*kc*w + k*w + i] = src(r0 + p*w + i, k0 + k)`, rows past
/// `rn` zero. (B is packed through its transpose.)
fn pack(dst: &mut [f32], src: MatRef<'_>, r0: usize, rn: usize, k0: usize, kc: usize, w: usize) {
    match w {
        6 => pack_w::<6>(dst, src, r0, rn, k0, kc),
        8 => pack_w::<8>(dst, src, r0, rn, k0, kc),
        16 => pack_w::<16>(dst, src, r0, rn, k0, kc),
        32 => pack_w::<32>(dst, src, r0, rn, k0, kc),
        _ => unreachable!("no kernel has panels of width {w}"),
    }
}

#[inline(always)]
fn pack_w<const W: usize>(
    dst: &mut [f32],
    src: MatRef<'_>,
    r0: usize,
    rn: usize,
    k0: usize,
    kc: usize,
) {
    let panels = rn.div_ceil(W);
    for p in 0..panels {
        let panel = &mut dst[p * kc * W..(p + 1) * kc * W];
        let rows = W.min(rn - p * W);
        let base = (r0 + p * W) * src.rs + k0 * src.cs;
        if src.rs == 1 && rows == W {
            // Rows adjacent in memory: each k step is one contiguous run.
            for (k, out) in panel.chunks_exact_mut(W).enumerate() {
                let s = base + k * src.cs;
                let out: &mut [f32; W] = out.try_into().unwrap();
                *out = src.data[s..s + W].try_into().unwrap();
            }
        } else if src.cs == 1 && rows == W {
            // Each row is a contiguous run over k. Rows are often a power of
            // two apart (4 KiB for a 1024-pixel image), so they share L1 sets:
            // copy 16 k-steps of every row (one cache line each) into a local
            // block first, then write the panel sequentially from it.
            const KB: usize = 16;
            let mut blk = [[0f32; KB]; W];
            for k0 in (0..kc).step_by(KB) {
                let kn = KB.min(kc - k0);
                for (i, b) in blk.iter_mut().enumerate() {
                    let s = base + i * src.rs + k0;
                    b[..kn].copy_from_slice(&src.data[s..s + kn]);
                }
                for (k, out) in panel[k0 * W..(k0 + kn) * W].chunks_exact_mut(W).enumerate() {
                    let out: &mut [f32; W] = out.try_into().unwrap();
                    for i in 0..W {
                        out[i] = blk[i][k];
                    }
                }
            }
        } else {
            for (k, out) in panel.chunks_exact_mut(W).enumerate() {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = if i < rows {
                        src.data[base + i * src.rs + k * src.cs]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f64> {
        let mut c = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for k in 0..a.cols {
                    c[i * b.cols + j] +=
                        a.data[i * a.rs + k * a.cs] as f64 * b.data[k * b.rs + j * b.cs] as f64;
                }
            }
        }
        c
    }

    /// Every result on the `isa` path against an f64 reference, for all
    /// operand layouts (A and B read in place or packed, ragged edges,
    /// several K blocks), NaN-poisoned C, C^T bit for bit; returns the bits.
    fn run(isa: crate::kernels::Isa) -> Option<Vec<u32>> {
        let Some(simd) = Simd::for_isa(isa) else {
            eprintln!("skipped: this CPU or build cannot run the {isa} kernels");
            return None;
        };
        let mut bits = Vec::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut ws = GemmWorkspace::default();
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 3, 5),
            (13, 300, 17),
            (33, 27, 70),
            (100, 260, 40),
            (6, 0, 4),
            (140, 9, 300),
            (9, 700, 33),
            (64, 31, 1100),
            (300, 20, 45),
        ] {
            for layout in 0..4 {
                let adata: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let bdata: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let a = if layout & 1 == 0 {
                    MatRef::row_major(&adata, m, k)
                } else {
                    MatRef::row_major(&adata, k, m).t()
                };
                let b = if layout & 2 == 0 {
                    MatRef::row_major(&bdata, k, n)
                } else {
                    MatRef::row_major(&bdata, n, k).t()
                };
                let want = naive(a, b);
                let ldc = n + 3;
                for accumulate in [false, true] {
                    // NaN-poisoned C must be overwritten when not accumulating.
                    let init = if accumulate { 1.0 } else { f32::NAN };
                    let mut c = vec![init; m * ldc];
                    gemm_checked(simd, &mut ws, a, b, &mut c, ldc, accumulate, false);
                    // The transposed store gives the transpose, bit for bit.
                    let ldt = m + 2;
                    let mut ct = vec![init; n * ldt];
                    gemm_checked(simd, &mut ws, a, b, &mut ct, ldt, accumulate, true);
                    for i in 0..m {
                        for j in 0..n {
                            assert_eq!(ct[j * ldt + i].to_bits(), c[i * ldc + j].to_bits());
                        }
                    }
                    bits.extend(
                        (0..m).flat_map(|i| c[i * ldc..i * ldc + n].iter().map(|v| v.to_bits())),
                    );
                    for i in 0..m {
                        for j in 0..n {
                            let w = want[i * n + j] + if accumulate { 1.0 } else { 0.0 };
                            let g = c[i * ldc + j] as f64;
                            assert!(
                                (g - w).abs() <= 1e-4 * (k as f64).sqrt().max(1.0),
                                "m{m} k{k} n{n} layout{layout} ({i},{j}): {g} vs {w}"
                            );
                        }
                        for j in n..ldc {
                            let g = c[i * ldc + j];
                            assert!(g.is_nan() || g == 1.0, "wrote outside C");
                        }
                    }
                }
            }
        }
        Some(bits)
    }

    #[test]
    fn portable_gemm_matches_naive_all_layouts() {
        run(crate::kernels::Isa::Portable);
    }

    #[test]
    fn avx2_gemm_matches_naive_all_layouts() {
        run(crate::kernels::Isa::Avx2Fma);
    }

    /// AVX-512 against the reference, and bit for bit against AVX2 (both
    /// fuse every multiply-add in the same order).
    #[test]
    fn avx512_gemm_matches_naive_and_avx2_bits() {
        let Some(b512) = run(crate::kernels::Isa::Avx512) else {
            return;
        };
        let b2 = run(crate::kernels::Isa::Avx2Fma).expect("AVX-512 CPUs have AVX2");
        assert!(b512 == b2, "AVX-512 and AVX2 GEMMs differ in some bit");
    }

    /// NEON against the reference, and bit for bit against the portable
    /// kernels (on aarch64 both fuse every multiply-add in the same order).
    #[test]
    fn neon_gemm_matches_naive_and_portable_bits() {
        let Some(neon) = run(crate::kernels::Isa::Neon) else {
            return;
        };
        let portable = run(crate::kernels::Isa::Portable).unwrap();
        assert!(
            neon == portable,
            "NEON and portable GEMMs differ in some bit"
        );
    }

    #[test]
    fn identity_is_exact() {
        let n = 37;
        let mut id = vec![0f32; n * n];
        for i in 0..n {
            id[i * n + i] = 1.0;
        }
        let a: Vec<f32> = (0..n * n).map(|x| x as f32 * 0.25 - 3.0).collect();
        let mut c = vec![0f32; n * n];
        let mut ws = GemmWorkspace::default();
        gemm(
            &mut ws,
            MatRef::row_major(&a, n, n),
            MatRef::row_major(&id, n, n),
            &mut c,
            n,
            false,
        );
        assert_eq!(a, c);
    }
}

/// Speed probe: `cargo test --release --lib gemm_speed -- --ignored --nocapture`
/// (run it through `/work/runs/quiet` on a shared machine).
#[cfg(test)]
mod speed {
    use super::*;
    use crate::kernels::Isa;
    use std::time::Instant;

    fn best_of(reps: usize, rounds: usize, mut f: impl FnMut()) -> f64 {
        let mut s = f64::MAX;
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            s = s.min(t.elapsed().as_secs_f64());
        }
        s
    }

    #[test]
    #[ignore]
    fn gemm_speed() {
        let mut ws = GemmWorkspace::default();
        let isas: Vec<(Isa, Simd)> = Isa::ALL
            .iter()
            .filter_map(|&i| Some((i, Simd::for_isa(i)?)))
            .collect();
        // (m, k, n, B transposed): conv-like shapes, then fc1's forward
        // (W·x^T), weight gradient (dy^T·x) and input gradient (dy·W) at
        // batch 32 per 32-row or 16-row task.
        for &(m, k, n, bt) in &[
            (32usize, 288usize, 1024usize, false),
            (64, 576, 256, false),
            (288, 32, 1024, false),
            (32, 4096, 32, true),
            (32, 4096, 128, true),
            (32, 32, 4096, false),
            (16, 256, 4096, false),
        ] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0f32; m * n];
            let bm = if bt {
                MatRef::row_major(&b, n, k).t()
            } else {
                MatRef::row_major(&b, k, n)
            };
            let reps = (2e8 / (2.0 * (m * k * n) as f64)).ceil() as usize;
            let fl = 2.0 * (m * k * n * reps) as f64;
            let line: Vec<String> = isas
                .iter()
                .map(|&(isa, simd)| {
                    let am = MatRef::row_major(&a, m, k);
                    let s = best_of(reps, 15, || {
                        gemm_checked(simd, &mut ws, am, bm, &mut c, n, false, false)
                    });
                    format!("{isa} {:.1}", fl / s / 1e9)
                })
                .collect();
            eprintln!("m{m} k{k} n{n} bt{bt}: GFLOP/s {}", line.join(", "));
        }
        // microkernels alone (packed panels, kc = 256, in L1)
        fn alone<K: crate::kernels::microkernel::Kernel>(name: &str, kern: K) {
            let a = vec![0.5f32; 256 * K::MR];
            let b = vec![0.25f32; 256 * K::NR];
            let mut tile = [0f32; MAX_TILE];
            let reps = 10_000;
            let s = best_of(reps, 30, || {
                kern.tile(
                    256,
                    std::hint::black_box(&a),
                    (1, K::MR),
                    &b,
                    K::NR,
                    &mut tile,
                );
                std::hint::black_box(&tile);
            });
            let fl = 2.0 * (K::MR * K::NR * 256 * reps) as f64;
            eprintln!("{name} microkernel alone: {:.1} GFLOP/s", fl / s / 1e9);
        }
        for &(_, simd) in &isas {
            match simd {
                Simd::Portable => alone("portable", Portable),
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2(k) => alone("avx2", k),
                #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
                Simd::Avx512(k) => alone("avx512", k),
                #[cfg(target_arch = "aarch64")]
                Simd::Neon(k) => alone("neon", k),
            }
        }
    }
}
