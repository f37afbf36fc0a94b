//! Depth-first execution of the model's per-image layers (the "stack").
//!
//! The ops before the first one that works across the batch (a linear
//! layer) work on each image on its own: convolutions, max pooling, ReLU,
//! any layer with [`PerImage`] passes. Instead of running one op over the whole
//! batch and then the next (a fork-join barrier per op, and each op
//! streaming the whole batch's activations through the caches), the batch is
//! cut into chunks of images fixed by the batch size ([`chunk_images`]), and
//! one task carries its chunk through all the stack's ops: forward from the
//! input to the stack's last output, backward from its gradient to the
//! input.
//! The chunk's activations stay in the core's caches between ops, and the
//! whole stack costs one barrier forward and one backward (plus the
//! reduction of the weight-gradient partials).
//!
//! # Layout
//!
//! Activations of the stack's ops other than the last live in one buffer,
//! chunk-major: chunk `c` (images `c*per ..`, `n` of them) owns
//! `stack[c*per*S .. (c*per + n)*S]`, and inside it op `k`'s outputs for the
//! chunk's `n` images are contiguous at `n * act_off[k]`. The last op's
//! output (the flatten, input of the first linear layer) is an ordinary
//! contiguous `[batch, features]` array. Max-pooling argmaxes are laid out
//! like the stack, and so are the per-chunk weight-gradient partials of the
//! ops that have them (the convolutions) (`partials[c*PS + part_off[k] ..]`).
//!
//! # Determinism
//!
//! Which thread runs a chunk never matters: per-image results do not depend
//! on the chunk, each chunk's weight-gradient partial is summed over its
//! images in order, and the partials are summed over chunks in chunk order.

use super::layers::{ChunkBackward, ChunkForward, PerImage};
use super::op::Op;
use super::scratch::Slots;
use crate::parallel::ComputePool;
use std::time::Instant;

/// Images per chunk for a batch: chunk boundaries depend on the batch size
/// only (never the thread count), and there are at most 16 chunks.
pub(crate) fn chunk_images(batch: usize) -> usize {
    batch.div_ceil(16).max(1)
}

/// The most chunks any batch of up to `batch` images is cut into (the count
/// is not monotonic: 12 images make 12 chunks, 20 make 10): up to 16
/// images, one chunk each; from 16 on, 16 (`ceil(b / ceil(b/16)) <= 16`).
pub(crate) fn max_chunks(batch: usize) -> usize {
    batch.clamp(1, 16)
}

/// The per-image passes of stack op `op` (every op of the stack has them:
/// the stack is the longest prefix of such ops, see [`StackLayout::new`]).
fn per_image(op: &Op) -> &dyn PerImage {
    op.layer
        .per_image()
        .expect("the stack holds per-image layers only")
}

/// Where the stack's ops keep their data, per image (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct StackLayout {
    /// Number of ops in the stack (index of the first linear op).
    pub len: usize,
    /// Offset of op `k`'s output in an image's share of `stack` (ops before
    /// the last).
    act_off: Vec<usize>,
    /// Offset of op `k`'s argmax in an image's share of the argmax buffer.
    arg_off: Vec<usize>,
    /// Offset of conv op `k`'s partial (weight then bias) in a chunk's
    /// share of the partials.
    part_off: Vec<usize>,
    /// Floats of `stack` per image (at least 1, so chunks are never empty).
    pub act_len: usize,
    /// Argmax entries per image (at least 1).
    pub arg_len: usize,
    /// Floats of partials per chunk (at least 1).
    pub part_len: usize,
    /// The largest activation of any stack op (input or output), per image.
    pub max_act: usize,
}

impl StackLayout {
    /// The layout of the longest prefix of `ops` that works per image.
    pub fn new(ops: &[Op]) -> StackLayout {
        let len = ops
            .iter()
            .position(|op| op.layer.per_image().is_none())
            .unwrap_or(ops.len());
        let mut l = StackLayout {
            len,
            act_off: vec![0; len],
            arg_off: vec![0; len],
            part_off: vec![0; len],
            ..StackLayout::default()
        };
        let (mut act, mut arg, mut part) = (0usize, 0usize, 0usize);
        for (k, op) in ops[..len].iter().enumerate() {
            let p = per_image(op);
            if k + 1 < len {
                l.act_off[k] = act;
                act = act.saturating_add(op.out_size);
            }
            l.arg_off[k] = arg;
            arg = arg.saturating_add(p.index_len());
            l.part_off[k] = part;
            part = part.saturating_add(p.partial_len());
            l.max_act = l.max_act.max(op.in_size).max(op.out_size);
        }
        l.act_len = act.max(1);
        l.arg_len = arg.max(1);
        l.part_len = part.max(1);
        l
    }

