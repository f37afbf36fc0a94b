//! [`Communicator`]: typed messages and the collectives, written once on
//! top of any [`Transport`]'s byte [`exchange`](Transport::exchange).
//!
//! Values travel as their bytes: a slice of an [`Element`] type is cast to
//! bytes in place (bytemuck, no copy, no `unsafe`), so a warm call moves
//! the caller's buffer itself. Receives check the length of what arrives
//! ([`Exchange::recv_checked`]) wherever the ranks have not agreed on it
//! first; broadcasts agree on length and root before any data moves.

use super::exchange::run_as;
use super::{check_broadcast_headers, check_peer, length_mismatch, Op, Transport};
use crate::error::{Error, Result};

mod sealed {
    pub trait Sealed {}
}

/// A plain value type that travels as its bytes: `u8`, `u16`, `u32`, `u64`,
/// `i32`, `i64`, `f32`, `f64`. Both ends must use the same type (the transport sees only
/// bytes: a receive checks the byte length, not the type).
pub trait Element: bytemuck::Pod + sealed::Sealed {
    /// Its name in messages.
    const NAME: &'static str;
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const NAME: &'static str = stringify!($t);
        }
    )*};
}
element!(u8, u16, u32, u64, i32, i64, f32, f64);

/// The one tag of every channel's typed messages (the channels keep
/// point-to-point messages and collectives apart).
const TAG: u32 = 0;
/// Tags of the collectives' own messages on their channel.
const TAG_HEADER: u32 = 1;
const TAG_BARRIER: u32 = 2;

/// What every [`Transport`] can do, written once: typed point-to-point
/// messages, send-receive, broadcast and barrier. Implemented for every
/// transport (`dyn Transport` included); bring it into scope with
/// `use ringsgd::comm::Communicator`.
///
/// A receive whose buffer length differs from the length of the message
/// that arrives is an [`Error::Comm`] naming both, never a truncation or a
/// hang; a peer rank out of range is an [`Error::InvalidArgument`].
///
/// ```
/// use ringsgd::comm::{local, Communicator, Transport};
///
/// let got = local::run_ranks(3, |comm| {
///     let mut weights = if comm.rank() == 0 { vec![0.5f32, 2.0] } else { vec![0.0; 2] };
///     comm.broadcast(0, &mut weights)?;
///     comm.barrier()?;
///     let mut tag = [0u8; 3];
///     if comm.rank() == 0 {
///         comm.send(1, b"hey")?;
///     } else if comm.rank() == 1 {
///         comm.recv(0, &mut tag)?;
///     }
///     Ok((weights, tag))
/// })?;
/// assert!(got.iter().all(|(w, _)| w == &[0.5, 2.0]));
/// assert_eq!(&got[1].1, b"hey");
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub trait Communicator: Transport {
    /// Sends `data` to rank `dest` (blocking until the buffer may be
    /// reused).
    fn send<E: Element>(&self, dest: usize, data: &[E]) -> Result<()> {
        check_peer(self, dest, "send destination")?;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        run_as(self, Op::Send, |x| {
            let t = x.send(dest, TAG, bytes)?;
            x.wait(t).map(|_| ())
        })
    }

    /// Receives exactly `buf.len()` values from rank `src`.
    fn recv<E: Element>(&self, src: usize, buf: &mut [E]) -> Result<()> {
        check_peer(self, src, "receive source")?;
        let n = buf.len();
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
        run_as(self, Op::Recv, |x| {
            let t = x.recv_checked(src, TAG, bytes)?;
            x.wait(t).map(|_| ())
        })
        .map_err(|e| typed(e, "receive", n, E::NAME))
    }

    /// Sends `send` to `dest` while receiving `recv.len()` values from `src`
    /// (MPI_Sendrecv): one step of a ring. Never deadlocks when every rank of
    /// a ring calls it at once.
    fn sendrecv<E: Element>(
        &self,
        send: &[E],
        dest: usize,
        recv: &mut [E],
        src: usize,
    ) -> Result<()> {
        check_peer(self, dest, "send-receive destination")?;
        check_peer(self, src, "send-receive source")?;
        let n = recv.len();
        sendrecv_as(
            self,
            Op::Sendrecv,
            TAG,
            bytemuck::cast_slice(send),
            dest,
            bytemuck::cast_slice_mut(recv),
            src,
        )
        .map_err(|e| typed(e, "send-receive", n, E::NAME))
    }

    /// Blocks until every rank has entered the barrier (dissemination:
    /// `ceil(log2 p)` rounds of empty messages).
    fn barrier(&self) -> Result<()> {
        let (p, r) = (self.size(), self.rank());
        run_as(self, Op::Barrier, |x| {
            let mut dist = 1;
            let mut round = 0;
            while dist < p {
                let t = x.recv((r + p - dist) % p, TAG_BARRIER + round, &mut [])?;
                x.send((r + dist) % p, TAG_BARRIER + round, &[])?;
                x.wait(t)?;
                dist *= 2;
                round += 1;
            }
            Ok(())
        })
    }

    /// Copies `buf` on rank `root` into `buf` on every other rank (a
    /// binomial tree: `ceil(log2 p)` rounds).
    ///
    /// Every rank first checks that all ranks passed the same `root` and the
    /// same length; a disagreement is an [`Error::RankMismatch`] on every
    /// rank and nothing is copied.
    fn broadcast<E: Element>(&self, root: usize, buf: &mut [E]) -> Result<()> {
        let (p, r) = (self.size(), self.rank());
        let mine = [buf.len() as u64, root as u64];
        let all = gather_header(self, Op::Broadcast, &mine)?;
        check_broadcast_headers(self, "broadcast", root, &all)?;
        if p == 1 {
            return Ok(());
        }
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
        // Ranks relative to the root: v receives from v minus its lowest
        // set bit, and sends to v + 2^k for every 2^k below that bit.
        let v = (r + p - root) % p;
        run_as(self, Op::Broadcast, |x| {
            let data: &[u8] = if v == 0 {
                bytes
            } else {
                let parent = (v - (1 << v.trailing_zeros()) + root) % p;
                let t = x.recv(parent, TAG, bytes)?;
                x.wait(t)?
            };
            let low = if v == 0 {
                p.next_power_of_two()
            } else {
                1 << v.trailing_zeros()
            };
            let mut step = low / 2;
            while step > 0 {
                if v + step < p {
                    x.send((v + step + root) % p, TAG, data)?;
                }
                step /= 2;
            }
            Ok(())
        })
    }
}

