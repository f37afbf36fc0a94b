//! Communicators: who am I, how many are we, and how do I move bytes to a peer.
//!
//! The collective algorithms in [`crate::collectives`] are written once
//! against the [`Communicator`] trait and run over either implementation:
//!
//! * [`mpi`] (feature `mpi`, on by default): MPI point-to-point through rsmpi.
//!   Works under `mpirun` and standalone as a one-rank world.
//! * [`local`]: N ranks as threads in one process, for tests, laptops and
//!   benchmarks of the algorithms without MPI.
//!
//! All methods are blocking and must be called from one thread per rank
//! (MPI is used from a single thread; compute runs in the rayon pool).

use crate::error::Result;

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

/// A group of `size()` ranks that can exchange messages.
///
/// Messages between a pair of ranks are delivered in the order they were sent.
/// A receive whose buffer length differs from the length of the message that
/// arrives is an [`Error::Comm`](crate::Error::Comm), never a truncation or a
/// hang.
pub trait Communicator {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group (>= 1).
    fn size(&self) -> usize;

    /// Sends `data` to rank `dest` (blocking until the buffer may be reused).
    fn send_f32(&self, dest: usize, data: &[f32]) -> Result<()>;

    /// Receives exactly `buf.len()` values from rank `src`.
    fn recv_f32(&self, src: usize, buf: &mut [f32]) -> Result<()>;

    /// Sends `send` to `dest` while receiving `recv.len()` values from `src`
    /// (MPI_Sendrecv): one step of a ring. Never deadlocks when every rank of
    /// a ring calls it at once.
    fn sendrecv_f32(&self, send: &[f32], dest: usize, recv: &mut [f32], src: usize) -> Result<()>;

    /// Byte-slice variant of [`Communicator::send_f32`].
    fn send_bytes(&self, dest: usize, data: &[u8]) -> Result<()>;

    /// Byte-slice variant of [`Communicator::recv_f32`].
    fn recv_bytes(&self, src: usize, buf: &mut [u8]) -> Result<()>;

    /// Byte-slice variant of [`Communicator::sendrecv_f32`].
    fn sendrecv_bytes(&self, send: &[u8], dest: usize, recv: &mut [u8], src: usize) -> Result<()>;

    /// Blocks until every rank has entered the barrier.
    fn barrier(&self) -> Result<()>;

    /// Copies `buf` on rank `root` into `buf` on every other rank.
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()>;

    /// Byte-slice variant of [`Communicator::broadcast_f32`].
    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<()>;

    /// The transport's own sum-allreduce (`MPI_Allreduce` for MPI), kept as a
    /// baseline for the hand-written algorithms. Lengths are assumed to have
    /// been checked by the caller.
    fn native_allreduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;

    /// A short human-readable name of the transport, for logs and reports.
    fn transport_name(&self) -> &'static str;
}
