//! [`Exchange`] over MPI: `MPI_Isend` / `MPI_Irecv` on a duplicate of the
//! communicator, completed by `MPI_Test` under the peer deadline.
//!
//! Receives are posted before the data arrives (no probe): on TCP a
//! probe-then-receive pattern left simultaneous two-way transfers at half
//! the link's rate in some jobs, while pre-posted receives ran at the
//! link's rate in every job measured (README, "A ring at the link's
//! speed").

use mpi::datatype::Equivalence;
use mpi::request::{LocalScope, Request};
use mpi::traits::{Communicator as _, Destination, Source};

use super::liveness::Op;
use super::MpiComm;
use crate::comm::exchange::{check_tag, Exchange, Ticket};
use crate::error::{Error, Result};

/// Most operations one poll tests.
const TESTS_PER_POLL: usize = 16;

type Req<'a, 's> = Request<'a, [u8], &'s LocalScope<'a>>;

enum Slot<'a, 's> {
    /// In flight: the request, the peer, and for a receive its length.
    Pending(Req<'a, 's>, usize, Option<usize>),
    /// Complete, not yet handed out by `test`.
    Done(&'a [u8]),
    /// Handed out.
    Taken,
}

/// The exchange of one [`MpiComm::exchange`](crate::comm::Communicator::exchange) call.
pub(super) struct MpiExchange<'a, 's> {
    comm: &'s MpiComm,
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
    pub(super) fn new(comm: &'s MpiComm, scope: &'s LocalScope<'a>) -> Self {
        MpiExchange {
            comm,
            scope,
            slots: Vec::new(),
            pending: 0,
            cursor: 0,
            failed: None,
        }
    }

    /// Tests operation `i` if it is pending; true if it completed now.
    fn test_one(&mut self, i: usize) -> bool {
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
                                "exchange: expected {len} byte(s) from rank {peer}, received {got}"
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
            if matches!(self.slots[i], Slot::Pending(..)) {
                tested += 1;
                any |= self.test_one(i);
            }
        }
        any
    }

    fn first_pending_peer(&self) -> Option<usize> {
        self.slots.iter().find_map(|s| match s {
            Slot::Pending(_, peer, Some(_)) => Some(*peer),
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
            for slot in &self.slots {
                if let Slot::Pending(req, _, Some(_)) = slot {
                    req.cancel();
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
            .comm
            .xcomm
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
            .comm
            .xcomm
            .process_at_rank(s)
            .immediate_receive_into_with_tag(self.scope, buf, tag as i32);
        self.slots.push(Slot::Pending(req, src, Some(len)));
        self.pending += 1;
        Ok(Ticket(self.slots.len() - 1))
    }

    fn test(&mut self, t: Ticket) -> Result<Option<&'a [u8]>> {
        let Some(slot) = self.slots.get(t.0) else {
            return Err(Error::invalid(format!("exchange: no operation {}", t.0)));
        };
        if matches!(slot, Slot::Pending(..)) {
            self.test_one(t.0);
        }
        self.check()?;
        match std::mem::replace(&mut self.slots[t.0], Slot::Taken) {
            Slot::Done(data) => Ok(Some(data)),
            Slot::Taken => Ok(None),
            pending @ Slot::Pending(..) => {
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
            live.poll_as(Op::Exchange, None, false, || wake().then_some(()));
            return Ok(());
        }
        let peer = self.first_pending_peer();
        let comm = self.comm;
        comm.live.poll_as(Op::Exchange, peer, watched, || {
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
