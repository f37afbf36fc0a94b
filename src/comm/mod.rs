//! Communicators: who am I, how many are we, and how do I move bytes to a peer.
//!
//! The collective algorithms in [`crate::collectives`] are written once
//! against the [`Communicator`] trait and run over either implementation:
//!
//! * `mpi` (feature `mpi`, on by default): MPI point-to-point through rsmpi.
//!   Works under `mpirun` and standalone as a one-rank world.
//! * [`local`]: N ranks as threads in one process, for tests, laptops and
//!   benchmarks of the algorithms without MPI.
//!
//! Every method must be called from one thread per rank (MPI is used from a
//! single thread; compute runs in the rayon pool). All are blocking except
//! what a body does inside [`Communicator::exchange`]: non-blocking tagged
//! sends and receives ([`exchange`]), which the ring allreduce and the
//! overlap of communication with backward are built on.
//!
//! The trait is object safe: algorithms take `&dyn Communicator`.
//!
//! ```
//! use ringsgd::comm::{local, Communicator};
//!
//! // Two in-process ranks swap a value around the ring.
//! let got = local::run_ranks(2, |comm| {
//!     let right = (comm.rank() + 1) % comm.size();
//!     let left = (comm.rank() + comm.size() - 1) % comm.size();
//!     let mine = [comm.rank() as f32];
//!     let mut theirs = [0.0f32];
//!     comm.sendrecv_f32(&mine, right, &mut theirs, left)?;
//!     Ok(theirs[0])
//! })?;
//! assert_eq!(got, vec![1.0, 0.0]);
//! # Ok::<(), ringsgd::Error>(())
//! ```

use crate::error::{Error, Result};

pub mod exchange;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod watch;

use exchange::Exchange;
use watch::{LongestWaits, Watch};

/// The body of a [`Communicator::exchange`]: posts, tests and waits for
/// non-blocking operations on buffers that live for `'a`.
pub type ExchangeBody<'f, 'a> = dyn FnMut(&mut dyn Exchange<'a>) -> Result<()> + 'f;

/// A group of `size()` ranks that can exchange messages.
///
/// Messages between a pair of ranks are delivered in the order they were sent.
/// A receive whose buffer length differs from the length of the message that
/// arrives is an [`Error::Comm`], never a truncation or a
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
    ///
    /// Every rank first checks that all ranks passed the same `root` and the
    /// same length; a disagreement is an [`Error::RankMismatch`] on every
    /// rank and nothing is copied.
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()>;

    /// Byte-slice variant of [`Communicator::broadcast_f32`].
    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<()>;

    /// The transport's own sum-allreduce (`MPI_Allreduce` for MPI), kept as a
    /// baseline for the hand-written algorithms. Ranks holding different
    /// lengths get an [`Error::RankMismatch`] on every rank.
    fn native_allreduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;

    /// Runs `body` with an [`Exchange`]: non-blocking sends and receives
    /// (see [`exchange`]) that `body` posts, tests and waits for while it
    /// does other work. Every operation posted is complete when this
    /// returns; if `body` fails, its pending receives are cancelled and its
    /// sends completed, and its error is returned.
    fn exchange<'a>(&self, body: &mut ExchangeBody<'_, 'a>) -> Result<()>;

    /// A short human-readable name of the transport, for logs and reports.
    fn transport_name(&self) -> &'static str;

    /// Sets (`Some`) or clears (`None`, the default: wait as long as it
    /// takes) the deadline of every blocking call of this rank, and what
    /// the rank is doing (see [`watch`]). What happens at the deadline is
    /// the transport's: the MPI communicator checks which peers still
    /// answer and ends the job naming those that do not; the in-process one
    /// returns an [`Error::PeerTimeout`].
    fn set_watch(&self, watch: Option<Watch>);

    /// The longest single wait for peers in each phase while a watch was
    /// set: the margin a healthy run leaves below its deadlines.
    fn longest_waits(&self) -> LongestWaits;

    /// The name of the host that runs `rank` (for messages; `"?"` for a
    /// rank out of range).
    fn host_name(&self, rank: usize) -> String;
}

