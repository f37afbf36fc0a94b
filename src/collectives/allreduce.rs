//! [`Allreducer`]: the one entry point for summing or averaging a buffer over
//! all ranks, whatever the algorithm.

use super::algorithm::Algorithm;
use super::allgather::allgather_fixed;
use super::naive::naive_allreduce;
use super::reduce::divide;
use super::ring::{ring_allreduce, RingScratch};
use super::wire::Wire;
use crate::comm::Transport;
use crate::error::{Error, Result};

/// Bytes of the per-call agreement header: length, segment size (u64 LE
/// each), algorithm code, operation code, wire format code, padding.
const HEADER_BYTES: usize = 24;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Sum,
    Mean,
}

impl Op {
    fn code(self) -> u8 {
        match self {
            Op::Sum => 1,
            Op::Mean => 2,
        }
    }

    fn name(code: u8) -> &'static str {
        match code {
            1 => "sum",
            2 => "mean",
            _ => "?",
        }
    }
}

/// Sums or averages `&mut [f32]` buffers over all ranks of a
/// [`Transport`], in place, with a reusable scratch buffer.
///
/// Every call first checks, on every rank, that all ranks passed the same
/// length, algorithm, operation and segment size (a 24-byte header travels
/// once around the ring); any disagreement is an [`Error::RankMismatch`] on
/// every rank, naming the ranks and their values, and nothing is reduced.
///
/// Once warm (after the first call with the largest buffer), calls do not
/// allocate.
///
/// ```
/// use ringsgd::collectives::{Algorithm, Allreducer};
/// use ringsgd::comm::{local, Transport};
///
/// let out = local::run_ranks(4, |comm| {
///     let mut reducer = Allreducer::new(Algorithm::Ring).with_segment_bytes(64 * 1024);
///     let mut grad: Vec<f32> = (0..10).map(|i| (i * (comm.rank() + 1)) as f32).collect();
///     reducer.allreduce_sum(&comm, &mut grad)?;
///     Ok(grad)
/// })?;
/// let expected: Vec<f32> = (0..10).map(|i| (i * 10) as f32).collect();
/// assert!(out.iter().all(|g| g == &expected));
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Allreducer {
    algorithm: Algorithm,
    segment_bytes: usize,
    wire: Wire,
    /// Receive buffer of rank 0 in the naive algorithm.
    scratch: Vec<f32>,
    /// The ring's wire buffers.
    ring: RingScratch,
    /// Whether every call first checks that the ranks agree.
    check_every_call: bool,
    /// Bytes this rank sent in the last call (ring only; 0 otherwise).
    last_bytes_sent: usize,
    /// `size * HEADER_BYTES` bytes for the agreement check.
    headers: Vec<u8>,
}

impl Allreducer {
    /// Default pipelining segment of the ring: 256 KiB (64 Ki values).
    /// Measured on the virtual 1 Gbit cluster (README, "A ring at the
    /// link's speed"), PiNet's 4.47 MB: 128 KiB and 256 KiB alike (50.6 /
    /// 57-58 ms at p = 3 / 4), 1 MiB 59-63 / 76-80 ms (the pipeline fills
    /// and drains in coarser steps), 64 KiB slower again at p = 3-4
    /// (per-message costs); with bf16 on the wire 256 KiB beat 128 KiB by
    /// 20%.
    pub const DEFAULT_SEGMENT_BYTES: usize = 256 << 10;

    /// An allreducer running `algorithm`, with the default segment size.
    pub fn new(algorithm: Algorithm) -> Allreducer {
        Allreducer {
            algorithm,
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            wire: Wire::F32,
            scratch: Vec::new(),
            ring: RingScratch::default(),
            check_every_call: true,
            last_bytes_sent: 0,
            headers: Vec::new(),
        }
    }

    /// Sets the ring's pipelining segment in bytes (rounded down to whole
    /// `f32` values, at least one); `0` turns segmentation off (each chunk
    /// is one message). All ranks must use the same value (checked). Other
    /// algorithms ignore it.
    pub fn with_segment_bytes(mut self, bytes: usize) -> Allreducer {
        self.segment_bytes = bytes;
        self
    }

    /// Sets the number format of values on the wire (ring only; the other
    /// algorithms always move `f32`). All ranks must use the same (checked).
    pub fn with_wire(mut self, wire: Wire) -> Allreducer {
        self.wire = wire;
        self
    }

    /// Turns the per-call agreement check off (`false`) or on (`true`, the
    /// default). Without it a call saves one small allgather (`p - 1`
    /// network latencies, ~0.3-0.8 ms on 1 GbE with 3-4 ranks), for callers
    /// that have agreed on length, operation, algorithm, segment size and
    /// wire format once (as the trainer does at start with
    /// [`ensure_agree`](super::ensure_agree)). Ranks that then disagree are
    /// still not left with silent garbage: the receives of a different
    /// length fail (an [`Error::Comm`], or under MPI the job ends with a
    /// truncation error).
    pub fn with_check_every_call(mut self, on: bool) -> Allreducer {
        self.check_every_call = on;
        self
    }

