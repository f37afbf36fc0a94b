//! Ring allgather of small byte items (headers, digests, lengths).

use crate::comm::communicator::ring_allgather_bytes;
use crate::comm::{Communicator, Op, Transport};
use crate::error::{Error, Result};

/// Ring allgather of one `item` per rank, all of the same length `k`:
/// afterwards `out[r * k..(r + 1) * k]` holds rank `r`'s item, on every rank.
///
/// `out` must hold `comm.size() * item.len()` bytes. One exchange on the
/// collectives' channel: every receive is posted at once and each item is
/// passed on as soon as it arrives (`p - 1` latencies); no allocation up to
/// 16 ranks. Ranks passing items of different lengths get an
/// [`Error::Comm`] from the size check of the receive.
///
/// ```
/// use ringsgd::collectives::allgather_fixed;
/// use ringsgd::comm::{local, Transport};
///
/// let all = local::run_ranks(3, |comm| {
///     let mut out = vec![0u8; 3 * 2];
///     allgather_fixed(&comm, &[comm.rank() as u8, 7], &mut out)?;
///     Ok(out)
/// })?;
/// assert!(all.iter().all(|o| o == &[0, 7, 1, 7, 2, 7]));
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn allgather_fixed(comm: &dyn Transport, item: &[u8], out: &mut [u8]) -> Result<()> {
    ring_allgather_bytes(comm, Op::Allgather, item, out)
}

/// Allgather of byte strings of any (per-rank) length: returns every rank's
/// bytes in rank order, on every rank. Lengths are exchanged first, then the
/// payloads travel around the ring.
///
/// ```
/// use ringsgd::collectives::allgather_bytes;
/// use ringsgd::comm::{local, Transport};
///
/// let all = local::run_ranks(2, |comm| {
///     allgather_bytes(&comm, format!("rank{}", comm.rank()).repeat(comm.rank() + 1).as_bytes())
/// })?;
/// assert_eq!(all[0], all[1]);
/// assert_eq!(all[1][1], b"rank1rank1".to_vec());
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn allgather_bytes(comm: &dyn Transport, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
    let p = comm.size();
    let r = comm.rank();
    let mut lens = vec![0u8; 8 * p];
    allgather_fixed(comm, &(mine.len() as u64).to_le_bytes(), &mut lens)?;
    let mut items: Vec<Vec<u8>> = lens
        .chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            let len = u64::from_le_bytes(w);
            usize::try_from(len).map(|l| vec![0u8; l]).map_err(|_| {
                Error::invalid(format!("allgather_bytes: a rank announced {len} bytes"))
            })
        })
        .collect::<Result<_>>()?;
    items[r].copy_from_slice(mine);
    let right = (r + 1) % p;
    let left = (r + p - 1) % p;
    for s in 0..p.saturating_sub(1) {
        let send_i = (r + p - s) % p;
        let recv_i = (r + 2 * p - s - 1) % p;
        let send = std::mem::take(&mut items[send_i]);
        let res = comm.sendrecv(&send, right, &mut items[recv_i], left);
        items[send_i] = send;
        res?;
    }
    Ok(items)
}
