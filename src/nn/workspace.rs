//! The sizes of a model's buffers for a batch: what [`Model`](super::Model)
//! grows its workspaces to and what [`ModelPlan::memory`](super::ModelPlan::memory)
//! reports, from one computation.

use super::op::Op;
use super::scratch::ScratchSizes;
use super::stack::{chunk_images, max_chunks, StackLayout};

/// Buffer lengths (elements) for batches of up to `batch` images.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Workspace {
    /// The first op whose output is kept contiguous, `[batch, out]` (the
    /// stack's last op, then every batched op); the stack's other ops keep
    /// theirs in `stack`.
    pub first_contiguous: usize,
    /// Sum of the contiguous outputs.
    pub contiguous: usize,
    /// Activations and max-pooling indices of the stack, chunk-major.
    pub stack: usize,
    pub stack_index: usize,
    /// Per-chunk weight-gradient partials of the stack.
    pub partials: usize,
    /// Each of the two ping-pong gradient buffers of the batched ops.
    pub grad: usize,
    /// The batched ops' shared temporary.
    pub tmp: usize,
    /// Every compute thread's scratch.
    pub scratch: ScratchSizes,
}

impl Workspace {
    /// The sizes for `ops` (laid out as `layout`) and up to `batch` images.
    /// Loops over the ops only (no allocation: a warm step calls this).
    pub fn for_batch(ops: &[Op], layout: &StackLayout, batch: usize) -> Workspace {
        let first = layout.len.saturating_sub(1);
        let chunk = chunk_images(batch);
        let mut w = Workspace {
            first_contiguous: first,
            scratch: ScratchSizes {
                grad: (2 * chunk).saturating_mul(layout.max_act),
                ops: ops.len(),
                ..ScratchSizes::default()
            },
            ..Workspace::default()
        };
        let (mut gmax, mut tmax) = (0, 0);
        for (k, op) in ops.iter().enumerate().skip(first) {
            w.contiguous = w
                .contiguous
                .saturating_add(batch.saturating_mul(op.out_size));
            gmax = gmax.max(op.out_size);
            if k >= layout.len {
                gmax = gmax.max(op.in_size);
            }
            if let Some(b) = op.layer.batched() {
                tmax = tmax.max(b.tmp_len());
            }
        }
        for op in &ops[..layout.len] {
            if let Some(p) = op.layer.per_image() {
                w.scratch = w.scratch.max(p.scratch(chunk));
            }
        }
        w.grad = batch.saturating_mul(gmax);
        w.tmp = batch.saturating_mul(tmax);
        if layout.len > 0 {
            w.stack = batch.saturating_mul(layout.act_len);
            w.stack_index = batch.saturating_mul(layout.arg_len);
            w.partials = max_chunks(batch).saturating_mul(layout.part_len);
        }
        w
    }

    /// Floats (and 4-byte indices) of activations, indices, gradients and
    /// temporaries: everything but parameters, partials and scratch.
    pub fn activation_floats(&self) -> usize {
        [
            self.contiguous,
            self.stack,
            self.stack_index,
            self.grad.saturating_mul(2),
            self.tmp,
        ]
        .iter()
        .fold(0usize, |a, &n| a.saturating_add(n))
    }
}
