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
//! products each accumulated in `k` order. That depends on `K` and `KC` only,
//! never on `M`, `N`, the tile position or how callers split C between
//! threads, so splitting rows or columns of C never changes a bit.

use super::microkernel::{Kernel, Portable, MAX_TILE};

/// K block (rows of B~, columns of A~).
const KC: usize = 256;
/// Micro-panels of A per A~ block: MC = MR * MC_PANELS.
const MC_PANELS: usize = 16;
/// Micro-panels of B per B~ block: NC = NR * NC_PANELS.
const NC_PANELS: usize = 64;

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

/// Packing buffers for [`gemm`]; grow on first use, then reused.
#[derive(Debug, Default)]
pub(crate) struct GemmWorkspace {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// Which microkernel this CPU runs (detected once per call; cheap).
#[derive(Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(super::microkernel::Avx2Fma),
    Portable,
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = super::microkernel::Avx2Fma::detect() {
        return Isa::Avx2Fma(k);
    }
    Isa::Portable
}

/// `C = A·B` (or `C += A·B` when `accumulate`), C row-major with row stride
/// `ldc`: `c[i * ldc + j]` for `i < a.rows`, `j < b.cols`.
pub(crate) fn gemm(
    ws: &mut GemmWorkspace,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    let (m, n) = (a.rows, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldc >= n && (m - 1) * ldc + n <= c.len(),
        "gemm: C too small"
    );
    match detect() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma(k) => gemm_with(k, ws, a, b, c, ldc, accumulate),
        Isa::Portable => gemm_with(Portable, ws, a, b, c, ldc, accumulate),
    }
}

/// [`gemm`] forced onto the portable kernel (tests and benchmarks).
#[cfg(test)]
pub(crate) fn gemm_portable(
    ws: &mut GemmWorkspace,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    gemm_with(Portable, ws, a, b, c, ldc, accumulate)
}

#[inline(always)]
fn gemm_with<K: Kernel>(
    kern: K,
    ws: &mut GemmWorkspace,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let (m, kk, n) = (a.rows, a.cols, b.cols);
    let (mr, nr) = (K::MR, K::NR);
    if kk == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let mc_max = mr * MC_PANELS;
    let nc_max = nr * NC_PANELS;
    let a_need = mc_max.min(m.next_multiple_of(mr)) * KC.min(kk);
    let b_need = nc_max.min(n.next_multiple_of(nr)) * KC.min(kk);
    if ws.a.len() < a_need {
        ws.a.resize(a_need, 0.0);
    }
    if ws.b.len() < b_need {
        ws.b.resize(b_need, 0.0);
    }
    let mut tile = [0f32; MAX_TILE];
    for jc in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - jc);
        for pc in (0..kk).step_by(KC) {
            let kc = KC.min(kk - pc);
            let add = accumulate || pc > 0;
            pack(&mut ws.b, b.t(), jc, nc, pc, kc, nr);
            for ic in (0..m).step_by(mc_max) {
                let mc = mc_max.min(m - ic);
                pack(&mut ws.a, a, ic, mc, pc, kc, mr);
                for jr in (0..nc).step_by(nr) {
                    let nr_eff = nr.min(nc - jr);
                    let bp = &ws.b[(jr / nr) * kc * nr..][..kc * nr];
                    for ir in (0..mc).step_by(mr) {
                        let mr_eff = mr.min(mc - ir);
                        let ap = &ws.a[(ir / mr) * kc * mr..][..kc * mr];
                        kern.tile(kc, ap, bp, &mut tile);
                        for i in 0..mr_eff {
                            let row0 = (ic + ir + i) * ldc + jc + jr;
                            let crow = &mut c[row0..row0 + nr_eff];
                            let t = &tile[i * nr..i * nr + nr_eff];
                            if add {
                                crow.iter_mut().zip(t).for_each(|(c, t)| *c += t);
                            } else {
                                crow.copy_from_slice(t);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Packs rows `r0..r0+rn` and columns `k0..k0+kc` of `src` into micro-panels
/// of `w` rows: `dst[p*kc*w + k*w + i] = src(r0 + p*w + i, k0 + k)`, rows past
/// `rn` zero. (B is packed through its transpose.)
fn pack(dst: &mut [f32], src: MatRef<'_>, r0: usize, rn: usize, k0: usize, kc: usize, w: usize) {
    let panels = rn.div_ceil(w);
    for p in 0..panels {
        let panel = &mut dst[p * kc * w..(p + 1) * kc * w];
        let rows = w.min(rn - p * w);
        let base = (r0 + p * w) * src.rs + k0 * src.cs;
        if src.rs == 1 {
            // Rows adjacent in memory: each k step is a contiguous run.
            for (k, out) in panel.chunks_exact_mut(w).enumerate() {
                let s = base + k * src.cs;
                out[..rows].copy_from_slice(&src.data[s..s + rows]);
                out[rows..].fill(0.0);
            }
        } else if src.cs == 1 {
            // Each row is a contiguous run over k: read rows, scatter by w.
            for i in 0..rows {
                let s = base + i * src.rs;
                let row = &src.data[s..s + kc];
                for (k, &v) in row.iter().enumerate() {
                    panel[k * w + i] = v;
                }
            }
            if rows < w {
                for out in panel.chunks_exact_mut(w) {
                    out[rows..].fill(0.0);
                }
            }
        } else {
            for (k, out) in panel.chunks_exact_mut(w).enumerate() {
                for i in 0..w {
                    out[i] = if i < rows {
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

    fn run(portable: bool) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut ws = GemmWorkspace::default();
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 3, 5),
            (13, 300, 17),
            (33, 27, 70),
            (100, 260, 40),
            (6, 0, 4),
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
                    if portable {
                        gemm_portable(&mut ws, a, b, &mut c, ldc, accumulate);
                    } else {
                        gemm(&mut ws, a, b, &mut c, ldc, accumulate);
                    }
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
    }

    #[test]
    fn gemm_matches_naive_all_layouts() {
        run(false);
    }

    #[test]
    fn portable_gemm_matches_naive_all_layouts() {
        run(true);
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
