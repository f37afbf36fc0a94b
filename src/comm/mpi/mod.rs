//! MPI transport through rsmpi (feature `mpi`).
//!
//! Binaries initialise MPI exactly once, explicitly, with [`init`] (or wrap a
//! [`Universe`] they initialised themselves with [`MpiComm::world`]); library
//! code never initialises MPI on its own. Under `mpirun` the world holds every
//! launched process; started without `mpirun` the program is a one-rank world
//! (MPI singleton).
//!
//! Each channel of [`Op`] is a duplicate of the communicator. A receive whose
//! length the ranks have not agreed on
//! ([`Exchange::recv_checked`](super::exchange::Exchange::recv_checked),
//! used by every typed receive of [`Communicator`](super::Communicator))
//! first probes the incoming message (`MPI_Improbe`) and checks its size: a
//! mismatch is drained and reported as [`Error::Comm`] instead of the MPI
//! truncation error that would abort the job.
//!
//! Every operation is started non-blocking and completed under the deadline
//! of the communicator's [`Watch`] (see [`liveness`]): a peer that died,
//! froze or dropped off the network is named within seconds, and the job
//! ends with exit code [`PEER_TIMEOUT_EXIT_CODE`], instead of waiting
//! forever.
//!
//! ```no_run
//! use ringsgd::collectives::{Algorithm, Allreducer};
//! use ringsgd::comm::Transport;
//!
//! let comm = ringsgd::comm::mpi::init()?;
//! let mut grad = vec![comm.rank() as f32; 1000];
//! Allreducer::new(Algorithm::Ring).allreduce_mean(&comm, &mut grad)?;
//! # Ok::<(), ringsgd::Error>(())
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use mpi::environment::Universe;
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::{Communicator as _, CommunicatorCollectives};
use mpi::Threading;

use super::communicator::agree_lengths;
use super::watch::{LongestWaits, Watch};
use super::{check_peer, Channel, ExchangeBody, Op, Transport};
use crate::error::{Error, Result};

mod exchange;
pub mod liveness;

use liveness::Liveness;
pub use liveness::PEER_TIMEOUT_EXIT_CODE;

/// Initialises MPI and returns the world communicator.
///
/// MPI stays initialised as long as the returned communicator (or any
/// communicator split from it) is alive, and is finalised when the last one
/// is dropped. Call it once per process, from the main thread; a second call
/// is an [`Error::Comm`] (MPI cannot be initialised twice). MPI is requested
/// at thread level `Funneled`: only the thread that called `init` talks to
/// MPI, compute threads (rayon) do not.
pub fn init() -> Result<MpiComm> {
    let (universe, level) =
        mpi::initialize_with_threading(Threading::Funneled).ok_or_else(|| Error::Comm {
            rank: 0,
            msg: "MPI is already initialised in this process (ringsgd::comm::mpi::init may be \
                  called only once)"
                .to_string(),
        })?;
    let world = universe.world();
    let comm = MpiComm::new(world, Some(Rc::new(universe)));
    log::debug!(
        "rank {}: MPI initialised, world size {}, thread level {:?}",
        comm.rank,
        comm.size,
        level
    );
    Ok(comm)
}

/// A [`Transport`] over an MPI communicator (the world or a
/// sub-communicator).
///
/// Not `Send`: MPI is used from the thread that initialised it.
pub struct MpiComm {
    /// Point-to-point messages, and the native allreduce.
    comm: SimpleCommunicator,
    /// Duplicates of `comm`: the collectives written on top of the
    /// transport, and the callers' exchanges (their messages can never
    /// match the others').
    ccomm: SimpleCommunicator,
    xcomm: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Deadlines, liveness checks, host names (its communicator is freed
    /// before MPI is finalised: fields drop in order).
    live: Liveness,
    /// The send copy of the native allreduce (MPI_IN_PLACE is not exposed
    /// by rsmpi).
    scratch: RefCell<Vec<f32>>,
    /// Keeps MPI initialised while any communicator made by [`init`] lives.
    /// Last: dropping it finalises MPI.
    _universe: Option<Rc<Universe>>,
}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

/// Messages are counted in `i32` by MPI.
fn mpi_count(len: usize, what: &str) -> Result<i32> {
    i32::try_from(len).map_err(|_| {
        Error::invalid(format!(
            "{what}: {len} elements exceed MPI's message size limit of {} elements",
            i32::MAX
        ))
    })
}

impl MpiComm {
    fn new(comm: SimpleCommunicator, universe: Option<Rc<Universe>>) -> MpiComm {
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        let live = Liveness::new(&comm);
        let ccomm = comm.duplicate();
        let xcomm = comm.duplicate();
        MpiComm {
            comm,
            ccomm,
            xcomm,
            rank,
            size,
            _universe: universe,
            scratch: RefCell::new(Vec::new()),
            live,
        }
    }

