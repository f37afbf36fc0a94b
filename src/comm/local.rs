//! In-process communicator: `n` ranks as threads of one process.
//!
//! Every ordered pair of ranks is joined by channels (one for point-to-point
//! messages, one for the communicator's own collectives, so that a
//! [`barrier`](Communicator::barrier) can never swallow a user message). Sends
//! are buffered and never block; message buffers are handed back to the
//! sender after the receiver has consumed them, so a warm communicator does
//! not allocate.
//!
//! Failure semantics: when a [`LocalComm`] is dropped (its rank returned,
//! failed or panicked), every pending or future receive from it on the other
//! ranks fails with [`Error::Comm`] once the messages it sent before leaving
//! are consumed, and sends to it fail too. Errors therefore cascade instead
//! of leaving ranks waiting forever. [`run_ranks`] reports the root cause,
//! not the cascade.
//!
//! ```
//! use ringsgd::collectives::{Algorithm, Allreducer};
//! use ringsgd::comm::{local, Communicator};
//!
//! let sums = local::run_ranks(3, |comm| {
//!     let mut grad = vec![comm.rank() as f32; 5];
//!     Allreducer::new(Algorithm::Ring).allreduce_sum(&comm, &mut grad)?;
//!     Ok(grad)
//! })?;
//! assert!(sums.iter().all(|g| g == &vec![3.0; 5]));
//! # Ok::<(), ringsgd::Error>(())
//! ```

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use super::exchange::{check_tag, Exchange, Ticket};
use super::watch::{LongestWaits, Watch};
use super::{check_broadcast_headers, check_peer, length_mismatch, Communicator, ExchangeBody};
use crate::error::{Error, Result};

/// One message between two in-process ranks.
enum Payload {
    F32(Vec<f32>),
    Bytes(Vec<u8>),
    /// Small headers of the communicator's own collectives.
    U64(Vec<u64>),
    /// Sent by the coordinator of a collective that failed, so that every
    /// rank returns the same error instead of waiting.
    Fail(String),
}

impl Payload {
    fn describe(&self) -> String {
        match self {
            Payload::F32(v) => format!("{} f32 value(s)", v.len()),
            Payload::Bytes(v) => format!("{} byte(s)", v.len()),
            Payload::U64(v) => format!("a {}-word collective header", v.len()),
            Payload::Fail(_) => "a failure notice".to_string(),
        }
    }
}

/// An exchange message: its tag and bytes.
type Tagged = (u32, Vec<u8>);

/// State shared by the ranks of one in-process world.
struct Shared {
    /// `lost_peer[r]` is set when rank `r` saw a peer leave. [`run_ranks`]
    /// uses it to tell cascade errors from root causes.
    lost_peer: Vec<AtomicBool>,
}

/// One rank of an in-process world created by [`LocalComm::world`].
///
/// `LocalComm` is `Send` (move it to the thread that plays the rank) but not
/// `Sync`: like an MPI communicator it is used by one thread at a time.
pub struct LocalComm {
    rank: usize,
    size: usize,
    /// `p2p_tx[d]`: point-to-point messages to rank `d`.
    p2p_tx: Vec<Sender<Payload>>,
    /// `p2p_rx[s]`: point-to-point messages from rank `s`.
    p2p_rx: Vec<Receiver<Payload>>,
    /// Same for the communicator's own collectives.
    coll_tx: Vec<Sender<Payload>>,
    coll_rx: Vec<Receiver<Payload>>,
    /// Same for [`Communicator::exchange`]: tagged messages.
    xch_tx: Vec<Sender<Tagged>>,
    xch_rx: Vec<Receiver<Tagged>>,
    /// `unexpected[s]`: exchange messages from rank `s` that arrived before
    /// their receive was posted, in arrival order.
    unexpected: RefCell<Vec<VecDeque<Tagged>>>,
    /// `recycle_in[d]`: our message buffers that rank `d` has consumed.
    recycle_in: Vec<RecycleIn>,
    /// `recycle_out[s]`: hands rank `s`'s consumed buffers back to it.
    recycle_out: Vec<RecycleOut>,
    shared: Arc<Shared>,
    timeout: Option<Duration>,
    /// Deadline set by [`Communicator::set_watch`]; takes precedence over
    /// `timeout`.
    watch: Cell<Option<Watch>>,
    longest: RefCell<LongestWaits>,
}