    /// Where op `k`'s input for a chunk of `n` images sits in the chunk's
    /// share of `stack` (`None`: it is the model input).
    fn input_at(&self, k: usize, ops: &[Op], n: usize) -> Option<std::ops::Range<usize>> {
        (k > 0).then(|| n * self.act_off[k - 1]..n * (self.act_off[k - 1] + ops[k].in_size))
    }

    /// Where op `k`'s output for a chunk of `n` images sits in the chunk's
    /// share of `stack` (`None`: the stack's last op writes to `last`).
    fn output_at(&self, k: usize, ops: &[Op], n: usize) -> Option<std::ops::Range<usize>> {
        (k + 1 < self.len).then(|| n * self.act_off[k]..n * (self.act_off[k] + ops[k].out_size))
    }

    /// Op `k`'s input and output for a chunk of `n` images: the input from
    /// the model input `x0c`, or the previous op's output in the chunk's
    /// `st`; the output in `st`, or `last` for the stack's last op.
    fn io<'a>(
        &self,
        k: usize,
        ops: &[Op],
        n: usize,
        x0c: &'a [f32],
        st: &'a mut [f32],
        last: &'a mut [f32],
    ) -> (&'a [f32], &'a mut [f32]) {
        // Outputs come after inputs in `st`, so one split separates them.
        let (before, after) = match self.output_at(k, ops, n) {
            Some(out) => {
                let (b, a) = st.split_at_mut(out.start);
                (&*b, &mut a[..out.len()])
            }
            None => (&*st, &mut last[..n * ops[k].out_size]),
        };
        (self.input_at(k, ops, n).map_or(x0c, |r| &before[r]), after)
    }

    /// Op `k`'s input and output for a chunk of `n` images, read-only.
    fn io_ref<'a>(
        &self,
        k: usize,
        ops: &[Op],
        n: usize,
        x0c: &'a [f32],
        st: &'a [f32],
        last: &'a [f32],
    ) -> (&'a [f32], &'a [f32]) {
        let x = self.input_at(k, ops, n).map_or(x0c, |r| &st[r]);
        let y = match self.output_at(k, ops, n) {
            Some(r) => &st[r],
            None => &last[..n * ops[k].out_size],
        };
        (x, y)
    }
}

/// The stack's buffers for one call.
pub(crate) struct StackBufs<'a> {
    pub stack: &'a mut [f32],
    pub argmax: &'a mut [u32],
    /// Output of the stack's last op, `[batch, out]`.
    pub last: &'a mut [f32],
}

/// Forward through the stack. `x0` is the model input (`batch` images),
/// `params` the flat parameters; writes every stack op's output. Per-op
/// thread time is added to the slots' `times[k][0]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    pool: &ComputePool,
    slots: &Slots,
    l: &StackLayout,
    ops: &[Op],
    params: &[f32],
    x0: &[f32],
    batch: usize,
    b: StackBufs<'_>,
) {
    let per = chunk_images(batch);
    let (in0, out_last) = (ops[0].in_size, ops[l.len - 1].out_size);
    let st = &mut b.stack[..batch * l.act_len];
    let ar = &mut b.argmax[..batch * l.arg_len];
    let last = &mut b.last[..batch * out_last];
    let (sl, al, ll) = (per * l.act_len, per * l.arg_len, per * out_last);
    pool.for_each_chunk_mut3(st, sl, ar, al, last, ll, |c, st, ar, last| {
        let n = last.len() / out_last;
        let x0c = &x0[c * per * in0..(c * per + n) * in0];
        let mut guard = slots.lock(pool);
        let s = &mut *guard;
        for (k, op) in ops[..l.len].iter().enumerate() {
            let t0 = Instant::now();
            let p = per_image(op);
            let (x, y) = l.io(k, ops, n, x0c, st, last);
            p.forward(ChunkForward {
                params: &params[op.params()],
                x,
                y,
                index: &mut ar[n * l.arg_off[k]..][..n * p.index_len()],
                scratch: s,
            });
            s.times[k][0] += t0.elapsed().as_secs_f64();
        }
    });
}

/// Read-only inputs of the stack's backward pass.
pub(crate) struct BackwardIn<'a> {
    /// The model input.
    pub x0: &'a [f32],
    /// The stack's activations and argmaxes, as written by [`forward`].
    pub stack: &'a [f32],
    pub argmax: &'a [u32],
    pub last: &'a [f32],
    /// d(loss)/d(output of the stack's last op), `[batch, out]`.
    pub dy: &'a [f32],
}