    /// The world communicator of a [`Universe`] the program initialised
    /// itself (with `mpi::initialize`). The caller keeps `universe` alive
    /// while this communicator is in use; prefer [`init`], which does that
    /// for you.
    pub fn world(universe: &Universe) -> MpiComm {
        MpiComm::new(universe.world(), None)
    }

    /// Splits this communicator into sub-communicators, one per distinct
    /// `color`; ranks keep their relative order. Collective: every rank
    /// calls it. Ranks passing `None` get `None`.
    pub fn split(&self, color: Option<u32>) -> Result<Option<MpiComm>> {
        let color = match color {
            None => Color::undefined(),
            Some(c) => Color::with_value(mpi_count(c as usize, "MpiComm::split color")?),
        };
        Ok(self
            .comm
            .split_by_color(color)
            .map(|c| MpiComm::new(c, self._universe.clone())))
    }

    /// The underlying rsmpi communicator, for MPI calls this crate does not
    /// wrap (e.g. benchmarking `MPI_Allreduce` out of place).
    pub fn raw(&self) -> &SimpleCommunicator {
        &self.comm
    }

    /// Sets what to do with the error of a peer timeout before the job is
    /// aborted (binaries print it). Without one, it is logged with
    /// `log::error!`.
    pub fn on_peer_timeout(&self, report: impl Fn(&Error) + 'static) {
        self.live.set_on_timeout(Some(Box::new(report)));
    }

    /// Aborts every process of the job (`MPI_Abort`). Binaries call this
    /// when a rank fails alone, so that the other ranks do not wait for it.
    pub fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    fn comm_err(&self, msg: String) -> Error {
        Error::Comm {
            rank: self.rank,
            msg,
        }
    }

    fn peer_rank(&self, peer: usize, what: &str) -> Result<i32> {
        check_peer(self, peer, what)?;
        Ok(peer as i32)
    }

    /// The MPI communicator of a channel (see [`Op`]).
    fn channel(&self, ch: Channel) -> &SimpleCommunicator {
        match ch {
            Channel::P2p => &self.comm,
            Channel::Coll => &self.ccomm,
            Channel::Exchange => &self.xcomm,
        }
    }
}

impl Transport for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    /// `MPI_Allreduce(MPI_SUM)`, after the ranks agree on the length.
    /// rsmpi does not expose `MPI_IN_PLACE`, so `buf` is first copied into a
    /// reused scratch buffer that serves as the send buffer.
    fn native_allreduce_sum_f32(&self, buf: &mut [f32]) -> Option<Result<()>> {
        Some(self.mpi_allreduce(buf))
    }

    fn exchange<'a>(&self, op: Op, body: &mut ExchangeBody<'_, 'a>) -> Result<()> {
        mpi::request::scope(|scope| {
            let mut x = exchange::MpiExchange::new(self, op, scope);
            let res = body(&mut x);
            let done = x.finish(res.is_err());
            res.and(done)
        })
    }

    fn transport_name(&self) -> &'static str {
        "MPI"
    }

    fn set_watch(&self, watch: Option<Watch>) {
        self.live.set_watch(watch);
    }

    fn longest_waits(&self) -> LongestWaits {
        self.live.longest_waits()
    }

    fn host_name(&self, rank: usize) -> String {
        self.live.host(rank)
    }
}

impl MpiComm {
    fn mpi_allreduce(&self, buf: &mut [f32]) -> Result<()> {
        mpi_count(buf.len(), "native allreduce")?;
        agree_lengths(self, Op::Allreduce, "native allreduce", buf.len())?;
        let mut scratch = self.scratch.try_borrow_mut().map_err(|_| {
            self.comm_err("native_allreduce_sum_f32 called re-entrantly".to_string())
        })?;
        scratch.clear();
        scratch.extend_from_slice(buf);
        mpi::request::scope(|scope| {
            let req = self.comm.immediate_all_reduce_into(
                scope,
                &scratch[..],
                buf,
                mpi::collective::SystemOperation::sum(),
            );
            self.live.wait(Op::Allreduce, None, req);
        });
        Ok(())
    }
}