impl std::fmt::Debug for LocalComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalComm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Return path of consumed message buffers, one per buffer type.
struct Recycle<F, B> {
    f32s: F,
    bytes: B,
}

/// Consumed buffers coming back from a peer.
type RecycleIn = Recycle<Receiver<Vec<f32>>, Receiver<Vec<u8>>>;
/// Consumed buffers going back to a peer.
type RecycleOut = Recycle<Sender<Vec<f32>>, Sender<Vec<u8>>>;

/// Which channel set a message travels on.
#[derive(Clone, Copy)]
enum Lane {
    P2p,
    Coll,
}

impl LocalComm {
    /// Creates the `n` ranks of a new in-process world, rank `i` at index `i`.
    ///
    /// Move each one to its own thread (or use [`run_ranks`]).
    pub fn world(n: usize) -> Result<Vec<LocalComm>> {
        if n == 0 {
            return Err(Error::invalid(
                "LocalComm::world: the number of ranks must be at least 1, got 0",
            ));
        }
        let shared = Arc::new(Shared {
            lost_peer: (0..n).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut p2p_tx: Vec<Vec<Sender<Payload>>> = (0..n).map(|_| Vec::new()).collect();
        let mut p2p_rx: Vec<Vec<Receiver<Payload>>> = (0..n).map(|_| Vec::new()).collect();
        let mut coll_tx: Vec<Vec<Sender<Payload>>> = (0..n).map(|_| Vec::new()).collect();
        let mut coll_rx: Vec<Vec<Receiver<Payload>>> = (0..n).map(|_| Vec::new()).collect();
        let mut xch_tx: Vec<Vec<Sender<Tagged>>> = (0..n).map(|_| Vec::new()).collect();
        let mut xch_rx: Vec<Vec<Receiver<Tagged>>> = (0..n).map(|_| Vec::new()).collect();
        let mut recycle_in: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        let mut recycle_out: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        // Outer loop over the sender, inner over the receiver: every vector
        // is filled in peer order, so index = peer rank.
        for s in 0..n {
            for d in 0..n {
                let (tx, rx) = channel();
                p2p_tx[s].push(tx);
                p2p_rx[d].push(rx);
                let (tx, rx) = channel();
                coll_tx[s].push(tx);
                coll_rx[d].push(rx);
                let (tx, rx) = channel();
                xch_tx[s].push(tx);
                xch_rx[d].push(rx);
                let (f32_tx, f32_rx) = channel();
                let (bytes_tx, bytes_rx) = channel();
                recycle_out[d].push(Recycle {
                    f32s: f32_tx,
                    bytes: bytes_tx,
                });
                recycle_in[s].push(Recycle {
                    f32s: f32_rx,
                    bytes: bytes_rx,
                });
            }
        }
        let mut comms = Vec::with_capacity(n);
        let parts = p2p_tx
            .into_iter()
            .zip(p2p_rx)
            .zip(coll_tx)
            .zip(coll_rx)
            .zip(recycle_in)
            .zip(recycle_out)
            .zip(xch_tx.into_iter().zip(xch_rx));
        for (
            rank,
            ((((((p2p_tx, p2p_rx), coll_tx), coll_rx), recycle_in), recycle_out), (xch_tx, xch_rx)),
        ) in parts.enumerate()
        {
            comms.push(LocalComm {
                rank,
                size: n,
                p2p_tx,
                p2p_rx,
                coll_tx,
                coll_rx,
                xch_tx,
                xch_rx,
                unexpected: RefCell::new(vec![VecDeque::new(); n]),
                recycle_in,
                recycle_out,
                shared: Arc::clone(&shared),
                timeout: None,
                watch: Cell::new(None),
                longest: RefCell::new(LongestWaits::default()),
            });
        }
        Ok(comms)
    }

    /// Makes every receive of this rank fail with [`Error::Comm`] after
    /// waiting `timeout` (`None`, the default: wait as long as the peer is
    /// alive). Useful in tests, to turn a deadlock into an error.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    fn comm_err(&self, msg: String) -> Error {
        Error::Comm {
            rank: self.rank,
            msg,
        }
    }

    fn peer_gone(&self, peer: usize) -> Error {
        self.shared.lost_peer[self.rank].store(true, Ordering::SeqCst);
        self.comm_err(format!(
            "rank {peer} has left: its LocalComm was dropped (the rank returned, failed or panicked)"
        ))
    }

    fn tx(&self, lane: Lane, dest: usize) -> &Sender<Payload> {
        match lane {
            Lane::P2p => &self.p2p_tx[dest],
            Lane::Coll => &self.coll_tx[dest],
        }
    }

    fn rx(&self, lane: Lane, src: usize) -> &Receiver<Payload> {
        match lane {
            Lane::P2p => &self.p2p_rx[src],
            Lane::Coll => &self.coll_rx[src],
        }
    }

    fn post(&self, lane: Lane, dest: usize, payload: Payload) -> Result<()> {
        self.tx(lane, dest)
            .send(payload)
            .map_err(|_| self.peer_gone(dest))
    }

    fn take(&self, lane: Lane, src: usize) -> Result<Payload> {
        let rx = self.rx(lane, src);
        if let Some(w) = self.watch.get() {
            let since = std::time::Instant::now();
            let got = rx.recv_timeout(w.timeout).map_err(|e| match e {
                RecvTimeoutError::Disconnected => self.peer_gone(src),
                RecvTimeoutError::Timeout => Error::PeerTimeout {
                    rank: self.rank,
                    host: "local".to_string(),
                    unresponsive: vec![src],
                    msg: format!(
                        "waited {:.1} s for rank {src} ({w}; deadline {:.1} s)",
                        since.elapsed().as_secs_f64(),
                        w.timeout.as_secs_f64()
                    ),
                },
            });
            self.longest.borrow_mut().record(w.phase, since.elapsed());
            return got;
        }
        match self.timeout {
            None => rx.recv().map_err(|_| self.peer_gone(src)),
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                RecvTimeoutError::Disconnected => self.peer_gone(src),
                RecvTimeoutError::Timeout => self.comm_err(format!(
                    "no message from rank {src} within {t:?} (deadlock, or a peer stuck elsewhere?)"
                )),
            }),
        }
    }

    /// A recycled f32 buffer previously sent to `dest`, or a new one.
    fn f32_buffer(&self, dest: usize) -> Vec<f32> {
        let mut v = self.recycle_in[dest].f32s.try_recv().unwrap_or_default();
        v.clear();
        v
    }

    fn bytes_buffer(&self, dest: usize) -> Vec<u8> {
        let mut v = self.recycle_in[dest].bytes.try_recv().unwrap_or_default();
        v.clear();
        v
    }

    /// Hands a consumed message buffer back to its sender (best effort: if
    /// the sender has left, the buffer is simply freed).
    fn give_back(&self, src: usize, payload: Payload) {
        let out = &self.recycle_out[src];
        match payload {
            Payload::F32(v) => drop(out.f32s.send(v)),
            Payload::Bytes(v) => drop(out.bytes.send(v)),
            Payload::U64(_) | Payload::Fail(_) => {}
        }
    }

    fn send_f32_on(&self, lane: Lane, dest: usize, data: &[f32]) -> Result<()> {
        let mut v = self.f32_buffer(dest);
        v.extend_from_slice(data);
        self.post(lane, dest, Payload::F32(v))
    }

    fn send_bytes_on(&self, lane: Lane, dest: usize, data: &[u8]) -> Result<()> {
        let mut v = self.bytes_buffer(dest);
        v.extend_from_slice(data);
        self.post(lane, dest, Payload::Bytes(v))
    }

    fn wrong_message(&self, src: usize, expected: String, got: &Payload) -> Error {
        if let Payload::Fail(msg) = got {
            return Error::RankMismatch(msg.clone());
        }
        self.comm_err(format!(
            "expected {expected} from rank {src}, got {}",
            got.describe()
        ))
    }

    fn recv_f32_on(&self, lane: Lane, src: usize, buf: &mut [f32]) -> Result<()> {
        let p = self.take(lane, src)?;
        let res = match &p {
            Payload::F32(v) if v.len() == buf.len() => {
                buf.copy_from_slice(v);
                Ok(())
            }
            other => Err(self.wrong_message(src, format!("{} f32 value(s)", buf.len()), other)),
        };
        self.give_back(src, p);
        res
    }

    fn recv_bytes_on(&self, lane: Lane, src: usize, buf: &mut [u8]) -> Result<()> {
        let p = self.take(lane, src)?;
        let res = match &p {
            Payload::Bytes(v) if v.len() == buf.len() => {
                buf.copy_from_slice(v);
                Ok(())
            }
            other => Err(self.wrong_message(src, format!("{} byte(s)", buf.len()), other)),
        };
        self.give_back(src, p);
        res
    }

    /// Allgather of a small header through rank 0 on the collective lane;
    /// returns `size * mine.len()` words in rank order.
    fn coll_allgather_u64(&self, mine: &[u64]) -> Result<Vec<u64>> {
        let k = mine.len();
        if self.rank == 0 {
            let mut all = Vec::with_capacity(k * self.size);
            all.extend_from_slice(mine);
            for src in 1..self.size {
                match self.take(Lane::Coll, src)? {
                    Payload::U64(v) if v.len() == k => all.extend_from_slice(&v),
                    other => {
                        return Err(self.wrong_message(
                            src,
                            format!("a {k}-word collective header"),
                            &other,
                        ))
                    }
                }
            }
            for dest in 1..self.size {
                self.post(Lane::Coll, dest, Payload::U64(all.clone()))?;
            }
            Ok(all)
        } else {
            self.post(Lane::Coll, 0, Payload::U64(mine.to_vec()))?;
            match self.take(Lane::Coll, 0)? {
                Payload::U64(v) if v.len() == k * self.size => Ok(v),
                other => Err(self.wrong_message(
                    0,
                    format!("a {}-word collective header", k * self.size),
                    &other,
                )),
            }
        }
    }

    /// Shared part of the two broadcasts: agree on (length, root).
    fn broadcast_check(&self, op: &str, root: usize, len: usize) -> Result<()> {
        let all = self.coll_allgather_u64(&[len as u64, root as u64])?;
        check_broadcast_headers(self, op, root, &all)
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send_f32(&self, dest: usize, data: &[f32]) -> Result<()> {
        check_peer(self, dest, "send_f32 destination")?;
        self.send_f32_on(Lane::P2p, dest, data)
    }

    fn recv_f32(&self, src: usize, buf: &mut [f32]) -> Result<()> {
        check_peer(self, src, "recv_f32 source")?;
        self.recv_f32_on(Lane::P2p, src, buf)
    }

    fn sendrecv_f32(&self, send: &[f32], dest: usize, recv: &mut [f32], src: usize) -> Result<()> {
        check_peer(self, dest, "sendrecv_f32 destination")?;
        check_peer(self, src, "sendrecv_f32 source")?;
        self.send_f32_on(Lane::P2p, dest, send)?;
        self.recv_f32_on(Lane::P2p, src, recv)
    }

    fn send_bytes(&self, dest: usize, data: &[u8]) -> Result<()> {
        check_peer(self, dest, "send_bytes destination")?;
        self.send_bytes_on(Lane::P2p, dest, data)
    }

    fn recv_bytes(&self, src: usize, buf: &mut [u8]) -> Result<()> {
        check_peer(self, src, "recv_bytes source")?;
        self.recv_bytes_on(Lane::P2p, src, buf)
    }

    fn sendrecv_bytes(&self, send: &[u8], dest: usize, recv: &mut [u8], src: usize) -> Result<()> {
        check_peer(self, dest, "sendrecv_bytes destination")?;
        check_peer(self, src, "sendrecv_bytes source")?;
        self.send_bytes_on(Lane::P2p, dest, send)?;
        self.recv_bytes_on(Lane::P2p, src, recv)
    }

    fn barrier(&self) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        if self.rank == 0 {
            for src in 1..self.size {
                let mut token = [0u8; 0];
                self.recv_bytes_on(Lane::Coll, src, &mut token)?;
            }
            for dest in 1..self.size {
                self.send_bytes_on(Lane::Coll, dest, &[])?;
            }
            Ok(())
        } else {
            self.send_bytes_on(Lane::Coll, 0, &[])?;
            self.recv_bytes_on(Lane::Coll, 0, &mut [])
        }
    }

    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) -> Result<()> {
        self.broadcast_check("broadcast_f32", root, buf.len())?;
        if self.rank == root {
            for dest in (0..self.size).filter(|&d| d != root) {
                self.send_f32_on(Lane::Coll, dest, buf)?;
            }
            Ok(())
        } else {
            self.recv_f32_on(Lane::Coll, root, buf)
        }
    }

    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<()> {
        self.broadcast_check("broadcast_bytes", root, buf.len())?;
        if self.rank == root {
            for dest in (0..self.size).filter(|&d| d != root) {
                self.send_bytes_on(Lane::Coll, dest, buf)?;
            }
            Ok(())
        } else {
            self.recv_bytes_on(Lane::Coll, root, buf)
        }
    }

    /// Gathers every buffer at rank 0, sums in rank order and sends the
    /// result back (the in-process stand-in for `MPI_Allreduce`).
    fn native_allreduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        if self.size == 1 {
            return Ok(());
        }
        if self.rank != 0 {
            self.send_f32_on(Lane::Coll, 0, buf)?;
            return self.recv_f32_on(Lane::Coll, 0, buf);
        }
        let mut lens = vec![buf.len() as u64];
        for src in 1..self.size {
            let p = self.take(Lane::Coll, src)?;
            match &p {
                Payload::F32(v) => {
                    lens.push(v.len() as u64);
                    if v.len() == buf.len() {
                        for (b, x) in buf.iter_mut().zip(v) {
                            *b += *x;
                        }
                    }
                }
                other => {
                    return Err(self.wrong_message(
                        src,
                        format!("{} f32 value(s)", buf.len()),
                        other,
                    ))
                }
            }
            self.give_back(src, p);
        }
        if let Some(e) = length_mismatch("native allreduce", &lens) {
            for dest in 1..self.size {
                self.post(Lane::Coll, dest, Payload::Fail(e.to_string()))?;
            }
            return Err(e);
        }
        for dest in 1..self.size {
            self.send_f32_on(Lane::Coll, dest, buf)?;
        }
        Ok(())
    }

    fn set_watch(&self, watch: Option<Watch>) {
        self.watch.set(watch);
    }

    fn longest_waits(&self) -> LongestWaits {
        self.longest.borrow().clone()
    }

    fn host_name(&self, rank: usize) -> String {
        if rank < self.size {
            "local".to_string()
        } else {
            "?".to_string()
        }
    }

    fn transport_name(&self) -> &'static str {
        "in-process (threads)"
    }

    fn exchange<'a>(&self, body: &mut ExchangeBody<'_, 'a>) -> Result<()> {
        let mut x = LocalExchange {
            comm: self,
            slots: Vec::new(),
            waiting: Default::default(),
            pending: 0,
        };
        // On an error, sends are complete once posted; receives simply stop.
        body(&mut x)?;
        while x.pending > 0 {
            x.wait_any(true, &mut || false)?;
        }
        Ok(())
    }
}

