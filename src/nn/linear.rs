//! Fully connected layer on a batch, `y[B, out] = x[B, in] · W[out, in]^T + b`.
//!
//! The GEMMs are arranged so the parallel split is always over rows of the
//! product (contiguous, disjoint chunks), each task packing only its slice of
//! `W`. The reduction over the batch in `dW` happens inside one GEMM (its `K`
//! dimension), so it is in a fixed order for any thread count.
//!
//! ```text
//! forward   t[out, B]  = W[out, in] · x^T[in, B];   y[b, o] = t[o, b] + b[o]
//! backward  dW[out, in] = dy^T[out, B] · x[B, in];   db[o] = sum_b dy[b, o]
//!           t[in, B]   = W^T[in, out] · dy^T[out, B]; dx[b, i] = t[i, b]
//! ```

use super::scratch::Slots;
use crate::kernels::gemm::{gemm, MatRef};
use crate::parallel::ComputePool;

/// Rows of the product per parallel task.
const ROWS: usize = 32;

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
        let dyt = MatRef::new(dy, fout, batch, 1, fout);
        let rows_per = (ROWS * 8).min(fin);
        pool.for_each_chunk_mut(&mut tmp[..fin * batch], rows_per * batch, |blk, t| {
            let r0 = blk * rows_per;
            let rows = t.len() / batch;
            let mut s = slots.lock(pool);
            // W^T rows r0..r0+rows: element (i, o) = w[o*fin + i].
            let wt = MatRef::new(&w[r0..], rows, fout, 1, fin);
            gemm(&mut s.gemm, wt, dyt, t, batch, false);
        });
        let tmp = &tmp[..fin * batch];
        let small = pool.for_work(batch * fin);
        small.for_each_chunk_mut(&mut dx[..batch * fin], fin, |bi, row| {
            for (i, v) in row.iter_mut().enumerate() {
                *v = tmp[i * batch + bi];
            }
        });
    }
}
