//! In-process transport: `n` ranks as threads of one process.
//!
//! Every rank has one incoming queue per channel (see
//! [`Op`](super::Op)): the point-to-point messages, the collectives and the
//! caller's exchanges never match each other, so that a
//! [`barrier`](super::Communicator::barrier) can never swallow a user
//! message. Sends are buffered and never block; message buffers are handed
//! back to the sender after the receiver has consumed them, so a warm
//! communicator does not allocate for its messages. A waiting rank sleeps
//! on its queue, woken by the next message.
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
//! use ringsgd::comm::{local, Transport};
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
use std::time::{Duration, Instant};

use super::exchange::{check_tag, Exchange, Ticket};
use super::watch::{LongestWaits, Watch};
use super::{check_peer, ExchangeBody, Op, Transport, CHANNELS};
use crate::error::{Error, Result};

/// One message on a rank's queue.
enum Msg {
    /// `bytes` from rank `src` with `tag`.
    Data {
        src: usize,
        tag: u32,
        bytes: Vec<u8>,
    },
    /// Rank `src` has left (its [`LocalComm`] was dropped); sent after all
    /// its data.
    Gone(usize),
}

/// A message that arrived before its receive was posted.
type Early = (usize, u32, Vec<u8>);

/// Longest a waiting rank sleeps on its queue before it checks the
/// caller's `wake` again; waits start shorter and back off to this.
const MAX_NAP: Duration = Duration::from_millis(1);

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
    /// `tx[d][c]`: channel `c` of rank `d`'s queues.
    tx: Vec<[Sender<Msg>; CHANNELS]>,
    /// This rank's queue per channel.
    rx: [Receiver<Msg>; CHANNELS],
    /// Per channel: messages taken from the queue that no receive matched
    /// yet, in arrival order (kept across exchanges).
    early: RefCell<[VecDeque<Early>; CHANNELS]>,
    /// Per channel: the ranks seen leaving.
    gone: RefCell<[Vec<bool>; CHANNELS]>,
    /// `recycle_in[d]`: our message buffers that rank `d` has consumed.
    recycle_in: Vec<Receiver<Vec<u8>>>,
    /// `recycle_out[s]`: hands rank `s`'s consumed buffers back to it.
    recycle_out: Vec<Sender<Vec<u8>>>,
    shared: Arc<Shared>,
    timeout: Option<Duration>,
    /// Deadline set by [`Transport::set_watch`]; takes precedence over
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
        let (queues_tx, mut queues_rx): (Vec<[Sender<Msg>; CHANNELS]>, Vec<_>) = (0..n)
            .map(|_| {
                let pairs: [(Sender<Msg>, Receiver<Msg>); CHANNELS] =
                    std::array::from_fn(|_| channel());
                let [(t0, r0), (t1, r1), (t2, r2)] = pairs;
                ([t0, t1, t2], Some([r0, r1, r2]))
            })
            .unzip();
        // recycle[s][d]: buffers rank s sent to rank d, on their way back.
        let mut recycle_in: Vec<Vec<Receiver<Vec<u8>>>> = (0..n).map(|_| Vec::new()).collect();
        let mut recycle_out: Vec<Vec<Sender<Vec<u8>>>> = (0..n).map(|_| Vec::new()).collect();
        // Outer loop over the sender, inner over the receiver: every vector
        // is filled in peer order, so index = peer rank.
        for from_s in recycle_in.iter_mut() {
            for to_d in recycle_out.iter_mut() {
                let (tx, rx) = channel();
                from_s.push(rx);
                to_d.push(tx);
            }
        }
        let comms = recycle_in
            .into_iter()
            .zip(recycle_out)
            .enumerate()
            .map(|(rank, (recycle_in, recycle_out))| LocalComm {
                rank,
                size: n,
                tx: queues_tx.clone(),
                rx: queues_rx[rank]
                    .take()
                    .expect("each rank takes its own queues"),
                early: RefCell::new(std::array::from_fn(|_| VecDeque::new())),
                gone: RefCell::new(std::array::from_fn(|_| vec![false; n])),
                recycle_in,
                recycle_out,
                shared: Arc::clone(&shared),
                timeout: None,
                watch: Cell::new(None),
                longest: RefCell::new(LongestWaits::default()),
            })
            .collect();
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

    /// A message buffer holding `data`: one that rank `dest` handed back,
    /// or a new one (empty messages need none).
    fn buffer(&self, dest: usize, data: &[u8]) -> Vec<u8> {
        if data.is_empty() {
            return Vec::new();
        }
        let mut v = self.recycle_in[dest].try_recv().unwrap_or_default();
        v.clear();
        v.extend_from_slice(data);
        v
    }

    /// Hands a consumed message buffer back to rank `src` (best effort: if
    /// `src` has left, the buffer is simply freed).
    fn give_back(&self, src: usize, bytes: Vec<u8>) {
        if bytes.capacity() > 0 {
            drop(self.recycle_out[src].send(bytes));
        }
    }
}