enum LocalSlot<'a> {
    Recv(usize, u32, &'a mut [u8]),
    Done(&'a [u8]),
    Taken,
}

/// [`Exchange`] between in-process ranks: a send copies the bytes into a
/// message at once (it is complete when posted); a receive completes when
/// its message has arrived and been copied.
struct LocalExchange<'a, 'c> {
    comm: &'c LocalComm,
    slots: Vec<LocalSlot<'a>>,
    /// Posted receives not yet matched, per (source, tag), in posting order.
    waiting: std::collections::HashMap<(usize, u32), VecDeque<usize>>,
    pending: usize,
}

impl LocalExchange<'_, '_> {
    /// Copies message `bytes` into receive slot `i`.
    fn deliver(&mut self, i: usize, bytes: &[u8]) -> Result<()> {
        let LocalSlot::Recv(src, tag, buf) =
            std::mem::replace(&mut self.slots[i], LocalSlot::Taken)
        else {
            unreachable!("only receives wait for messages")
        };
        if bytes.len() != buf.len() {
            return Err(self.comm.comm_err(format!(
                "exchange: expected {} byte(s) from rank {src} (tag {tag}), received {}",
                buf.len(),
                bytes.len()
            )));
        }
        buf.copy_from_slice(bytes);
        self.slots[i] = LocalSlot::Done(buf);
        self.pending -= 1;
        Ok(())
    }

    /// Takes every message that has arrived: to its waiting receive, or to
    /// the unexpected queue (kept across exchanges). True if a receive
    /// completed.
    fn progress(&mut self) -> Result<bool> {
        let comm = self.comm;
        let mut any = false;
        for src in 0..comm.size {
            loop {
                match comm.xch_rx[src].try_recv() {
                    Ok((tag, bytes)) => {
                        let slot = self
                            .waiting
                            .get_mut(&(src, tag))
                            .and_then(VecDeque::pop_front);
                        match slot {
                            Some(i) => {
                                self.deliver(i, &bytes)?;
                                any = true;
                            }
                            None => comm.unexpected.borrow_mut()[src].push_back((tag, bytes)),
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        if self
                            .waiting
                            .iter()
                            .any(|((s, _), q)| *s == src && !q.is_empty())
                        {
                            return Err(comm.peer_gone(src));
                        }
                        break;
                    }
                }
            }
        }
        Ok(any)
    }
}

impl<'a> Exchange<'a> for LocalExchange<'a, '_> {
    fn send(&mut self, dest: usize, tag: u32, data: &'a [u8]) -> Result<Ticket> {
        check_peer(self.comm, dest, "exchange send destination")?;
        check_tag(tag)?;
        self.comm.xch_tx[dest]
            .send((tag, data.to_vec()))
            .map_err(|_| self.comm.peer_gone(dest))?;
        self.slots.push(LocalSlot::Done(data));
        Ok(Ticket(self.slots.len() - 1))
    }

    fn recv(&mut self, src: usize, tag: u32, buf: &'a mut [u8]) -> Result<Ticket> {
        check_peer(self.comm, src, "exchange receive source")?;
        check_tag(tag)?;
        self.slots.push(LocalSlot::Recv(src, tag, buf));
        self.pending += 1;
        let i = self.slots.len() - 1;
        let queue = self.waiting.entry((src, tag)).or_default();
        if queue.is_empty() {
            let early = {
                let mut unexpected = self.comm.unexpected.borrow_mut();
                let q = &mut unexpected[src];
                q.iter()
                    .position(|(t, _)| *t == tag)
                    .and_then(|pos| q.remove(pos))
            };
            if let Some((_, bytes)) = early {
                self.deliver(i, &bytes)?;
                return Ok(Ticket(i));
            }
        }
        self.waiting.entry((src, tag)).or_default().push_back(i);
        Ok(Ticket(i))
    }

    fn test(&mut self, t: Ticket) -> Result<Option<&'a [u8]>> {
        match self.slots.get(t.0) {
            None => return Err(Error::invalid(format!("exchange: no operation {}", t.0))),
            Some(LocalSlot::Recv(..)) => {
                self.progress()?;
            }
            Some(_) => {}
        }
        match std::mem::replace(&mut self.slots[t.0], LocalSlot::Taken) {
            LocalSlot::Done(data) => Ok(Some(data)),
            LocalSlot::Taken => Ok(None),
            recv @ LocalSlot::Recv(..) => {
                self.slots[t.0] = recv;
                Ok(None)
            }
        }
    }

    fn wait_any(&mut self, watched: bool, wake: &mut dyn FnMut() -> bool) -> Result<()> {
        let since = std::time::Instant::now();
        let watch = if watched { self.comm.watch.get() } else { None };
        let limit = watch.map(|w| w.timeout).or(self.comm.timeout);
        loop {
            if self.progress()? || wake() {
                if let Some(w) = watch {
                    self.comm
                        .longest
                        .borrow_mut()
                        .record(w.phase, since.elapsed());
                }
                return Ok(());
            }
            let waited = since.elapsed();
            if let (Some(limit), true) = (limit, self.pending > 0) {
                if waited >= limit {
                    let from: Vec<usize> = self
                        .slots
                        .iter()
                        .filter_map(|s| match s {
                            LocalSlot::Recv(src, _, _) => Some(*src),
                            _ => None,
                        })
                        .collect();
                    let first = from.first().copied().unwrap_or(0);
                    return Err(match watch {
                        Some(w) => Error::PeerTimeout {
                            rank: self.comm.rank,
                            host: "local".to_string(),
                            unresponsive: vec![first],
                            msg: format!(
                                "waited {:.1} s for rank {first} in an exchange ({w}; deadline \
                                 {:.1} s)",
                                waited.as_secs_f64(),
                                w.timeout.as_secs_f64()
                            ),
                        },
                        None => self.comm.comm_err(format!(
                            "no exchange message from rank {first} within {limit:?} (deadlock, \
                             or a peer stuck elsewhere?)"
                        )),
                    });
                }
            }
            if waited < Duration::from_millis(1) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    fn pending(&self) -> usize {
        self.pending
    }

    fn keep_alive(&mut self) {}
}

/// Runs `f` on `n` in-process ranks, one thread each, and returns the
/// results in rank order.
///
/// If any rank fails (returns `Err` or panics), its communicator is dropped,
/// so the other ranks' receives from it fail instead of waiting forever. The
/// error returned is the root cause: the first failing rank (in rank order)
/// that did not merely see a peer leave. A panic becomes an [`Error::Comm`]
/// naming the rank and the panic message.
///
/// ```
/// use ringsgd::comm::{local, Communicator};
///
/// let ranks = local::run_ranks(4, |comm| Ok(comm.rank() * 10))?;
/// assert_eq!(ranks, vec![0, 10, 20, 30]);
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn run_ranks<T, F>(n: usize, f: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(LocalComm) -> Result<T> + Sync,
{
    let comms = LocalComm::world(n)?;
    let shared = Arc::clone(&comms[0].shared);
    let f = &f;
    let outcomes: Vec<Result<T>> = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(n);
        let mut spawn_error = None;
        for comm in comms {
            let rank = comm.rank;
            if spawn_error.is_some() {
                // Dropping the rest makes the spawned ranks fail and return.
                continue;
            }
            match std::thread::Builder::new()
                .name(format!("ringsgd-rank-{rank}"))
                .spawn_scoped(scope, move || f(comm))
            {
                Ok(h) => handles.push((rank, h)),
                Err(e) => {
                    spawn_error = Some(Error::Comm {
                        rank,
                        msg: format!("could not start the thread of rank {rank}: {e}"),
                    })
                }
            }
        }
        let mut outcomes: Vec<Result<T>> = handles
            .into_iter()
            .map(|(rank, h)| {
                h.join().unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".to_string());
                    Err(Error::Comm {
                        rank,
                        msg: format!("rank {rank} panicked: {what}"),
                    })
                })
            })
            .collect();
        if let Some(e) = spawn_error {
            outcomes.push(Err(e));
        }
        outcomes
    });

    let mut values = Vec::with_capacity(n);
    let mut root_cause: Option<Error> = None;
    let mut cascade: Option<Error> = None;
    for (rank, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(v) => values.push(v),
            Err(e) => {
                let lost_peer = shared
                    .lost_peer
                    .get(rank)
                    .is_some_and(|b| b.load(Ordering::SeqCst));
                log::debug!("rank {rank} failed (saw a peer leave: {lost_peer}): {e}");
                if !lost_peer && root_cause.is_none() {
                    root_cause = Some(e);
                } else if cascade.is_none() {
                    cascade = Some(e);
                }
            }
        }
    }
    match root_cause.or(cascade) {
        Some(e) => Err(e),
        None => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_comm_can_move_to_its_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<LocalComm>();
    }

    #[test]
    fn zero_ranks_is_an_error() {
        let e = LocalComm::world(0).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }

    #[test]
    fn point_to_point_checks_lengths_and_kinds() {
        let out = run_ranks(2, |comm| {
            if comm.rank() == 0 {
                comm.send_f32(1, &[1.0, 2.0, 3.0])?;
                comm.send_bytes(1, b"ab")?;
                comm.send_f32(1, &[4.0])?;
                Ok(String::new())
            } else {
                let mut two = [0.0f32; 2];
                let e1 = comm.recv_f32(0, &mut two).unwrap_err().to_string();
                let mut f = [0.0f32; 2];
                let e2 = comm.recv_f32(0, &mut f).unwrap_err().to_string();
                let mut one = [0.0f32; 1];
                comm.recv_f32(0, &mut one)?;
                assert_eq!(one, [4.0]);
                Ok(format!("{e1} | {e2}"))
            }
        })
        .unwrap();
        assert!(
            out[1].contains("expected 2 f32 value(s) from rank 0, got 3 f32"),
            "{}",
            out[1]
        );
        assert!(out[1].contains("got 2 byte(s)"), "{}", out[1]);
    }

    #[test]
    fn out_of_range_peer_is_invalid_argument() {
        let mut comms = LocalComm::world(2).unwrap();
        let c = comms.remove(0);
        let e = c.send_f32(2, &[1.0]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(e.to_string().contains("rank 2"), "{e}");
    }

    #[test]
    fn dropped_peer_fails_pending_receive_and_run_ranks_reports_root_cause() {
        let e = run_ranks(3, |comm| {
            if comm.rank() == 2 {
                return Err(Error::invalid("rank 2 broke on purpose"));
            }
            // Ranks 0 and 1 wait for rank 2, which never sends.
            let mut b = [0.0f32; 1];
            comm.recv_f32(2, &mut b)?;
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("rank 2 broke on purpose"), "{e}");
    }

    #[test]
    fn panic_in_one_rank_fails_the_run_without_hanging() {
        let e = run_ranks(2, |comm| {
            if comm.rank() == 1 {
                panic!("boom");
            }
            let mut b = [0u8; 1];
            comm.recv_bytes(1, &mut b)?;
            Ok(())
        })
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("rank 1 panicked: boom"), "{msg}");
    }

    #[test]
    fn timeout_turns_a_deadlock_into_an_error() {
        let e = run_ranks(2, |mut comm| {
            comm.set_timeout(Some(Duration::from_millis(50)));
            // Both ranks receive first: a deadlock.
            let mut b = [0.0f32; 1];
            comm.recv_f32(1 - comm.rank(), &mut b)
        })
        .unwrap_err();
        assert!(e.to_string().contains("within"), "{e}");
    }

    #[test]
    fn a_watch_deadline_names_the_silent_peer_and_the_phase() {
        use crate::comm::watch::{PeerTimeout, Phase};
        let t = PeerTimeout::new(Duration::from_millis(500)).unwrap();
        let e = run_ranks(3, |comm| {
            comm.set_watch(Some(t.watch(Phase::Train, 2, 17)));
            if comm.rank() == 2 {
                // A frozen rank: alive, but silent for longer than the deadline.
                std::thread::sleep(Duration::from_millis(1500));
                return Ok(());
            }
            let mut b = [0.0f32; 1];
            comm.recv_f32(2, &mut b)
        })
        .unwrap_err();
        match &e {
            Error::PeerTimeout { unresponsive, .. } => assert_eq!(unresponsive, &vec![2]),
            other => panic!("expected a peer timeout, got {other}"),
        }
        let s = e.to_string();
        assert!(
            s.contains("for rank 2") && s.contains("epoch 2, step 17"),
            "{s}"
        );
    }

    #[test]
    fn barrier_does_not_swallow_user_messages() {
        let out = run_ranks(3, |comm| {
            let right = (comm.rank() + 1) % 3;
            let left = (comm.rank() + 2) % 3;
            comm.send_f32(right, &[comm.rank() as f32])?;
            comm.barrier()?;
            let mut b = [0.0f32];
            comm.recv_f32(left, &mut b)?;
            Ok(b[0])
        })
        .unwrap();
        assert_eq!(out, vec![2.0, 0.0, 1.0]);
    }

    #[test]
    fn broadcast_from_every_root_and_mismatch_on_every_rank() {
        for root in 0..3 {
            let out = run_ranks(3, |comm| {
                let mut b = if comm.rank() == root {
                    vec![7.0f32, 8.0]
                } else {
                    vec![0.0; 2]
                };
                comm.broadcast_f32(root, &mut b)?;
                let mut bytes = if comm.rank() == root {
                    b"xyz".to_vec()
                } else {
                    vec![0; 3]
                };
                comm.broadcast_bytes(root, &mut bytes)?;
                Ok((b, bytes))
            })
            .unwrap();
            assert!(out.iter().all(|(b, y)| b == &[7.0, 8.0] && y == b"xyz"));
        }
        let errs = run_ranks(3, |comm| {
            let mut b = vec![0.0f32; 2 + comm.rank() / 2];
            Ok(comm.broadcast_f32(0, &mut b).unwrap_err().to_string())
        })
        .unwrap();
        for e in errs {
            assert!(e.contains("rank 2: length 3, root 0"), "{e}");
        }
    }

    #[test]
    fn native_allreduce_sums_and_reports_mismatch_everywhere() {
        let out = run_ranks(4, |comm| {
            let mut b = vec![comm.rank() as f32 + 1.0; 3];
            comm.native_allreduce_sum_f32(&mut b)?;
            Ok(b)
        })
        .unwrap();
        assert!(out.iter().all(|b| b == &[10.0; 3]));
        let errs = run_ranks(3, |comm| {
            let mut b = vec![1.0f32; if comm.rank() == 1 { 4 } else { 3 }];
            let e = comm.native_allreduce_sum_f32(&mut b).unwrap_err();
            Ok(matches!(e, Error::RankMismatch(_)))
        })
        .unwrap();
        assert_eq!(errs, vec![true; 3]);
    }

    #[test]
    fn warm_sends_reuse_buffers() {
        run_ranks(2, |comm| {
            let other = 1 - comm.rank();
            let data = vec![1.0f32; 1000];
            let mut got = vec![0.0f32; 1000];
            comm.sendrecv_f32(&data, other, &mut got, other)?;
            comm.barrier()?;
            // The peer has consumed our first message and handed it back.
            let v = comm.f32_buffer(other);
            assert!(v.capacity() >= 1000);
            Ok(())
        })
        .unwrap();
    }
}
