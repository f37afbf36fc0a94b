//! The master-node baseline: gather to rank 0, reduce, send back.

use super::reduce::{add_assign, divide};
use crate::comm::{Communicator, Transport};
use crate::error::Result;

/// Every rank sends `buf` to rank 0, which adds them in rank order
/// (`((x_0 + x_1) + x_2) + ...`, using `scratch` as the receive buffer),
/// optionally divides, and sends the result to every rank in turn. Rank 0
/// moves `2 (p - 1) N` values: the bottleneck the ring removes.
pub(crate) fn naive_allreduce(
    comm: &dyn Transport,
    buf: &mut [f32],
    scratch: &mut Vec<f32>,
    mean: bool,
) -> Result<()> {
    let p = comm.size();
    if p == 1 {
        return Ok(());
    }
    if comm.rank() != 0 {
        comm.send(0, buf)?;
        return comm.recv(0, buf);
    }
    scratch.resize(buf.len(), 0.0);
    for src in 1..p {
        comm.recv(src, scratch)?;
        add_assign(buf, scratch);
    }
    if mean {
        divide(buf, p);
    }
    for dest in 1..p {
        comm.send(dest, buf)?;
    }
    Ok(())
}