impl Drop for LocalComm {
    /// Tells every peer, on every channel, that this rank has left, so that
    /// their waits for it end at once.
    fn drop(&mut self) {
        for (d, queues) in self.tx.iter().enumerate() {
            if d != self.rank {
                for q in queues {
                    drop(q.send(Msg::Gone(self.rank)));
                }
            }
        }
    }
}

impl Transport for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
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

    fn exchange<'a>(&self, op: Op, body: &mut ExchangeBody<'_, 'a>) -> Result<()> {
        let mut x = LocalExchange {
            comm: self,
            ch: op.channel() as usize,
            op,
            slots: Vec::new(),
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
    /// The channel's index.
    ch: usize,
    op: Op,
    slots: Vec<LocalSlot<'a>>,
    pending: usize,
}

impl LocalExchange<'_, '_> {
    /// Copies message `bytes` from `src` into receive slot `i`, and hands
    /// the buffer back.
    fn deliver(&mut self, i: usize, bytes: Vec<u8>) -> Result<()> {
        let LocalSlot::Recv(src, tag, buf) =
            std::mem::replace(&mut self.slots[i], LocalSlot::Taken)
        else {
            unreachable!("only receives wait for messages")
        };
        self.pending -= 1;
        let res = if bytes.len() == buf.len() {
            buf.copy_from_slice(&bytes);
            self.slots[i] = LocalSlot::Done(buf);
            Ok(())
        } else {
            Err(self.comm.comm_err(format!(
                "expected {} byte(s) from rank {src} (tag {tag}), but the message holds {} \
                 byte(s)",
                buf.len(),
                bytes.len()
            )))
        };
        self.comm.give_back(src, bytes);
        res
    }

    /// The first pending receive from `src` with `tag`.
    fn waiting_for(&self, src: usize, tag: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(s, LocalSlot::Recv(s2, t2, _) if *s2 == src && *t2 == tag))
    }

    /// Handles one message from the queue; true if a receive completed.
    fn take(&mut self, msg: Msg) -> Result<bool> {
        match msg {
            Msg::Data { src, tag, bytes } => match self.waiting_for(src, tag) {
                Some(i) => self.deliver(i, bytes).map(|_| true),
                None => {
                    self.comm.early.borrow_mut()[self.ch].push_back((src, tag, bytes));
                    Ok(false)
                }
            },
            Msg::Gone(src) => {
                self.comm.gone.borrow_mut()[self.ch][src] = true;
                Ok(false)
            }
        }
    }

    /// Takes every message that has arrived; fails if a pending receive
    /// waits for a rank that has left. True if a receive completed.
    fn progress(&mut self) -> Result<bool> {
        let mut any = false;
        while let Ok(msg) = self.comm.rx[self.ch].try_recv() {
            any |= self.take(msg)?;
        }
        self.check_gone()?;
        Ok(any)
    }

    fn check_gone(&self) -> Result<()> {
        let gone = self.comm.gone.borrow();
        for s in &self.slots {
            if let LocalSlot::Recv(src, _, _) = s {
                if gone[self.ch][*src] {
                    return Err(self.comm.peer_gone(*src));
                }
            }
        }
        Ok(())
    }

    fn first_waited_for(&self) -> usize {
        self.slots
            .iter()
            .find_map(|s| match s {
                LocalSlot::Recv(src, _, _) => Some(*src),
                _ => None,
            })
            .unwrap_or(0)
    }

    fn timed_out(&self, watch: Option<Watch>, waited: Duration, limit: Duration) -> Error {
        let (first, op) = (self.first_waited_for(), self.op);
        match watch {
            Some(w) => Error::PeerTimeout {
                rank: self.comm.rank,
                host: "local".to_string(),
                unresponsive: vec![first],
                msg: format!(
                    "waited {:.1} s for rank {first} in {op} ({w}; deadline {:.1} s)",
                    waited.as_secs_f64(),
                    w.timeout.as_secs_f64()
                ),
            },
            None => self.comm.comm_err(format!(
                "no message from rank {first} within {limit:?} in {op} (deadlock, or a peer \
                 stuck elsewhere?)"
            )),
        }
    }
}

