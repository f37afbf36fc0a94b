//! Fully connected layer on a batch, `y[B, out] = x[B, in] · W[out, in]^T + b`.
//!
//! The GEMMs are arranged so the parallel split is always over disjoint
//! blocks of the product, and so that `W` is never packed: the GEMM reads it
//! in place (as A, row-major with contiguous `in`, in the forward pass; as
//! B, row-major, in the input gradient). The reduction over the batch in
//! `dW` happens inside one GEMM (its `K` dimension), so it is in a fixed
//! order for any thread count, and no split changes a bit (see
//! `kernels::gemm`).
//!
//! ```text
//! forward   t[out, B]  = W[out, in] · x^T[in, B];   y[b, o] = t[o, b] + b[o]
//! backward  dW[out, in] = dy^T[out, B] · x[B, in];   db[o] = sum_b dy[b, o]
//!           dx[B, in]  = dy[B, out] · W[out, in]   (per column block of in)
//! ```

use crate::kernels::gemm::{gemm, MatRef};
use crate::nn::scratch::Slots;
use crate::parallel::ComputePool;

/// Rows of the product per parallel task (forward and `dW`): each task
/// packs all of the small operand (`x^T` in the forward pass), so fewer,
/// larger tasks pack less; 4 tasks for a 256-wide layer.
const ROWS: usize = 64;

/// Columns of `dx` per parallel task: each task reads its `out x COLS`
/// block of `W` once, for the whole batch.
const COLS: usize = 512;

/// Forward. `tmp` holds at least `out * batch` floats.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    pool: &ComputePool,
    slots: &Slots,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    tmp: &mut [f32],
    (batch, fin, fout): (usize, usize, usize),
    relu: bool,
) {
    let xt = MatRef::row_major(&x[..batch * fin], batch, fin).t();
    pool.for_each_chunk_mut(&mut tmp[..fout * batch], ROWS * batch, |blk, t| {
        let r0 = blk * ROWS;
        let rows = t.len() / batch;
        let mut s = slots.lock(pool);
        let wm = MatRef::row_major(&w[r0 * fin..(r0 + rows) * fin], rows, fin);
        gemm(&mut s.gemm, wm, xt, t, batch, false);
    });
    let tmp = &tmp[..fout * batch];
    let small = pool.for_work(batch * fout);
    small.for_each_chunk_mut(&mut y[..batch * fout], fout, |bi, yrow| {
        for (o, (v, &bias)) in yrow.iter_mut().zip(b).enumerate() {
            let z = tmp[o * batch + bi] + bias;
            *v = if relu { z.max(0.0) } else { z };
        }
    });
}

