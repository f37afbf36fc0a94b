//! Deadlines for every MPI wait, and the liveness check that names the peer
//! that stopped (see [`crate::comm::watch`]).
//!
//! Every operation of [`MpiComm`](super::MpiComm) is started non-blocking
//! and completed by [`Liveness::poll`], which tests it, yields the core
//! (as Open MPI's own blocking calls do with `mpi_yield_when_idle`), and
//! answers other ranks' liveness checks. When the [`Watch`] deadline
//! passes, the rank sends a ping to every other rank on a duplicate of the
//! communicator (so that it can never match application messages) and
//! waits a grace period for the answers, still testing its own operation.
//! A rank answers from inside any of its waits, with what it is waiting
//! for. Ranks that do not answer are dead, frozen or cut off; the rank then
//! reports them and ends the job with `MPI_Abort` (MPI cannot continue
//! after losing a rank, and the pending operations still point into the
//! caller's buffers, so returning is not an option). If every rank answers,
//! the peer is slow but alive: a warning is logged and the wait goes on.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use mpi::request::{Request, Scope, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, Destination, Source};

use crate::comm::watch::{LongestWaits, PeerTimeout, Phase, Watch};
use crate::comm::Op;
use crate::error::Error;

/// Exit code of a job ended by a peer timeout (`MPI_Abort`'s error code,
/// which `mpirun` returns).
pub const PEER_TIMEOUT_EXIT_CODE: i32 = 3;

const TAG_PING: i32 = 1;
const TAG_PONG: i32 = 2;
/// Words of a liveness answer: nonce, phase, epoch, step, peer + 1 (0: any
/// rank), milliseconds waited, operation.
const PONG_WORDS: usize = 7;
/// How often a waiting rank looks for liveness checks to answer.
const PING_CHECK_EVERY: Duration = Duration::from_millis(1);
/// Pause between polls of an unwatched wait (the rank computes meanwhile):
/// short against a segment's time on the wire (~1 ms for 128 KiB at
/// 1 Gbit/s), long enough to cost the compute threads nothing measurable.
const UNWATCHED_NAP: Duration = Duration::from_micros(50);
/// How long a silent host's network is probed.
const PROBE_LIMIT: Duration = Duration::from_secs(1);
/// How long a rank that found only unreachable hosts silent leaves Open MPI
/// to end the job before it aborts it itself.
const HANDOFF: Duration = Duration::from_secs(20);

/// What a binary does with a peer-timeout error before the job is aborted.
pub(super) type TimeoutReport = Box<dyn Fn(&Error)>;

/// What this rank is waiting in.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    op: Op,
    peer: Option<usize>,
    since: Instant,
}

/// Outcome of a liveness check.
enum Survey<T> {
    /// The operation completed meanwhile.
    Done(T),
    /// Every rank answered: the peer is slow, not gone.
    AllAlive,
    /// These ranks did not answer; the rest answered with these states.
    Silent(Vec<usize>, Vec<String>),
}

/// The deadline state of one [`MpiComm`](super::MpiComm).
pub(super) struct Liveness {
    /// Duplicate of the communicator: liveness checks only.
    control: SimpleCommunicator,
    rank: usize,
    size: usize,
    hosts: Vec<String>,
    watch: Cell<Option<Watch>>,
    waiting: Cell<Option<Waiting>>,
    nonce: Cell<u64>,
    /// Liveness messages in flight. Their buffers are leaked (a few words
    /// per check, only when a rank passed a deadline) because a message to
    /// a dead peer may never complete.
    in_flight: RefCell<Vec<Request<'static, [u64]>>>,
    longest: RefCell<LongestWaits>,
    on_timeout: RefCell<Option<TimeoutReport>>,
    last_ping_check: Cell<Option<Instant>>,
}

impl Liveness {
    /// Collective: duplicates `comm` and gathers every rank's host name.
    pub(super) fn new(comm: &SimpleCommunicator) -> Liveness {
        let control = comm.duplicate();
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        let hosts = gather_hosts(&control, size);
        Liveness {
            control,
            rank,
            size,
            hosts,
            watch: Cell::new(None),
            waiting: Cell::new(None),
            nonce: Cell::new(0),
            in_flight: RefCell::new(Vec::new()),
            longest: RefCell::new(LongestWaits::default()),
            on_timeout: RefCell::new(None),
            last_ping_check: Cell::new(None),
        }
    }

    pub(super) fn host(&self, rank: usize) -> String {
        self.hosts
            .get(rank)
            .cloned()
            .unwrap_or_else(|| "?".to_string())
    }