impl<'a> Exchange<'a> for LocalExchange<'a, '_> {
    fn send(&mut self, dest: usize, tag: u32, data: &'a [u8]) -> Result<Ticket> {
        check_peer(self.comm, dest, "send destination")?;
        check_tag(tag)?;
        let msg = Msg::Data {
            src: self.comm.rank,
            tag,
            bytes: self.comm.buffer(dest, data),
        };
        self.comm.tx[dest][self.ch]
            .send(msg)
            .map_err(|_| self.comm.peer_gone(dest))?;
        self.slots.push(LocalSlot::Done(data));
        Ok(Ticket(self.slots.len() - 1))
    }

    fn recv(&mut self, src: usize, tag: u32, buf: &'a mut [u8]) -> Result<Ticket> {
        check_peer(self.comm, src, "receive source")?;
        check_tag(tag)?;
        self.slots.push(LocalSlot::Recv(src, tag, buf));
        self.pending += 1;
        let i = self.slots.len() - 1;
        // An earlier receive from src with tag would have taken the
        // message already: the first early match is this receive's.
        let early = {
            let mut early = self.comm.early.borrow_mut();
            let q = &mut early[self.ch];
            q.iter()
                .position(|(s, t, _)| *s == src && *t == tag)
                .and_then(|pos| q.remove(pos))
        };
        if let Some((_, _, bytes)) = early {
            self.deliver(i, bytes)?;
        }
        Ok(Ticket(i))
    }

    /// Every in-process receive checks the length of what arrives.
    fn recv_checked(&mut self, src: usize, tag: u32, buf: &'a mut [u8]) -> Result<Ticket> {
        self.recv(src, tag, buf)
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
        let since = Instant::now();
        let watch = if watched { self.comm.watch.get() } else { None };
        let limit = watch.map(|w| w.timeout).or(self.comm.timeout);
        let mut nap = Duration::from_micros(50);
        let mut got = false;
        loop {
            if got || self.progress()? || wake() {
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
                    return Err(self.timed_out(watch, waited, limit));
                }
            }
            // Sleep on the queue: the next message wakes the rank at once.
            got = match self.comm.rx[self.ch].recv_timeout(nap) {
                Ok(msg) => self.take(msg)?,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => false,
            };
            nap = (nap * 2).min(MAX_NAP);
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
/// use ringsgd::comm::{local, Transport};
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
    use crate::comm::Communicator;

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
    fn point_to_point_checks_lengths_and_stays_usable() {
        let out = run_ranks(2, |comm| {
            if comm.rank() == 0 {
                comm.send(1, &[1.0f32, 2.0, 3.0])?;
                comm.send(1, b"ab")?;
                comm.send(1, &[4.0f32])?;
                Ok(String::new())
            } else {
                let mut two = [0.0f32; 2];
                let e1 = comm.recv(0, &mut two).unwrap_err().to_string();
                let mut f = [0.0f32; 2];
                let e2 = comm.recv(0, &mut f).unwrap_err().to_string();
                let mut one = [0.0f32; 1];
                comm.recv(0, &mut one)?;
                assert_eq!(one, [4.0]);
                Ok(format!("{e1} | {e2}"))
            }
        })
        .unwrap();
        assert!(
            out[1].contains("receive of 2 f32 value(s): expected 8 byte(s) from rank 0")
                && out[1].contains("holds 12 byte(s)"),
            "{}",
            out[1]
        );
        assert!(out[1].contains("holds 2 byte(s)"), "{}", out[1]);
    }

    #[test]
    fn out_of_range_peer_is_invalid_argument() {
        let mut comms = LocalComm::world(2).unwrap();
        let c = comms.remove(0);
        let e = c.send(2, &[1.0f32]).unwrap_err();
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
            comm.recv(2, &mut b)?;
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("rank 2 broke on purpose"), "{e}");
    }

