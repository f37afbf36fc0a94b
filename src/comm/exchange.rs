//! Non-blocking point-to-point messages: the one primitive the pipelined
//! collectives (and the overlap of communication with compute) are built
//! on.
//!
//! [`Transport::exchange`](super::Transport::exchange) runs a body
//! with an [`Exchange`] through which the body posts sends and receives on
//! buffers that outlive the call, tests them, and waits for any of them to
//! complete, interleaved with whatever else it does (reducing a segment
//! that arrived, taking the next gradient bucket from the compute threads).
//! Every operation posted is complete when `exchange` returns, so no
//! request ever outlives the buffers it points into.
//!
//! Matching: a receive from `src` with tag `t` takes the first message from
//! `src` with tag `t` that no earlier receive took (MPI's non-overtaking
//! rule); different tags are independent streams. The byte length of a
//! receive must equal the length of the message that arrives: callers agree
//! on lengths first (as [`Allreducer`](crate::collectives::Allreducer)
//! does), or use [`Exchange::recv_checked`], which checks the length of
//! what arrives before receiving it. Each [`Op`]'s channel is a message
//! space of its own ([`run`] uses [`Op::Exchange`]'s), so exchanges never
//! match the messages of [`Communicator`](super::Communicator)'s
//! point-to-point calls or collectives.
//!
//! ```
//! use ringsgd::comm::{exchange, local, Transport};
//!
//! // Each rank sends its rank to the right and receives from the left.
//! let got = local::run_ranks(3, |comm| {
//!     let (r, p) = (comm.rank(), comm.size());
//!     let mine = [r as u8];
//!     let mut theirs = [0u8];
//!     exchange::run(&comm, |x| {
//!         x.send((r + 1) % p, 7, &mine)?;
//!         let t = x.recv((r + p - 1) % p, 7, &mut theirs)?;
//!         loop {
//!             if let Some(data) = x.test(t)? {
//!                 return Ok(data[0]);
//!             }
//!             x.wait_any(true, &mut || false)?;
//!         }
//!     })
//! })?;
//! assert_eq!(got, vec![2, 0, 1]);
//! # Ok::<(), ringsgd::Error>(())
//! ```

use super::{Op, Transport};
use crate::error::{Error, Result};

/// Runs `f` once inside [`Transport::exchange`] (as [`Op::Exchange`]) and
/// returns its value: the convenient form when the body borrows buffers
/// from the caller (a closure called through `&mut dyn FnMut` cannot lend
/// what it captures to the exchange; this one moves `f` in).
pub fn run<'a, T: Transport + ?Sized, R>(
    comm: &T,
    f: impl FnOnce(&mut dyn Exchange<'a>) -> Result<R>,
) -> Result<R> {
    run_as(comm, Op::Exchange, f)
}

/// [`run`] on the channel of `op`, waits reported as `op`.
pub fn run_as<'a, T: Transport + ?Sized, R>(
    comm: &T,
    op: Op,
    f: impl FnOnce(&mut dyn Exchange<'a>) -> Result<R>,
) -> Result<R> {
    let mut f = Some(f);
    let mut out = None;
    comm.exchange(op, &mut |x| {
        let f = f
            .take()
            .ok_or_else(|| Error::invalid("exchange body called twice"))?;
        out = Some(f(x)?);
        Ok(())
    })?;
    out.ok_or_else(|| Error::invalid("exchange body was not called"))
}

/// Largest tag an exchange accepts (MPI guarantees at least 32767).
pub const MAX_TAG: u32 = 32767;

/// Names one operation posted on an [`Exchange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub(crate) usize);

/// Sends and receives in flight between this rank and its peers, within
/// one [`Transport::exchange`](super::Transport::exchange) call.
///
/// `'a` is the lifetime of the buffers: they are borrowed until the
/// exchange ends, so a receive buffer is read through what
/// [`test`](Exchange::test) returns.
pub trait Exchange<'a> {
    /// Starts sending `data` to rank `dest` with `tag` (`0..=MAX_TAG`).
    fn send(&mut self, dest: usize, tag: u32, data: &'a [u8]) -> Result<Ticket>;

    /// Starts receiving a message of exactly `buf.len()` bytes from rank
    /// `src` with `tag` into `buf`.
    fn recv(&mut self, src: usize, tag: u32, buf: &'a mut [u8]) -> Result<Ticket>;

    /// [`recv`](Exchange::recv) for a message whose length the ranks have
    /// not agreed on: the message is matched first and its length checked
    /// before it is received. One of another length is consumed and
    /// reported as an [`Error::Comm`] naming both lengths (never a
    /// truncation that ends an MPI job). Under MPI the receive is posted
    /// only when the message has arrived, so use [`recv`](Exchange::recv)
    /// for bulk transfers of agreed lengths. Do not mix both kinds on one
    /// source and tag in one exchange.
    fn recv_checked(&mut self, src: usize, tag: u32, buf: &'a mut [u8]) -> Result<Ticket>;

    /// Whether operation `t` has completed, without blocking. Returns its
    /// buffer once, at the first test after completion (for a receive: the
    /// bytes that arrived; for a send: the bytes sent), and `None` before
    /// and after that.
    fn test(&mut self, t: Ticket) -> Result<Option<&'a [u8]>>;

    /// Waits until at least one pending operation completes or `wake()`
    /// returns true (checked as often as the operations), letting the core
    /// go meanwhile. With `watched`, the wait counts towards the
    /// communicator's peer deadline (see
    /// [`Transport::set_watch`](super::Transport::set_watch)); pass
    /// `false` while the rank is itself busy (its compute threads still
    /// working), so that only waits for peers can time out.
    fn wait_any(&mut self, watched: bool, wake: &mut dyn FnMut() -> bool) -> Result<()>;

    /// Number of posted operations not yet seen complete by
    /// [`test`](Exchange::test).
    fn pending(&self) -> usize;

    /// Waits (watched, see [`wait_any`](Exchange::wait_any)) until
    /// operation `t` completes and returns its buffer, as
    /// [`test`](Exchange::test) would. An operation whose buffer was
    /// already handed out is an [`Error::InvalidArgument`].
    fn wait(&mut self, t: Ticket) -> Result<&'a [u8]> {
        loop {
            if let Some(data) = self.test(t)? {
                return Ok(data);
            }
            if self.pending() == 0 {
                return Err(Error::invalid(format!(
                    "exchange: operation {} was already waited for",
                    t.0
                )));
            }
            self.wait_any(true, &mut || false)?;
        }
    }

    /// Does what a waiting rank owes its peers (under MPI: answers their
    /// liveness checks), without waiting. For bodies that wait on something
    /// else between their tests (their compute threads); cheap enough to
    /// call every few hundred microseconds.
    fn keep_alive(&mut self);
}

/// Checks a tag against [`MAX_TAG`].
pub(crate) fn check_tag(tag: u32) -> Result<()> {
    if tag <= MAX_TAG {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "exchange tag {tag} is above the largest allowed, {MAX_TAG}"
        )))
    }
}