    /// The wire format of the ring.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Bytes this rank put on the wire in the last call (the ring's data
    /// messages; 0 for the other algorithms, whose traffic the transport
    /// does not report).
    pub fn last_bytes_sent(&self) -> usize {
        self.last_bytes_sent
    }

    /// The algorithm this allreducer runs.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The configured segment size in bytes (`0`: unsegmented).
    pub fn segment_bytes(&self) -> usize {
        self.segment_bytes
    }

    /// Segment size in elements as used by the ring (`0`: unsegmented).
    fn segment_len(&self) -> usize {
        if self.segment_bytes == 0 {
            0
        } else {
            (self.segment_bytes / std::mem::size_of::<f32>()).max(1)
        }
    }

    /// Replaces `buf` on every rank by the element-wise sum over all ranks.
    pub fn allreduce_sum(&mut self, comm: &dyn Transport, buf: &mut [f32]) -> Result<()> {
        self.run(comm, buf, Op::Sum)
    }

    /// Replaces `buf` on every rank by the element-wise mean over all ranks
    /// (the sum divided by `comm.size()`).
    pub fn allreduce_mean(&mut self, comm: &dyn Transport, buf: &mut [f32]) -> Result<()> {
        self.run(comm, buf, Op::Mean)
    }

    fn run(&mut self, comm: &dyn Transport, buf: &mut [f32], op: Op) -> Result<()> {
        if self.check_every_call {
            self.check_agreement(comm, buf.len(), op)?;
        }
        if buf.is_empty() || comm.size() == 1 {
            return Ok(());
        }
        let mean = op == Op::Mean;
        self.last_bytes_sent = 0;
        match self.algorithm {
            Algorithm::Ring => {
                let seg = self.segment_len();
                self.last_bytes_sent =
                    ring_allreduce(comm, buf, &mut self.ring, seg, self.wire, mean)?;
                Ok(())
            }
            Algorithm::Naive => naive_allreduce(comm, buf, &mut self.scratch, mean),
            Algorithm::Mpi => {
                match comm.native_allreduce_sum_f32(buf) {
                    Some(res) => res?,
                    // No native allreduce: the gather-to-root scheme stands in.
                    None => naive_allreduce(comm, buf, &mut self.scratch, false)?,
                }
                if mean {
                    divide(buf, comm.size());
                }
                Ok(())
            }
        }
    }

    fn check_agreement(&mut self, comm: &dyn Transport, len: usize, op: Op) -> Result<()> {
        let p = comm.size();
        if p == 1 {
            return Ok(());
        }
        let mut mine = [0u8; HEADER_BYTES];
        mine[..8].copy_from_slice(&(len as u64).to_le_bytes());
        mine[8..16].copy_from_slice(&(self.segment_len() as u64).to_le_bytes());
        mine[16] = self.algorithm.code();
        mine[17] = op.code();
        mine[18] = self.wire.code();
        self.headers.resize(p * HEADER_BYTES, 0);
        allgather_fixed(comm, &mine, &mut self.headers)?;
        if self.headers.chunks_exact(HEADER_BYTES).all(|h| h == mine) {
            return Ok(());
        }
        let all: Vec<&[u8]> = self.headers.chunks_exact(HEADER_BYTES).collect();
        Err(describe_mismatch(&all))
    }
}

fn word(h: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Names every field on which the ranks' headers differ, with each rank's
/// value.
fn describe_mismatch(all: &[&[u8]]) -> Error {
    let mut parts = Vec::new();
    let mut field = |name: &str, value: &dyn Fn(&[u8]) -> String| {
        let values: Vec<String> = all.iter().map(|h| value(h)).collect();
        if values.iter().any(|v| v != &values[0]) {
            let list: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(r, v)| format!("rank {r}: {v}"))
                .collect();
            parts.push(format!("{name} ({})", list.join(", ")));
        }
    };
    field("buffer lengths", &|h| word(h, 0).to_string());
    field("algorithms", &|h| {
        Algorithm::from_code(h[16]).map_or("?".to_string(), |a| a.to_string())
    });
    field("operations", &|h| Op::name(h[17]).to_string());
    field("segment sizes in values", &|h| word(h, 8).to_string());
    field("wire formats", &|h| {
        Wire::from_code(h[18]).map_or("?".to_string(), |w| w.to_string())
    });
    Error::RankMismatch(format!(
        "allreduce called with different {}",
        parts.join(" and different ")
    ))
}