impl<T: Transport + ?Sized> Communicator for T {}

/// Ranks up to which the header allgather does not allocate.
const HEADER_RANKS: usize = 16;

/// Ring allgather of one small header per rank on `op`'s channel: every
/// rank's `mine`, in rank order.
pub(crate) fn gather_header<T: Transport + ?Sized>(
    t: &T,
    op: Op,
    mine: &[u64],
) -> Result<Vec<u64>> {
    let mut all = vec![0; t.size() * mine.len()];
    ring_allgather(t, op, mine, &mut all)?;
    Ok(all)
}

/// Ring allgather of one `item` per rank on `op`'s channel into `out`
/// (`p * mine.len()` words), in rank order.
fn ring_allgather<T: Transport + ?Sized>(
    t: &T,
    op: Op,
    mine: &[u64],
    out: &mut [u64],
) -> Result<()> {
    ring_allgather_bytes(
        t,
        op,
        bytemuck::cast_slice(mine),
        bytemuck::cast_slice_mut(out),
    )
}

/// Ring allgather of `item` (the same length on every rank) into `out`
/// (`p * item.len()` bytes), in rank order: all `p - 1` receives are posted
/// at once, and each item is passed on as soon as it arrives (one exchange,
/// no allocation for up to 16 ranks). A rank whose item has another length
/// is an [`Error::Comm`] from the length check of the receive.
pub(crate) fn ring_allgather_bytes<T: Transport + ?Sized>(
    t: &T,
    op: Op,
    item: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let (p, r, k) = (t.size(), t.rank(), item.len());
    if out.len() != p * k {
        return Err(Error::invalid(format!(
            "allgather: output holds {} bytes, expected {p} ranks x {k} bytes",
            out.len()
        )));
    }
    out[r * k..(r + 1) * k].copy_from_slice(item);
    if p == 1 || k == 0 {
        return Ok(());
    }
    let (right, left) = ((r + 1) % p, (r + p - 1) % p);
    run_as(t, op, |x| {
        let (before, rest) = out.split_at_mut(r * k);
        let (own, after) = rest.split_at_mut(k);
        // Step s receives rank (r - 1 - s)'s item: walk left from r - 1
        // down to 0, then from p - 1 down to r + 1.
        let mut small = [None; HEADER_RANKS];
        let mut large = Vec::new();
        let slots = before
            .rchunks_exact_mut(k)
            .chain(after.rchunks_exact_mut(k));
        for (s, slot) in slots.enumerate() {
            let tk = Some(x.recv_checked(left, TAG_HEADER, slot)?);
            match small.get_mut(s) {
                Some(v) => *v = tk,
                None => large.push(tk),
            }
        }
        let own: &[u8] = own;
        x.send(right, TAG_HEADER, own)?;
        for s in 0..p - 1 {
            let tk = small
                .get(s)
                .copied()
                .unwrap_or_else(|| large[s - HEADER_RANKS]);
            let got = x.wait(tk.expect("every step's receive is posted"))?;
            if s + 2 < p {
                x.send(right, TAG_HEADER, got)?;
            }
        }
        Ok(())
    })
}