/// Backward: writes `dw`, `db` and, when given, `dx`. `dy` must already be
/// masked by a fused ReLU. `tmp` holds at least `fin * batch` floats.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    pool: &ComputePool,
    slots: &Slots,
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    dx: Option<&mut [f32]>,
    tmp: &mut [f32],
    (batch, fin, fout): (usize, usize, usize),
) {
    let xm = MatRef::row_major(&x[..batch * fin], batch, fin);
    pool.for_each_chunk_mut(&mut dw[..fout * fin], ROWS * fin, |blk, d| {
        let r0 = blk * ROWS;
        let rows = d.len() / fin;
        let mut s = slots.lock(pool);
        // dy^T rows r0..r0+rows: element (o, b) = dy[b*fout + o].
        let dyt = MatRef::new(&dy[r0..], rows, batch, 1, fout);
        gemm(&mut s.gemm, dyt, xm, d, fin, false);
    });
    for (o, d) in db[..fout].iter_mut().enumerate() {
        *d = (0..batch).map(|bi| dy[bi * fout + o]).sum();
    }
    if let Some(dx) = dx {
        // Block `blk` of tmp holds dx[.., c0..c0+cols] row-major (`cols`
        // wide), c0 = blk * COLS; then copied into dx's rows.
        let dym = MatRef::row_major(&dy[..batch * fout], batch, fout);
        let cols_per = COLS.min(fin);
        pool.for_each_chunk_mut(&mut tmp[..fin * batch], cols_per * batch, |blk, t| {
            let c0 = blk * cols_per;
            let cols = t.len() / batch;
            let mut s = slots.lock(pool);
            // W[.., c0..c0+cols], read in place by the GEMM (no packing).
            let wm = MatRef::new(&w[c0..], fout, cols, fin, 1);
            gemm(&mut s.gemm, dym, wm, t, cols, false);
        });
        let tmp = &tmp[..fin * batch];
        let small = pool.for_work(batch * fin);
        small.for_each_chunk_mut(&mut dx[..batch * fin], fin, |bi, row| {
            for (blk, out) in row.chunks_mut(cols_per).enumerate() {
                let cols = out.len();
                let t0 = blk * cols_per * batch + bi * cols;
                out.copy_from_slice(&tmp[t0..t0 + cols]);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::GemmWorkspace;
    use crate::nn::scratch::ScratchSizes;

    /// The input gradient, now `dy · W` per column block with W read in
    /// place, gives the bits of the formulation it replaced (`W^T · dy^T`
    /// with W packed, then transposed), for 1 and 2 threads and ragged
    /// sizes; and the weight gradient and forward pass match a plain GEMM.
    #[test]
    fn linear_gemms_match_the_previous_formulation_bitwise() {
        for &(batch, fin, fout) in &[(33usize, 1100usize, 37usize), (4, 4096, 256), (1, 7, 3)] {
            let f = |i: usize, m: usize| ((i * 37 % m) as f32 / m as f32) - 0.5;
            let w: Vec<f32> = (0..fout * fin).map(|i| f(i, 101)).collect();
            let x: Vec<f32> = (0..batch * fin).map(|i| f(i, 89)).collect();
            let dy: Vec<f32> = (0..batch * fout).map(|i| f(i, 53)).collect();
            let b = vec![0.25f32; fout];
            // The previous formulation, on the same kernels.
            let mut ws = GemmWorkspace::default();
            let mut t = vec![0f32; fin * batch];
            let wt = MatRef::new(&w, fin, fout, 1, fin);
            gemm(
                &mut ws,
                wt,
                MatRef::new(&dy, fout, batch, 1, fout),
                &mut t,
                batch,
                false,
            );
            let mut dw_ref = vec![0f32; fout * fin];
            let dyt = MatRef::new(&dy, fout, batch, 1, fout);
            gemm(
                &mut ws,
                dyt,
                MatRef::row_major(&x, batch, fin),
                &mut dw_ref,
                fin,
                false,
            );
            let mut y_ref = vec![0f32; fout * batch];
            let xt = MatRef::row_major(&x, batch, fin).t();
            gemm(
                &mut ws,
                MatRef::row_major(&w, fout, fin),
                xt,
                &mut y_ref,
                batch,
                false,
            );
            for cores in [1, 2] {
                let pool = ComputePool::new(cores).unwrap();
                let mut slots = Slots::default();
                slots.ensure(cores, ScratchSizes::default());
                let mut tmp = vec![f32::NAN; fin.max(fout) * batch];
                let mut dx = vec![f32::NAN; batch * fin];
                let mut dw = vec![f32::NAN; fout * fin];
                let mut db = vec![f32::NAN; fout];
                let dims = (batch, fin, fout);
                backward(
                    &pool,
                    &slots,
                    &w,
                    &x,
                    &dy,
                    &mut dw,
                    &mut db,
                    Some(&mut dx),
                    &mut tmp,
                    dims,
                );
                for bi in 0..batch {
                    for i in 0..fin {
                        let (got, want) = (dx[bi * fin + i], t[i * batch + bi]);
                        assert_eq!(got.to_bits(), want.to_bits(), "dx ({bi},{i})");
                    }
                }
                assert!(dw
                    .iter()
                    .zip(&dw_ref)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
                let mut y = vec![f32::NAN; batch * fout];
                forward(&pool, &slots, &w, &b, &x, &mut y, &mut tmp, dims, false);
                for bi in 0..batch {
                    for o in 0..fout {
                        let want = y_ref[o * batch + bi] + 0.25;
                        assert_eq!(y[bi * fout + o].to_bits(), want.to_bits(), "y ({bi},{o})");
                    }
                }
            }
        }
    }
}