/// Backward through the stack: each chunk's weight-gradient partials into
/// `partials` (chunk-major, see the module docs; summed by
/// [`reduce_partials`]), and with `dinput` d(loss)/d(model input). Per-op
/// thread time is added to the slots' `times[k][1]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    pool: &ComputePool,
    slots: &Slots,
    l: &StackLayout,
    ops: &[Op],
    params: &[f32],
    batch: usize,
    inp: BackwardIn<'_>,
    partials: &mut [f32],
    dinput: Option<&mut [f32]>,
) {
    let per = chunk_images(batch);
    let nchunks = batch.div_ceil(per);
    let (in0, out_last) = (ops[0].in_size, ops[l.len - 1].out_size);
    let parts = &mut partials[..nchunks * l.part_len];
    let chunk = |c: usize, parts: &mut [f32], dinput: Option<&mut [f32]>| {
        let i0 = c * per;
        let n = per.min(batch - i0);
        let x0c = &inp.x0[i0 * in0..(i0 + n) * in0];
        let st = &inp.stack[i0 * l.act_len..(i0 + n) * l.act_len];
        let ar = &inp.argmax[i0 * l.arg_len..(i0 + n) * l.arg_len];
        let last = &inp.last[i0 * out_last..(i0 + n) * out_last];
        let mut guard = slots.lock(pool);
        let s = &mut *guard;
        // The chunk's gradients ping-pong between two halves of the slot's
        // buffer (taken out of the slot so `s` stays usable; no allocation).
        let mut gbuf = std::mem::take(&mut s.grad);
        let (mut cur, mut oth) = gbuf.split_at_mut(per * l.max_act);
        cur[..n * out_last].copy_from_slice(&inp.dy[i0 * out_last..(i0 + n) * out_last]);
        let want_dx0 = dinput.is_some();
        for k in (0..l.len).rev() {
            let t0 = Instant::now();
            let op = &ops[k];
            let p = per_image(op);
            let (x, y) = l.io_ref(k, ops, n, x0c, st, last);
            let need_dx = k > 0 || want_dx0;
            p.backward(ChunkBackward {
                n,
                params: &params[op.params()],
                x,
                y,
                dy: &mut cur[..n * op.out_size],
                dx: need_dx.then(|| &mut oth[..n * op.in_size]),
                index: &ar[n * l.arg_off[k]..][..n * p.index_len()],
                partial: &mut parts[l.part_off[k]..][..p.partial_len()],
                scratch: s,
            });
            std::mem::swap(&mut cur, &mut oth);
            s.times[k][1] += t0.elapsed().as_secs_f64();
        }
        if let Some(d) = dinput {
            d.copy_from_slice(&cur[..n * in0]);
        }
        s.grad = gbuf;
    };
    match dinput {
        Some(d) => pool.for_each_chunk_mut2(
            parts,
            l.part_len,
            &mut d[..batch * in0],
            per * in0,
            |c, p, d| chunk(c, p, Some(d)),
        ),
        None => pool.for_each_chunk_mut(parts, l.part_len, |c, p| chunk(c, p, None)),
    }
}

/// Sums the chunks' partials in chunk order (in parallel over element
/// blocks) and hands each op its sum to write its gradient into `grads`
/// ([`PerImage::reduce_partial`]).
pub(crate) fn reduce_partials(
    pool: &ComputePool,
    l: &StackLayout,
    ops: &[Op],
    batch: usize,
    partials: &mut [f32],
    grads: &mut [f32],
) {
    const BLOCK: usize = 4096;
    let nchunks = batch.div_ceil(chunk_images(batch));
    let plen = l.part_len;
    let (p0, rest) = partials[..nchunks * plen].split_at_mut(plen);
    let rest = &*rest;
    pool.for_each_chunk_mut(p0, BLOCK, |bi, acc| {
        let e0 = bi * BLOCK;
        for c in 1..nchunks {
            let src = &rest[(c - 1) * plen + e0..][..acc.len()];
            acc.iter_mut().zip(src).for_each(|(a, s)| *a += s);
        }
    });
    let p0 = &*p0;
    for (k, op) in ops[..l.len].iter().enumerate() {
        let p = per_image(op);
        if p.partial_len() > 0 {
            let part = &p0[l.part_off[k]..][..p.partial_len()];
            p.reduce_partial(pool, part, &mut grads[op.params()]);
        }
    }
}
