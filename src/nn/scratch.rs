//! Per-thread scratch buffers (im2col columns, GEMM packing), one slot per
//! compute thread, reused across steps.

use crate::kernels::gemm::GemmWorkspace;
use crate::parallel::ComputePool;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One thread's scratch.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// im2col / col2im buffer for one image.
    pub col: Vec<f32>,
    /// GEMM packing buffers.
    pub gemm: GemmWorkspace,
    /// Zero-padded input of a direct convolution (plus slack for the last tile).
    pub xpad: Vec<f32>,
    /// Packed weight panels of a direct convolution.
    pub apack: Vec<f32>,
    /// Tap offsets of a direct convolution.
    pub offs: Vec<u32>,
    /// Ping-pong gradients of a chunk in the stack's backward pass.
    pub grad: Vec<f32>,
    /// Seconds this thread spent in each op (forward, backward) since the
    /// last [`Slots::take_times`].
    pub times: Vec<[f64; 2]>,
}

/// Buffer lengths every slot needs (the maximum over the model's layers).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ScratchSizes {
    pub col: usize,
    pub xpad: usize,
    pub apack: usize,
    pub offs: usize,
    pub grad: usize,
    /// Number of ops (length of `times`).
    pub ops: usize,
}

impl ScratchSizes {
    /// The larger of each length.
    pub fn max(self, o: ScratchSizes) -> ScratchSizes {
        ScratchSizes {
            col: self.col.max(o.col),
            xpad: self.xpad.max(o.xpad),
            apack: self.apack.max(o.apack),
            offs: self.offs.max(o.offs),
            grad: self.grad.max(o.grad),
            ops: self.ops.max(o.ops),
        }
    }

    /// Floats (and 4-byte offsets) of one slot, saturating.
    pub fn floats(&self) -> usize {
        [self.col, self.xpad, self.apack, self.offs, self.grad]
            .iter()
            .fold(0usize, |a, &n| a.saturating_add(n))
    }
}

/// Scratch slots indexed by [`ComputePool::slot`]. The mutex is never
/// contended (a slot belongs to one worker); it only makes sharing safe.
#[derive(Debug, Default)]
pub(crate) struct Slots(Vec<Mutex<Scratch>>);

impl Slots {
    /// At least `n` slots, each with buffers of at least `sz`.
    pub fn ensure(&mut self, n: usize, sz: ScratchSizes) {
        while self.0.len() < n {
            self.0.push(Mutex::default());
        }
        for s in &mut self.0 {
            let s = s.get_mut().unwrap_or_else(PoisonError::into_inner);
            s.gemm.preallocate();
            if s.col.len() < sz.col {
                s.col.resize(sz.col, 0.0);
            }
            if s.xpad.len() < sz.xpad {
                s.xpad.resize(sz.xpad, 0.0);
            }
            if s.apack.len() < sz.apack {
                s.apack.resize(sz.apack, 0.0);
            }
            if s.offs.len() < sz.offs {
                s.offs.resize(sz.offs, 0);
            }
            if s.grad.len() < sz.grad {
                s.grad.resize(sz.grad, 0.0);
            }
            if s.times.len() < sz.ops {
                s.times.resize(sz.ops, [0.0; 2]);
            }
        }
    }

    /// Adds every slot's per-op times into `out` (indexed like `times`) and
    /// resets them.
    pub fn take_times(&mut self, out: &mut [[f64; 2]]) {
        for s in &mut self.0 {
            let s = s.get_mut().unwrap_or_else(PoisonError::into_inner);
            for (o, t) in out.iter_mut().zip(&mut s.times) {
                o[0] += t[0];
                o[1] += t[1];
                *t = [0.0; 2];
            }
        }
    }

    /// The calling thread's slot.
    pub fn lock(&self, pool: &ComputePool) -> MutexGuard<'_, Scratch> {
        let i = pool.slot() % self.0.len();
        self.0[i].lock().unwrap_or_else(PoisonError::into_inner)
    }
}
