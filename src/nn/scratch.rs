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
}

/// Scratch slots indexed by [`ComputePool::slot`]. The mutex is never
/// contended (a slot belongs to one worker); it only makes sharing safe.
#[derive(Debug, Default)]
pub(crate) struct Slots(Vec<Mutex<Scratch>>);

impl Slots {
    /// At least `n` slots, each with a column buffer of `col_len` floats.
    pub fn ensure(&mut self, n: usize, col_len: usize) {
        while self.0.len() < n {
            self.0.push(Mutex::default());
        }
        for s in &mut self.0 {
            let s = s.get_mut().unwrap_or_else(PoisonError::into_inner);
            if s.col.len() < col_len {
                s.col.resize(col_len, 0.0);
            }
        }
    }

    /// The calling thread's slot.
    pub fn lock(&self, pool: &ComputePool) -> MutexGuard<'_, Scratch> {
        let i = pool.slot() % self.0.len();
        self.0[i].lock().unwrap_or_else(PoisonError::into_inner)
    }
}
