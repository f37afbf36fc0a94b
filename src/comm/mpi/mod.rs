//! MPI communicator through rsmpi (feature `mpi`).
//!
//! Binaries initialise MPI exactly once, explicitly, with [`init`] (or wrap a
//! [`Universe`] they initialised themselves with [`MpiComm::world`]); library
//! code never initialises MPI on its own. Under `mpirun` the world holds every
//! launched process; started without `mpirun` the program is a one-rank world
//! (MPI singleton).
//!
//! Every receive first probes the incoming message (`MPI_Improbe`) and checks
//! its size: a mismatch is drained and reported as [`Error::Comm`] instead of
//! the MPI truncation error that would abort the job.
//!
//! Every operation is started non-blocking and completed under the deadline
//! of the communicator's [`Watch`] (see [`liveness`]): a peer that died,
//! froze or dropped off the network is named within seconds, and the job
//! ends with exit code [`PEER_TIMEOUT_EXIT_CODE`], instead of waiting
//! forever.
//!
//! ```no_run
//! use ringsgd::collectives::{Algorithm, Allreducer};
//! use ringsgd::comm::Communicator;
//!
//! let comm = ringsgd::comm::mpi::init()?;
//! let mut grad = vec![comm.rank() as f32; 1000];
//! Allreducer::new(Algorithm::Ring).allreduce_mean(&comm, &mut grad)?;
//! # Ok::<(), ringsgd::Error>(())
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::point_to_point::Message;
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::{Communicator as _, CommunicatorCollectives, Destination, Root, Source};
use mpi::Threading;

use super::watch::{LongestWaits, Watch};
use super::{check_broadcast_headers, check_peer, length_mismatch, Communicator, ExchangeBody};
use crate::error::{Error, Result};

mod exchange;
pub mod liveness;

pub use liveness::PEER_TIMEOUT_EXIT_CODE;
use liveness::{Liveness, Op};

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