    pub(super) fn set_watch(&self, watch: Option<Watch>) {
        self.watch.set(watch);
    }

    pub(super) fn longest_waits(&self) -> LongestWaits {
        self.longest.borrow().clone()
    }

    pub(super) fn set_on_timeout(&self, f: Option<TimeoutReport>) {
        *self.on_timeout.borrow_mut() = f;
    }

    /// Completes `req`, under the deadline.
    pub(super) fn wait<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        op: Op,
        peer: Option<usize>,
        req: Request<'a, D, S>,
    ) -> mpi::point_to_point::Status {
        let mut req = Some(req);
        self.poll(op, peer, || {
            match req
                .take()
                .expect("request is tested until it completes")
                .test()
            {
                Ok(status) => Some(status),
                Err(r) => {
                    req = Some(r);
                    None
                }
            }
        })
    }

    /// Calls `ready` until it returns a value, under the deadline.
    pub(super) fn poll<T>(
        &self,
        op: Op,
        peer: Option<usize>,
        ready: impl FnMut() -> Option<T>,
    ) -> T {
        self.poll_as(op, peer, true, ready)
    }

    /// [`poll`](Self::poll), with the deadline only when `watched` (an
    /// unwatched wait still answers liveness checks and yields the core,
    /// but never times out and is not recorded among the longest waits).
    pub(super) fn poll_as<T>(
        &self,
        op: Op,
        peer: Option<usize>,
        watched: bool,
        mut ready: impl FnMut() -> Option<T>,
    ) -> T {
        if let Some(t) = ready() {
            return t;
        }
        let watch = || if watched { self.watch.get() } else { None };
        let since = Instant::now();
        let outer = self.waiting.replace(Some(Waiting { op, peer, since }));
        let mut deadline_from = since;
        let mut next_check = since;
        let result = loop {
            if let Some(t) = ready() {
                break t;
            }
            let now = Instant::now();
            if now >= next_check {
                self.answer_pings();
                next_check = now + PING_CHECK_EVERY;
            }
            if let Some(w) = watch() {
                if now.duration_since(deadline_from) >= w.timeout {
                    match self.survey(w, &mut ready) {
                        Survey::Done(t) => break t,
                        Survey::AllAlive => {
                            log::warn!(
                                "rank {} (host {}): {}; every rank answers a liveness check, \
                                 so the peer is slow, not gone: waiting on",
                                self.rank,
                                self.host(self.rank),
                                self.describe_wait(w, op, peer, since)
                            );
                            deadline_from = Instant::now();
                        }
                        Survey::Silent(silent, alive) => {
                            let waiting = self.describe_wait(w, op, peer, since);
                            let grace = PeerTimeout::grace(w.timeout);
                            let hosts: Vec<String> = silent.iter().map(|&r| self.host(r)).collect();
                            let err = peer_timeout_error(
                                self.rank,
                                silent,
                                &|r| self.host(r),
                                &waiting,
                                &alive,
                                grace,
                                self.size,
                            );
                            self.end_job(&err, &hosts);
                        }
                    }
                }
            }
            if watched {
                std::thread::yield_now();
            } else {
                // The rank's own compute threads are busy: leave them the
                // core (a yield would spin on it).
                std::thread::sleep(UNWATCHED_NAP);
            }
        };
        if let Some(w) = watch() {
            self.longest.borrow_mut().record(w.phase, since.elapsed());
        }
        self.waiting.set(outer);
        result
    }

    fn describe_wait(&self, w: Watch, op: Op, peer: Option<usize>, since: Instant) -> String {
        let whom = match peer {
            Some(p) => format!(" for rank {p} (host {})", self.host(p)),
            None => String::new(),
        };
        format!(
            "waited {:.1} s{whom} in {op} ({w}; deadline {:.1} s)",
            since.elapsed().as_secs_f64(),
            w.timeout.as_secs_f64()
        )
    }

    /// Reports `err` and ends the job.
    ///
    /// When none of the silent ranks' `hosts` answers on the network (a
    /// pulled cable, a Pi that lost power), `MPI_Abort` would leave
    /// `mpirun` waiting for that host's daemon to confirm the kill, for as
    /// long as TCP retransmits the order (minutes). Open MPI notices a lost
    /// host by itself through its daemon keepalive (seconds with the
    /// settings `.ci/vcluster` applies) and then ends the job at once; so
    /// the rank reports, keeps answering liveness checks, and aborts only if
    /// Open MPI has not ended the job within [`HANDOFF`].
    fn end_job(&self, err: &Error, hosts: &[String]) -> ! {
        match self.on_timeout.borrow().as_ref() {
            Some(report) => report(err),
            None => log::error!("{err}"),
        }
        if self.all_unreachable(hosts) {
            log::warn!(
                "rank {}: host(s) {} do not answer on the network either: leaving the end of \
                 the job to Open MPI's lost-host detection (aborting in {} s otherwise)",
                self.rank,
                hosts.join(", "),
                HANDOFF.as_secs()
            );
            let until = Instant::now() + HANDOFF;
            while Instant::now() < until {
                self.answer_pings();
                std::thread::sleep(PING_CHECK_EVERY);
            }
        }
        self.control.abort(PEER_TIMEOUT_EXIT_CODE)
    }

    /// Whether no host in `hosts` answers a TCP connection attempt (probed
    /// on other threads, while this one keeps answering liveness checks).
    fn all_unreachable(&self, hosts: &[String]) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        for h in hosts {
            let (h, tx) = (h.clone(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send(host_answers(&h, PROBE_LIMIT));
            });
        }
        drop(tx);
        let mut answers = 0;
        loop {
            match rx.try_recv() {
                Ok(true) => return false,
                Ok(false) => answers += 1,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return answers > 0,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    self.answer_pings();
                    std::thread::sleep(PING_CHECK_EVERY);
                }
            }
        }
    }

    /// Sends `words` to `dest` on the control channel without waiting.
    fn post(&self, dest: usize, tag: i32, words: Vec<u64>) {
        let buf: &'static [u64] = Vec::leak(words);
        let req = self
            .control
            .process_at_rank(dest as i32)
            .immediate_send_with_tag(StaticScope, buf, tag);
        self.in_flight.borrow_mut().push(req);
    }

    /// Drops the liveness messages that have been delivered.
    fn reap(&self) {
        let mut flight = self.in_flight.borrow_mut();
        let pending = std::mem::take(&mut *flight);
        for r in pending {
            if let Err(r) = r.test() {
                flight.push(r);
            }
        }
    }

    /// Answers the liveness checks that have arrived, at most once per
    /// [`PING_CHECK_EVERY`] (for callers that wait on something else than
    /// MPI, e.g. their compute threads).
    pub(super) fn keep_alive(&self) {
        let now = Instant::now();
        if self
            .last_ping_check
            .get()
            .is_none_or(|t| now.duration_since(t) >= PING_CHECK_EVERY)
        {
            self.last_ping_check.set(Some(now));
            self.answer_pings();
        }
    }

    /// Answers every liveness check that has arrived.
    fn answer_pings(&self) {
        while let Some((msg, status)) = self
            .control
            .any_process()
            .immediate_matched_probe_with_tag(TAG_PING)
        {
            let mut ping = [0u64; 2];
            msg.matched_receive_into(&mut ping[..]);
            let src = status.source_rank() as usize;
            let w = self.watch.get();
            let waiting = self.waiting.get();
            let answer = vec![
                ping[0],
                w.map_or(u64::MAX, |w| w.phase.code()),
                w.map_or(0, |w| w.epoch),
                w.map_or(0, |w| w.step),
                waiting.and_then(|x| x.peer).map_or(0, |p| p as u64 + 1),
                waiting.map_or(0, |x| x.since.elapsed().as_millis() as u64),
                waiting.map_or(u64::MAX, |x| x.op.code()),
            ];
            self.post(src, TAG_PONG, answer);
        }
        self.reap();
    }

    /// Pings every other rank and collects the answers for the grace
    /// period, still testing the operation.
    fn survey<T>(&self, w: Watch, ready: &mut impl FnMut() -> Option<T>) -> Survey<T> {
        let nonce = self.nonce.get() + 1;
        self.nonce.set(nonce);
        for q in (0..self.size).filter(|&q| q != self.rank) {
            self.post(q, TAG_PING, vec![nonce, self.rank as u64]);
        }
        let mut answers: Vec<Option<[u64; PONG_WORDS]>> = vec![None; self.size];
        let end = Instant::now() + PeerTimeout::grace(w.timeout);
        let missing = |a: &[Option<[u64; PONG_WORDS]>]| {
            (0..self.size)
                .filter(|&q| q != self.rank && a[q].is_none())
                .collect::<Vec<_>>()
        };
        while Instant::now() < end && !missing(&answers).is_empty() {
            if let Some(t) = ready() {
                return Survey::Done(t);
            }
            self.answer_pings();
            while let Some((msg, status)) = self
                .control
                .any_process()
                .immediate_matched_probe_with_tag(TAG_PONG)
            {
                let mut pong = [0u64; PONG_WORDS];
                msg.matched_receive_into(&mut pong[..]);
                let src = status.source_rank() as usize;
                if pong[0] == nonce && src < self.size {
                    answers[src] = Some(pong);
                }
            }
            std::thread::yield_now();
        }
        let silent = missing(&answers);
        if silent.is_empty() {
            return Survey::AllAlive;
        }
        let alive = answers
            .iter()
            .enumerate()
            .filter_map(|(q, a)| a.map(|a| self.describe_answer(q, &a)))
            .collect();
        Survey::Silent(silent, alive)
    }

    fn describe_answer(&self, q: usize, a: &[u64; PONG_WORDS]) -> String {
        let whom = match a[4] {
            0 => String::new(),
            p => format!(" for rank {}", p - 1),
        };
        let op = Op::from_code(a[6]).map_or("a call".to_string(), |o| o.to_string());
        let phase = Phase::from_code(a[1]).map_or(String::new(), |p| {
            let w = Watch {
                timeout: Duration::ZERO,
                phase: p,
                epoch: a[2],
                step: a[3],
            };
            format!(" ({w})")
        });
        format!(
            "rank {q} (host {}) waiting {:.1} s{whom} in {op}{phase}",
            self.host(q),
            a[5] as f64 / 1000.0
        )
    }
}