    #[test]
    fn messages_sent_before_leaving_are_still_received() {
        let out = run_ranks(2, |comm| {
            if comm.rank() == 1 {
                comm.send(0, &[7u8; 3])?;
                return Ok(Vec::new());
            }
            std::thread::sleep(Duration::from_millis(50));
            let mut b = [0u8; 3];
            comm.recv(1, &mut b)?;
            let e = comm.recv(1, &mut b).unwrap_err().to_string();
            assert!(e.contains("rank 1 has left"), "{e}");
            Ok(b.to_vec())
        })
        .unwrap();
        assert_eq!(out[0], vec![7; 3]);
    }

    #[test]
    fn panic_in_one_rank_fails_the_run_without_hanging() {
        let e = run_ranks(2, |comm| {
            if comm.rank() == 1 {
                panic!("boom");
            }
            let mut b = [0u8; 1];
            comm.recv(1, &mut b)?;
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
            comm.recv(1 - comm.rank(), &mut b)
        })
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("within") && s.contains("in a receive"), "{s}");
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
            comm.barrier()
        })
        .unwrap_err();
        match &e {
            Error::PeerTimeout { unresponsive, .. } => assert_eq!(unresponsive, &vec![2]),
            other => panic!("expected a peer timeout, got {other}"),
        }
        let s = e.to_string();
        assert!(
            s.contains("for rank 2 in a barrier") && s.contains("epoch 2, step 17"),
            "{s}"
        );
    }

    #[test]
    fn barrier_does_not_swallow_user_messages() {
        let out = run_ranks(3, |comm| {
            let right = (comm.rank() + 1) % 3;
            let left = (comm.rank() + 2) % 3;
            comm.send(right, &[comm.rank() as f32])?;
            comm.barrier()?;
            let mut b = [0.0f32];
            comm.recv(left, &mut b)?;
            Ok(b[0])
        })
        .unwrap();
        assert_eq!(out, vec![2.0, 0.0, 1.0]);
    }

    #[test]
    fn waiting_twice_for_an_operation_is_an_error() {
        let out = run_ranks(1, |comm| {
            let mine = [4u8; 2];
            let mut got = [0u8; 2];
            crate::comm::exchange::run(&comm, |x| {
                let r = x.recv(0, 3, &mut got)?;
                x.send(0, 3, &mine)?;
                let first = x.wait(r)?.to_vec();
                let again = x.wait(r).unwrap_err().to_string();
                Ok((first, again))
            })
        })
        .unwrap();
        assert_eq!(out[0].0, vec![4, 4]);
        assert!(out[0].1.contains("already waited for"), "{}", out[0].1);
    }

    #[test]
    fn warm_sends_reuse_buffers() {
        run_ranks(2, |comm| {
            let other = 1 - comm.rank();
            let data = vec![1.0f32; 1000];
            let mut got = vec![0.0f32; 1000];
            comm.sendrecv(&data, other, &mut got, other)?;
            comm.barrier()?;
            // The peer has consumed our first message and handed it back.
            let v = comm.recycle_in[other].try_recv().unwrap_or_default();
            assert!(v.capacity() >= 4000);
            Ok(())
        })
        .unwrap();
    }
}
