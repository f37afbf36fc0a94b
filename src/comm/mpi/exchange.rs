//! [`Exchange`] over MPI: `MPI_Isend` / `MPI_Irecv` on a duplicate of the
//! communicator, completed by `MPI_Test` under the peer deadline.
//!
//! Receives are posted before the data arrives (no probe): on TCP a
//! probe-then-receive pattern left simultaneous two-way transfers at half
//! the link's rate in some jobs, while pre-posted receives ran at the
//! link's rate in every job measured (README, "A ring at the link's
//! speed"). Only [`Exchange::recv_checked`] probes (`MPI_Improbe`), for
//! messages whose length the ranks have not agreed on.

use mpi::datatype::Equivalence;
use mpi::request::{LocalScope, Request};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, Destination, Source};

use super::MpiComm;
use crate::comm::exchange::{check_tag, Exchange, Ticket};
use crate::comm::Op;
use crate::error::{Error, Result};

/// Most operations one poll tests.
const TESTS_PER_POLL: usize = 16;

type Req<'a, 's> = Request<'a, [u8], &'s LocalScope<'a>>;

enum Slot<'a, 's> {
    /// In flight: the request, the peer, and for a receive its length.
    Pending(Req<'a, 's>, usize, Option<usize>),
    /// A checked receive whose message has not been matched yet: the peer,
    /// the tag, the buffer.
    Probe(usize, i32, &'a mut [u8]),
    /// Complete, not yet handed out by `test`.
    Done(&'a [u8]),
    /// Handed out.
    Taken,
}

/// The exchange of one [`MpiComm::exchange`](crate::comm::Transport::exchange) call.
pub(super) struct MpiExchange<'a, 's> {
    comm: &'s MpiComm,
    /// The channel's communicator.
    chan: &'s SimpleCommunicator,
    op: Op,
    scope: &'s LocalScope<'a>,
    slots: Vec<Slot<'a, 's>>,
    pending: usize,
    /// Where the next [`progress`](Self::progress) starts testing.
    cursor: usize,
    /// First error seen while testing (a short message), returned by the
    /// next call.
    failed: Option<Error>,
}

impl<'a, 's> MpiExchange<'a, 's> {
    pub(super) fn new(comm: &'s MpiComm, op: Op, scope: &'s LocalScope<'a>) -> Self {
        MpiExchange {
            comm,
            chan: comm.channel(op.channel()),
            op,
            scope,
            slots: Vec::new(),
            pending: 0,
            cursor: 0,
            failed: None,
        }
    }

    fn failed(&mut self, e: Error) {
        self.failed.get_or_insert(e);
    }

    /// Probes for the message of checked receive `i`; once it has arrived,
    /// receives it if its length is right, else drains it and records the
    /// error. True if the receive failed now (it is complete).
    fn probe_one(&mut self, i: usize) -> bool {
        let Slot::Probe(src, tag, _) = &self.slots[i] else {
            return false;
        };
        let (src, tag) = (*src, *tag);
        // Messages match checked receives in posting order: only the first
        // unmatched one from src with tag may probe.
        let earlier = self.slots[..i]
            .iter()
            .any(|s| matches!(s, Slot::Probe(s2, t2, _) if *s2 == src && *t2 == tag));
        if earlier {
            return false;
        }
        let Some((msg, status)) = self
            .chan
            .process_at_rank(src as i32)
            .immediate_matched_probe_with_tag(tag)
        else {
            return false;
        };
        let Slot::Probe(_, _, buf) = std::mem::replace(&mut self.slots[i], Slot::Taken) else {
            unreachable!("matched above")
        };
        let got = status.count(u8::equivalent_datatype()).max(0) as usize;
        let len = buf.len();
        if got == len {
            let req = msg.immediate_matched_receive_into(self.scope, buf);
            self.slots[i] = Slot::Pending(req, src, Some(len));
            return false;
        }
        // Receive it anyway (so that the sender is not left hanging), into
        // a throw-away buffer.
        let mut sink = vec![0u8; got];
        mpi::request::scope(|scope| {
            let req = msg.immediate_matched_receive_into(scope, &mut sink[..]);
            self.comm.live.wait(self.op, Some(src), req);
        });
        self.pending -= 1;
        self.failed(Error::Comm {
            rank: self.comm.rank,
            msg: format!(
                "expected {len} byte(s) from rank {src}, but the message holds {got} byte(s)"
            ),
        });
        true
    }

    /// Tests operation `i` if it is pending; true if it completed now.
    fn test_one(&mut self, i: usize) -> bool {
        if matches!(self.slots[i], Slot::Probe(..)) && self.probe_one(i) {
            return true;
        }
        let slot = &mut self.slots[i];
        if !matches!(slot, Slot::Pending(..)) {
            return false;
        }
        let Slot::Pending(req, peer, expect) = std::mem::replace(slot, Slot::Taken) else {
            unreachable!("matched above")
        };
        match req.test_with_data() {
            Ok((status, data)) => {
                self.pending -= 1;
                if let Some(len) = expect {
                    let got = status.count(u8::equivalent_datatype());
                    if usize::try_from(got).ok() != Some(len) && self.failed.is_none() {
                        self.failed = Some(Error::Comm {
                            rank: self.comm.rank,
                            msg: format!(
                                "expected {len} byte(s) from rank {peer}, but the message holds \
                                 {got} byte(s)"
                            ),
                        });
                    }
                }
                *slot = Slot::Done(data);
                true
            }
            Err(req) => {
                *slot = Slot::Pending(req, peer, expect);
                false
            }
        }
    }

    /// Tests up to [`TESTS_PER_POLL`] pending operations, round robin from
    /// where the last poll stopped (each `MPI_Test` runs Open MPI's
    /// progress engine once, so testing hundreds of tiny segments at every
    /// poll would cost more than the transfer); true if any completed.
    fn progress(&mut self) -> bool {
        let n = self.slots.len();
        let mut any = false;
        let (mut tested, mut looked) = (0, 0);
        while tested < TESTS_PER_POLL && looked < n && self.pending > 0 {
            let i = self.cursor % n;
            self.cursor = (self.cursor + 1) % n;
            looked += 1;
            if matches!(self.slots[i], Slot::Pending(..) | Slot::Probe(..)) {
                tested += 1;
                any |= self.test_one(i);
            }
        }
        any
    }

    fn first_pending_peer(&self) -> Option<usize> {
        self.slots.iter().find_map(|s| match s {
            Slot::Pending(_, peer, Some(_)) | Slot::Probe(peer, _, _) => Some(*peer),
            _ => None,
        })
    }

    fn check(&mut self) -> Result<()> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Completes everything still in flight. After an error of the body,
    /// pending receives are cancelled (their peers may never send).
    pub(super) fn finish(&mut self, cancel_receives: bool) -> Result<()> {
        if cancel_receives {
            for slot in &mut self.slots {
                match slot {
                    Slot::Pending(req, _, Some(_)) => req.cancel(),
                    Slot::Probe(..) => {
                        *slot = Slot::Taken;
                        self.pending -= 1;
                    }
                    _ => {}
                }
            }
        }
        let mut first = None;
        while self.pending > 0 {
            if let Err(e) = self.wait_any(true, &mut || false) {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = self.failed.take() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }
}

impl<'a, 's> Exchange<'a> for MpiExchange<'a, 's> {
    fn send(&mut self, dest: usize, tag: u32, data: &'a [u8]) -> Result<Ticket> {
        let d = self.comm.peer_rank(dest, "exchange send")?;
        check_tag(tag)?;
        super::mpi_count(data.len(), "exchange send")?;
        let req = self
            .chan
            .process_at_rank(d)
            .immediate_send_with_tag(self.scope, data, tag as i32);
        self.slots.push(Slot::Pending(req, dest, None));
        self.pending += 1;
        Ok(Ticket(self.slots.len() - 1))
    }

    fn recv(&mut self, src: usize, tag: u32, buf: &'a mut [u8]) -> Result<Ticket> {
        let s = self.comm.peer_rank(src, "exchange receive")?;
        check_tag(tag)?;
        super::mpi_count(buf.len(), "exchange receive")?;
        let len = buf.len();
        let req = self
            .chan
            .process_at_rank(s)
            .immediate_receive_into_with_tag(self.scope, buf, tag as i32);
        self.slots.push(Slot::Pending(req, src, Some(len)));
        self.pending += 1;
        Ok(Ticket(self.slots.len() - 1))
    }

    fn recv_checked(&mut self, src: usize, tag: u32, buf: &'a mut [u8]) -> Result<Ticket> {
        self.comm.peer_rank(src, "exchange receive")?;
        check_tag(tag)?;
        super::mpi_count(buf.len(), "exchange receive")?;
        self.slots.push(Slot::Probe(src, tag as i32, buf));
        self.pending += 1;
        let i = self.slots.len() - 1;
        self.test_one(i);
        Ok(Ticket(i))
    }

    fn test(&mut self, t: Ticket) -> Result<Option<&'a [u8]>> {
        let Some(slot) = self.slots.get(t.0) else {
            return Err(Error::invalid(format!("exchange: no operation {}", t.0)));
        };
        if matches!(slot, Slot::Pending(..) | Slot::Probe(..)) {
            self.test_one(t.0);
        }
        self.check()?;
        match std::mem::replace(&mut self.slots[t.0], Slot::Taken) {
            Slot::Done(data) => Ok(Some(data)),
            Slot::Taken => Ok(None),
            pending @ (Slot::Pending(..) | Slot::Probe(..)) => {
                self.slots[t.0] = pending;
                Ok(None)
            }
        }
    }

    fn wait_any(&mut self, watched: bool, wake: &mut dyn FnMut() -> bool) -> Result<()> {
        self.check()?;
        if self.pending == 0 {
            // Nothing in flight can complete: only the caller's own event
            // can end this wait.
            let live = &self.comm.live;
            live.poll_as(self.op, None, false, || wake().then_some(()));
            return Ok(());
        }
        let peer = self.first_pending_peer();
        let comm = self.comm;
        let op = self.op;
        comm.live.poll_as(op, peer, watched, || {
            (self.progress() || wake()).then_some(())
        });
        self.check()
    }

    fn pending(&self) -> usize {
        self.pending
    }

    fn keep_alive(&mut self) {
        self.comm.live.keep_alive();
    }
}
