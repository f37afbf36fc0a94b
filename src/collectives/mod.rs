//! Collective operations written once against [`Transport`]: ring
//! allreduce and its baselines, allgather, and agreement checks.
//!
//! # Ring allreduce
//!
//! [`Allreducer`] with [`Algorithm::Ring`] implements the bandwidth-optimal
//! ring allreduce of Patarasuk & Yuan ("Bandwidth optimal all-reduce
//! algorithms for clusters of workstations", J. Parallel Distrib. Comput. 69
//! (2009) 117-124): the buffer of `N` values is cut into `p` chunks; a
//! reduce-scatter of `p - 1` steps leaves rank `r` with the full sum of chunk
//! `(r + 1) mod p`, and an allgather of `p - 1` steps circulates the reduced
//! chunks. Each rank sends and receives `2 (p - 1) / p * N` values in total,
//! the lower bound for any allreduce, whatever `p`.
//!
//! Chunks travel in segments ([`Allreducer::with_segment_bytes`]) over the
//! transport's non-blocking [`exchange`](crate::comm::Transport::exchange):
//! every receive of the allreduce is posted at the start, and segment `k`
//! of step `s + 1` leaves as soon as segment `k` of step `s` has arrived and
//! been reduced, so the link stays busy across the step boundaries. Values
//! may travel in 16 bits ([`Wire`]), partial sums always in `f32`.
//!
//! Every partial sum of chunk `c` is formed in the same order, the order in
//! which the chunk travels around the ring starting at rank `c`, whatever the
//! timing; and the allgather copies the final values. Results are therefore
//! bitwise reproducible for a given world size and identical on all ranks.
//!
//! # Baselines
//!
//! [`Algorithm::Mpi`] calls the transport's own allreduce (`MPI_Allreduce`);
//! [`Algorithm::Naive`] is the master-node scheme: every rank sends its
//! buffer to rank 0, which sums in rank order, and sends the result back.
//!
//! ```
//! use ringsgd::collectives::{Algorithm, Allreducer};
//! use ringsgd::comm::{local, Transport};
//!
//! for algorithm in Algorithm::ALL {
//!     let out = local::run_ranks(3, |comm| {
//!         let mut grad = vec![comm.rank() as f32; 7];
//!         Allreducer::new(algorithm).allreduce_mean(&comm, &mut grad)?;
//!         Ok(grad)
//!     })?;
//!     assert!(out.iter().all(|g| g == &vec![1.0; 7]));
//! }
//! # Ok::<(), ringsgd::Error>(())
//! ```
//!
//! [`Transport`]: crate::comm::Transport

mod agree;
mod algorithm;
mod allgather;
mod allreduce;
mod naive;
mod reduce;
pub(crate) mod ring;
mod wire;

pub use agree::{ensure_agree, ensure_agree_keyed};
pub use algorithm::Algorithm;
pub use allgather::{allgather_bytes, allgather_fixed};
pub use allreduce::Allreducer;
pub use wire::Wire;