/// Whether `host`'s kernel answers on the network: a TCP connection to its
/// discard port (9) is accepted or refused within `limit`. A name that does
/// not resolve counts as answering: nothing is known, so the job is aborted
/// as for a frozen rank.
fn host_answers(host: &str, limit: Duration) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let Ok(addrs) = (host, 9).to_socket_addrs() else {
        return true;
    };
    let addrs: Vec<_> = addrs.collect();
    addrs.is_empty()
        || addrs
            .iter()
            .any(|a| match TcpStream::connect_timeout(a, limit) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            })
}

/// Every rank's processor name (host), gathered over `comm`.
fn gather_hosts(comm: &SimpleCommunicator, size: usize) -> Vec<String> {
    use mpi::traits::CommunicatorCollectives;
    const NAME: usize = 64;
    let name = mpi::environment::processor_name().unwrap_or_else(|_| "?".to_string());
    let mut mine = [0u8; NAME];
    let n = name.len().min(NAME);
    mine[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut all = vec![0u8; NAME * size];
    comm.all_gather_into(&mine[..], &mut all[..]);
    all.chunks_exact(NAME)
        .map(|c| {
            let end = c.iter().position(|&b| b == 0).unwrap_or(NAME);
            String::from_utf8_lossy(&c[..end]).into_owned()
        })
        .collect()
}

/// Builds the [`Error::PeerTimeout`] a rank reports when peers stopped
/// answering: `who` names this rank, `waiting` what it waited for.
fn peer_timeout_error(
    rank: usize,
    unresponsive: Vec<usize>,
    hosts: &dyn Fn(usize) -> String,
    waiting: &str,
    alive: &[String],
    grace: Duration,
    size: usize,
) -> Error {
    let names: Vec<String> = unresponsive
        .iter()
        .map(|&r| format!("rank {r} (host {})", hosts(r)))
        .collect();
    let mut msg = format!(
        "{waiting}; no answer to a liveness check within {:.1} s from {}",
        grace.as_secs_f64(),
        names.join(", ")
    );
    if unresponsive.len() + 1 == size && size > 2 {
        msg.push_str(&format!(
            " (no other rank answered: host {} itself may be cut off from the network)",
            hosts(rank)
        ));
    }
    if !alive.is_empty() {
        msg.push_str("; alive: ");
        msg.push_str(&alive.join("; "));
    }
    Error::PeerTimeout {
        rank,
        host: hosts(rank),
        unresponsive,
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_the_silent_ranks_and_their_hosts() {
        let hosts = |r: usize| format!("pi{}", r + 1);
        let e = peer_timeout_error(
            0,
            vec![2],
            &hosts,
            "waited 10.0 s for rank 3 (host pi4) in sendrecv (training, epoch 1, step 7)",
            &["rank 1 (host pi2) waiting 9.9 s for rank 0".to_string()],
            Duration::from_secs(2),
            4,
        );
        let s = e.to_string();
        assert!(s.contains("rank 2 (host pi3)"), "{s}");
        assert!(s.contains("rank 0 (host pi1)"), "{s}");
        assert!(s.contains("alive: rank 1"), "{s}");
        let lonely = peer_timeout_error(
            2,
            vec![0, 1, 3],
            &hosts,
            "w",
            &[],
            Duration::from_secs(1),
            4,
        );
        assert!(
            lonely
                .to_string()
                .contains("host pi3 itself may be cut off"),
            "{lonely}"
        );
    }
}
