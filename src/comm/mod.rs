//! Transports and what a rank does with them: who am I, how many are we,
//! and how do I move bytes to a peer.
//!
//! A transport implements [`Transport`], one small object-safe trait with
//! only what truly differs per transport: rank and size, the posted
//! non-blocking [`exchange`] of byte messages, the transport's own
//! allreduce where it has one (`MPI_Allreduce`), and deadlines and names
//! for reports. Everything else is written once on top, for every
//! transport, in [`Communicator`] (blanket-implemented for every
//! `T: Transport`, `dyn Transport` included): typed point-to-point messages
//! of any [`Element`] type (`f32`, bytes, ...; cast to bytes without a
//! copy), send-receive, broadcast and barrier.
//!
//! Two transports:
//!
//! * `mpi` (feature `mpi`, on by default): MPI point-to-point through rsmpi.
//!   Works under `mpirun` and standalone as a one-rank world.
//! * [`local`]: N ranks as threads in one process, for tests, laptops and
//!   benchmarks of the algorithms without MPI.
//!
//! Every call must come from one thread per rank (MPI is used from a single
//! thread; compute runs in the rayon pool). All are blocking except what a
//! body does inside [`Transport::exchange`]: non-blocking tagged sends and
//! receives ([`exchange`]), which the ring allreduce and the overlap of
//! communication with backward are built on.
//!
//! Algorithms take `&dyn Transport`.
//!
//! ```
//! use ringsgd::comm::{local, Communicator, Transport};
//!
//! // Two in-process ranks swap a value around the ring.
//! let got = local::run_ranks(2, |comm| {
//!     let right = (comm.rank() + 1) % comm.size();
//!     let left = (comm.rank() + comm.size() - 1) % comm.size();
//!     let mine = [comm.rank() as f32];
//!     let mut theirs = [0.0f32];
//!     comm.sendrecv(&mine, right, &mut theirs, left)?;
//!     Ok(theirs[0])
//! })?;
//! assert_eq!(got, vec![1.0, 0.0]);
//! # Ok::<(), ringsgd::Error>(())
//! ```

use std::fmt;

use crate::error::{Error, Result};

pub(crate) mod communicator;
pub mod exchange;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod watch;

pub use communicator::{Communicator, Element};
use exchange::Exchange;
use watch::{LongestWaits, Watch};

/// The body of a [`Transport::exchange`]: posts, tests and waits for
/// non-blocking operations on buffers that live for `'a`.
pub type ExchangeBody<'f, 'a> = dyn FnMut(&mut dyn Exchange<'a>) -> Result<()> + 'f;

/// What a rank is doing in an [`exchange`](Transport::exchange): named in
/// timeout reports, and it picks the exchange's channel.
///
/// Each channel is a separate message space (its own MPI communicator, its
/// own in-process queues), so that the messages of one can never match the
/// receives of another: [`Op::Exchange`] for the caller's own exchanges
/// (the ring allreduce, the overlapped step), [`Op::Send`], [`Op::Recv`]
/// and [`Op::Sendrecv`] for [`Communicator`]'s point-to-point messages, and
/// the collectives ([`Op::Barrier`], [`Op::Broadcast`], [`Op::Allgather`],
/// [`Op::Allreduce`]) for those written on top of the transport, so that a
/// barrier can never swallow a user's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A point-to-point send.
    Send,
    /// A point-to-point receive.
    Recv,
    /// A send and a receive at once (one step of a ring).
    Sendrecv,
    /// A barrier.
    Barrier,
    /// A broadcast, or its agreement on length and root.
    Broadcast,
    /// An allgather of small headers.
    Allgather,
    /// An allreduce (the transport's own, or its length agreement).
    Allreduce,
    /// The caller's own exchange of segments.
    Exchange,
}

/// The separate message spaces of a transport (see [`Op`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Channel {
    /// [`Communicator`]'s point-to-point messages.
    P2p = 0,
    /// The collectives written on top of the transport.
    Coll = 1,
    /// The caller's exchanges.
    Exchange = 2,
}

/// Number of [`Channel`]s.
pub(crate) const CHANNELS: usize = 3;

impl Op {
    /// Every operation, in a fixed order (their codes on the wire).
    pub const ALL: [Op; 8] = [
        Op::Send,
        Op::Recv,
        Op::Sendrecv,
        Op::Barrier,
        Op::Broadcast,
        Op::Allgather,
        Op::Allreduce,
        Op::Exchange,
    ];

    /// The channel this operation's messages travel on.
    pub(crate) fn channel(self) -> Channel {
        match self {
            Op::Send | Op::Recv | Op::Sendrecv => Channel::P2p,
            Op::Barrier | Op::Broadcast | Op::Allgather | Op::Allreduce => Channel::Coll,
            Op::Exchange => Channel::Exchange,
        }
    }

    /// A stable small code (for liveness answers on the wire).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn code(self) -> u64 {
        Op::ALL.iter().position(|o| *o == self).unwrap_or(0) as u64
    }

    /// The operation of an [`Op::code`], if valid.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) fn from_code(c: u64) -> Option<Op> {
        Op::ALL.get(usize::try_from(c).ok()?).copied()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Send => "a send",
            Op::Recv => "a receive",
            Op::Sendrecv => "a send-receive",
            Op::Barrier => "a barrier",
            Op::Broadcast => "a broadcast",
            Op::Allgather => "an allgather",
            Op::Allreduce => "an allreduce",
            Op::Exchange => "an exchange of segments",
        })
    }
}

/// A group of `size()` ranks that can exchange byte messages: the one trait
/// a transport implements. Object safe; [`Communicator`] adds the typed
/// messages and the collectives, for every transport alike.
///
/// Messages between a pair of ranks, on one channel and tag, are delivered
/// in the order they were sent.
pub trait Transport {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group (>= 1).
    fn size(&self) -> usize;

    /// Runs `body` with an [`Exchange`]: non-blocking sends and receives
    /// (see [`exchange`]) that `body` posts, tests and waits for while it
    /// does other work, on the channel of `op` (see [`Op`]), which also
    /// names the wait in timeout reports. Every operation posted is
    /// complete when this returns; if `body` fails, its pending receives
    /// are cancelled and its sends completed, and its error is returned.
    fn exchange<'a>(&self, op: Op, body: &mut ExchangeBody<'_, 'a>) -> Result<()>;

    /// The transport's own sum-allreduce (`MPI_Allreduce` for MPI), kept as
    /// a baseline for the hand-written algorithms: `None` (the default)
    /// when the transport has none, and `buf` is untouched. Ranks holding
    /// different lengths get an [`Error::RankMismatch`] on every rank.
    fn native_allreduce_sum_f32(&self, buf: &mut [f32]) -> Option<Result<()>> {
        let _ = buf;
        None
    }

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
pub(crate) fn check_peer<T: Transport + ?Sized>(comm: &T, peer: usize, what: &str) -> Result<()> {
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
pub(crate) fn check_broadcast_headers<T: Transport + ?Sized>(
    comm: &T,
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
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
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