/// Checks that `peer` is a valid rank of `comm` (as `what`, e.g. "dest").
pub(crate) fn check_peer(comm: &dyn Communicator, peer: usize, what: &str) -> Result<()> {
    if peer < comm.size() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} rank {peer} is out of range: the communicator has {} rank(s)",
            comm.size()
        )))
    }
}

/// Number of messages a segmented transfer of `len` elements uses: at least
/// one, so that an empty transfer is still matched and checked.
pub(crate) fn segment_count(len: usize, segment_len: usize) -> usize {
    if segment_len == 0 {
        1
    } else {
        len.div_ceil(segment_len).max(1)
    }
}

/// Element range of segment `k` of a transfer of `len` elements.
pub(crate) fn segment_range(len: usize, segment_len: usize, k: usize) -> std::ops::Range<usize> {
    if segment_len == 0 {
        return 0..len;
    }
    let start = (k * segment_len).min(len);
    let end = (start + segment_len).min(len);
    start..end
}

/// Checks a broadcast's `(length, root)` headers gathered from every rank,
/// flat (`all[2r]`, `all[2r + 1]` from rank `r`): every rank must pass the
/// same, and the root must be a rank of `comm`.
pub(crate) fn check_broadcast_headers(
    comm: &dyn Communicator,
    op: &str,
    root: usize,
    all: &[u64],
) -> Result<()> {
    let headers: Vec<(u64, u64)> = all.chunks_exact(2).map(|h| (h[0], h[1])).collect();
    if let Some(e) = broadcast_mismatch(op, &headers) {
        return Err(e);
    }
    check_peer(comm, root, &format!("{op} root"))
}

/// Builds the [`Error::RankMismatch`] raised when ranks disagree on the
/// length (and root) of a broadcast. `headers[r] = (len, root)` of rank `r`.
fn broadcast_mismatch(op: &str, headers: &[(u64, u64)]) -> Option<Error> {
    rank_mismatch(
        op,
        "different lengths or roots",
        "; ",
        headers,
        |(len, root)| format!("length {len}, root {root}"),
    )
}

/// Builds the [`Error::RankMismatch`] raised when ranks pass buffers of
/// different lengths to a native allreduce.
pub(crate) fn length_mismatch(op: &str, lens: &[u64]) -> Option<Error> {
    rank_mismatch(op, "buffers of different lengths", ", ", lens, |l| {
        l.to_string()
    })
}

/// `None` when every rank passed the same value (`values[r]` from rank
/// `r`), else the [`Error::RankMismatch`] naming what `what` differs and
/// each rank's value, shown by `show` and joined by `sep`.
fn rank_mismatch<T: PartialEq>(
    op: &str,
    what: &str,
    sep: &str,
    values: &[T],
    show: impl Fn(&T) -> String,
) -> Option<Error> {
    let first = values.first()?;
    if values.iter().all(|v| v == first) {
        return None;
    }
    let detail: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(r, v)| format!("rank {r}: {}", show(v)))
        .collect();
    Some(Error::RankMismatch(format!(
        "{op}: ranks passed {what} ({})",
        detail.join(sep)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_message_exactly_once() {
        for len in [0usize, 1, 5, 8, 9, 100] {
            for seg in [0usize, 1, 3, 8, 1000] {
                let n = segment_count(len, seg);
                assert!(n >= 1);
                let mut next = 0;
                for k in 0..n {
                    let r = segment_range(len, seg, k);
                    assert_eq!(r.start, next, "len {len} seg {seg} k {k}");
                    next = r.end;
                }
                assert_eq!(next, len, "len {len} seg {seg}");
            }
        }
    }

    #[test]
    fn mismatch_messages_name_every_rank() {
        assert!(length_mismatch("x", &[3, 3, 3]).is_none());
        let e = length_mismatch("allreduce", &[3, 4, 3])
            .unwrap()
            .to_string();
        assert!(e.contains("rank 1: 4"), "{e}");
        assert!(broadcast_mismatch("bcast", &[(2, 0), (2, 0)]).is_none());
        let e = broadcast_mismatch("bcast", &[(2, 0), (2, 1)])
            .unwrap()
            .to_string();
        assert!(e.contains("rank 1: length 2, root 1"), "{e}");
    }
}