/// A [`Communicator`] over an MPI communicator (the world or a
/// sub-communicator).
///
/// Not `Send`: MPI is used from the thread that initialised it.
pub struct MpiComm {
    comm: SimpleCommunicator,
    /// Duplicate of `comm` for [`Communicator::exchange`]: its messages can
    /// never match the others.
    xcomm: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Deadlines, liveness checks, host names (its communicator is freed
    /// before MPI is finalised: fields drop in order).
    live: Liveness,
    /// Two receive segments for the pipelined reduction steps, and the send
    /// copy of the native allreduce (MPI_IN_PLACE is not exposed by rsmpi).
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
        let xcomm = comm.duplicate();
        MpiComm {
            comm,
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

    /// Probes the next message from `src`; if its size is `buf.len()`
    /// elements of `T`, returns the matched message for receiving into
    /// `buf`; otherwise receives it into a throw-away buffer (so the sender
    /// is not left hanging) and returns the error.
    fn probe_checked<T: Equivalence>(
        &self,
        src: i32,
        expected: usize,
        what: &str,
    ) -> Result<Message> {
        let peer = Some(src as usize);
        let (msg, status) = self.live.poll(Op::Recv, peer, || {
            self.comm.process_at_rank(src).immediate_matched_probe()
        });
        let count = status.count(T::equivalent_datatype());
        if usize::try_from(count).ok() == Some(expected) {
            return Ok(msg);
        }
        let bytes = status.count(u8::equivalent_datatype()).max(0) as usize;
        let mut sink = vec![0u8; bytes];
        mpi::request::scope(|scope| {
            let req = msg.immediate_matched_receive_into(scope, &mut sink[..]);
            self.live.wait(Op::Recv, peer, req);
        });
        Err(self.comm_err(format!(
            "{what}: expected {expected} {} from rank {src}, but the message holds {bytes} byte(s)",
            std::any::type_name::<T>()
        )))
    }

    fn recv_checked<T: Equivalence>(&self, src: i32, buf: &mut [T], what: &str) -> Result<()>
    where
        [T]: mpi::datatype::BufferMut,
    {
        let msg = self.probe_checked::<T>(src, buf.len(), what)?;
        mpi::request::scope(|scope| {
            let req = msg.immediate_matched_receive_into(scope, buf);
            self.live.wait(Op::Recv, Some(src as usize), req);
        });
        Ok(())
    }

    fn send_any<T: Equivalence>(&self, dest: usize, data: &[T], what: &str) -> Result<()>
    where
        [T]: mpi::datatype::Buffer,
    {
        let dest = self.peer_rank(dest, what)?;
        mpi_count(data.len(), what)?;
        mpi::request::scope(|scope| {
            let req = self.comm.process_at_rank(dest).immediate_send(scope, data);
            self.live.wait(Op::Send, Some(dest as usize), req);
        });
        Ok(())
    }

    fn recv_any<T: Equivalence>(&self, src: usize, buf: &mut [T], what: &str) -> Result<()>
    where
        [T]: mpi::datatype::BufferMut,
    {
        let src = self.peer_rank(src, what)?;
        self.recv_checked(src, buf, what)
    }

    /// `MPI_Sendrecv` with a checked receive: post the send, probe and
    /// receive, then complete the send.
    fn sendrecv_any<T: Equivalence>(
        &self,
        send: &[T],
        dest: usize,
        recv: &mut [T],
        src: usize,
        what: &str,
    ) -> Result<()>
    where
        [T]: mpi::datatype::Buffer + mpi::datatype::BufferMut,
    {
        let dest = self.peer_rank(dest, what)?;
        let src = self.peer_rank(src, what)?;
        mpi_count(send.len(), what)?;
        mpi::request::scope(|scope| {
            let sreq = self.comm.process_at_rank(dest).immediate_send(scope, send);
            let res = self.recv_checked(src, recv, what);
            self.live.wait(Op::Sendrecv, Some(dest as usize), sreq);
            res
        })
    }

    /// `MPI_Iallgather` of `mine` into `all`, under the deadline.
    fn allgather_u64(&self, mine: &[u64], all: &mut [u64]) {
        mpi::request::scope(|scope| {
            let req = self.comm.immediate_all_gather_into(scope, mine, all);
            self.live.wait(Op::Allgather, None, req);
        });
    }

    /// `MPI_Ibcast` of `buf` from `root`, under the deadline.
    fn broadcast_into<T: Equivalence>(&self, root: usize, buf: &mut [T])
    where
        [T]: mpi::datatype::BufferMut,
    {
        mpi::request::scope(|scope| {
            let req = self
                .comm
                .process_at_rank(root as i32)
                .immediate_broadcast_into(scope, buf);
            let peer = (root != self.rank).then_some(root);
            self.live.wait(Op::Broadcast, peer, req);
        });
    }

    /// Agrees on (length, root) with every rank before a broadcast.
    fn broadcast_check(&self, op: &str, root: usize, len: usize) -> Result<()> {
        let mine = [len as u64, root as u64];
        let mut all = vec![0u64; 2 * self.size];
        self.allgather_u64(&mine, &mut all);
        check_broadcast_headers(self, op, root, &all)?;
        mpi_count(len, op)?;
        Ok(())
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send_f32(&self, dest: usize, data: &[f32]) -> Result<()> {
        self.send_any(dest, data, "send_f32")
    }

    fn recv_f32(&self, src: usize, buf: &mut [f32]) -> Result<()> {
        self.recv_any(src, buf, "recv_f32")
    }

    fn sendrecv_f32(&self, send: &[f32], dest: usize, recv: &mut [f32], src: usize) -> Result<()> {
        self.sendrecv_any(send, dest, recv, src, "sendrecv_f32")
    }

    fn send_bytes(&self, dest: usize, data: &[u8]) -> Result<()> {
        self.send_any(dest, data, "send_bytes")
    }

    fn recv_bytes(&self, src: usize, buf: &mut [u8]) -> Result<()> {
        self.recv_any(src, buf, "recv_bytes")
    }

    fn sendrecv_bytes(&self, send: &[u8], dest: usize, recv: &mut [u8], src: usize) -> Result<()> {
        self.sendrecv_any(send, dest, recv, src, "sendrecv_bytes")
    }

    fn barrier(&self) -> Result<()> {
        self.live
            .wait(Op::Barrier, None, self.comm.immediate_barrier());
        Ok(())
    }

    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()> {
        self.broadcast_check("broadcast_f32", root, buf.len())?;
        self.broadcast_into(root, buf);
        Ok(())
    }

    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<()> {
        self.broadcast_check("broadcast_bytes", root, buf.len())?;
        self.broadcast_into(root, buf);
        Ok(())
    }

    /// `MPI_Allreduce(MPI_SUM)`, after an `MPI_Allgather` of the lengths.
    /// rsmpi does not expose `MPI_IN_PLACE`, so `buf` is first copied into a
    /// reused scratch buffer that serves as the send buffer.
    fn native_allreduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        mpi_count(buf.len(), "native allreduce")?;
        let mine = [buf.len() as u64];
        let mut lens = vec![0u64; self.size];
        self.allgather_u64(&mine, &mut lens);
        if let Some(e) = length_mismatch("native allreduce", &lens) {
            return Err(e);
        }
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

    fn exchange<'a>(&self, body: &mut ExchangeBody<'_, 'a>) -> Result<()> {
        mpi::request::scope(|scope| {
            let mut x = exchange::MpiExchange::new(self, scope);
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
