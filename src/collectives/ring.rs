//! Ring allreduce (Patarasuk & Yuan 2009): reduce-scatter then allgather,
//! `2 (p - 1)` steps, each rank sending `2 (p - 1) / p * N` values.

use super::reduce::{add_assign, chunk_range, divide, split_send_recv};
use crate::comm::Communicator;
use crate::error::Result;

/// Sums (or averages, with `mean`) `buf` over all ranks in place.
///
/// `segment_len` (elements, `0` = unsegmented) is the pipelining unit of the
/// reduce-scatter. The caller has checked that all ranks agree on the length
/// and the segment size.
pub(crate) fn ring_allreduce(
    comm: &dyn Communicator,
    buf: &mut [f32],
    segment_len: usize,
    mean: bool,
) -> Result<()> {
    let p = comm.size();
    if p == 1 {
        return Ok(());
    }
    let r = comm.rank();
    let n = buf.len();
    let right = (r + 1) % p;
    let left = (r + p - 1) % p;

    // Reduce-scatter. At step s rank r sends chunk (r - s) and adds the
    // incoming chunk (r - s - 1) into its own copy. Chunk c starts at rank c
    // and picks up one rank's values per hop, so its sum is always formed as
    // ((x_c + x_{c+1}) + x_{c+2}) + ... whatever the timing.
    for s in 0..p - 1 {
        let send_c = (r + p - s) % p;
        let recv_c = (r + 2 * p - s - 1) % p;
        let (send, acc) =
            split_send_recv(buf, chunk_range(n, p, send_c), chunk_range(n, p, recv_c));
        let recv_len = acc.len();
        comm.sendrecv_f32_segmented(send, right, recv_len, left, segment_len, &mut |off, seg| {
            add_assign(&mut acc[off..off + seg.len()], seg);
            Ok(())
        })?;
    }

    // Rank r now owns the full sum of chunk r + 1.
    if mean {
        divide(&mut buf[chunk_range(n, p, (r + 1) % p)], p);
    }

    // Allgather: circulate the finished chunks; every rank ends with the
    // owners' bytes.
    for s in 0..p - 1 {
        let send_c = (r + 1 + p - s) % p;
        let recv_c = (r + p - s) % p;
        let (send, recv) =
            split_send_recv(buf, chunk_range(n, p, send_c), chunk_range(n, p, recv_c));
        comm.sendrecv_f32(send, right, recv, left)?;
    }
    Ok(())
}