/// Checks that every rank passed a buffer of `len` values to `op`: an
/// [`Error::RankMismatch`] naming every rank's length otherwise, on every
/// rank.
/// (Used by the transports' own allreduce, so only with MPI.)
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn agree_lengths<T: Transport + ?Sized>(
    t: &T,
    op: Op,
    what: &str,
    len: usize,
) -> Result<()> {
    let all = gather_header(t, op, &[len as u64])?;
    match length_mismatch(what, &all) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Sends `send` to `dest` and receives `recv` (length checked) from `src`
/// on `op`'s channel, with `tag`.
fn sendrecv_as<T: Transport + ?Sized>(
    t: &T,
    op: Op,
    tag: u32,
    send: &[u8],
    dest: usize,
    recv: &mut [u8],
    src: usize,
) -> Result<()> {
    run_as(t, op, |x| {
        let rt = x.recv_checked(src, tag, recv)?;
        let st = x.send(dest, tag, send)?;
        x.wait(rt)?;
        x.wait(st).map(|_| ())
    })
}

/// Names the typed receive in a transport's error about its bytes.
fn typed(e: Error, what: &str, n: usize, ty: &str) -> Error {
    match e {
        Error::Comm { rank, msg } => Error::Comm {
            rank,
            msg: format!("{what} of {n} {ty} value(s): {msg}"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::local::run_ranks;

    #[test]
    fn broadcast_from_every_root_and_mismatch_on_every_rank() {
        for p in 1..=5 {
            for root in 0..p {
                let out = run_ranks(p, |comm| {
                    let mut b = if comm.rank() == root {
                        vec![7.0f32, 8.0]
                    } else {
                        vec![0.0; 2]
                    };
                    comm.broadcast(root, &mut b)?;
                    let mut bytes = if comm.rank() == root {
                        b"xyz".to_vec()
                    } else {
                        vec![0; 3]
                    };
                    comm.broadcast(root, &mut bytes)?;
                    Ok((b, bytes))
                })
                .unwrap();
                assert!(out.iter().all(|(b, y)| b == &[7.0, 8.0] && y == b"xyz"));
            }
        }
        let errs = run_ranks(3, |comm| {
            let mut b = vec![0.0f32; 2 + comm.rank() / 2];
            Ok(comm.broadcast(0, &mut b).unwrap_err().to_string())
        })
        .unwrap();
        for e in errs {
            assert!(e.contains("rank 2: length 3, root 0"), "{e}");
        }
        let errs = run_ranks(2, |comm| {
            let mut b = [0u8; 4];
            Ok(comm.broadcast(comm.rank(), &mut b).unwrap_err().to_string())
        })
        .unwrap();
        for e in errs {
            assert!(e.contains("rank 1: length 4, root 1"), "{e}");
        }
    }

    #[test]
    fn header_gather_is_in_rank_order_for_any_world_size() {
        // Beyond 16 ranks the tickets spill to the heap.
        for p in [1, 2, 3, 4, 7, 17] {
            let out = run_ranks(p, |comm| {
                let r = comm.rank() as u64;
                gather_header(&comm, Op::Allgather, &[r, 100 + r])
            })
            .unwrap();
            let expected: Vec<u64> = (0..p as u64).flat_map(|r| [r, 100 + r]).collect();
            assert!(out.iter().all(|a| a == &expected), "p = {p}: {out:?}");
        }
    }

    #[test]
    fn length_agreement_names_every_rank() {
        let errs = run_ranks(3, |comm| {
            let len = if comm.rank() == 1 { 4 } else { 3 };
            let e = agree_lengths(&comm, Op::Allreduce, "native allreduce", len).unwrap_err();
            Ok(matches!(e, Error::RankMismatch(_)) && e.to_string().contains("rank 1: 4"))
        })
        .unwrap();
        assert_eq!(errs, vec![true; 3]);
    }

    #[test]
    fn collectives_never_match_point_to_point_messages() {
        // A message left in flight on the point-to-point channel while
        // every rank runs a barrier and a broadcast is still there after.
        let out = run_ranks(3, |comm| {
            let (r, p) = (comm.rank(), comm.size());
            comm.send((r + 1) % p, &[r as u64])?;
            comm.barrier()?;
            let mut b = [5u64];
            comm.broadcast(0, &mut b)?;
            let mut got = [0u64];
            comm.recv((r + p - 1) % p, &mut got)?;
            Ok(got[0])
        })
        .unwrap();
        assert_eq!(out, vec![2, 0, 1]);
    }

    #[test]
    fn barriers_complete_for_every_world_size() {
        for p in 1..=6 {
            run_ranks(p, |comm| {
                for _ in 0..3 {
                    comm.barrier()?;
                }
                Ok(())
            })
            .unwrap();
        }
    }
}
