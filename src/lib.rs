//! # ringsgd
//!
//! Data-parallel SGD for small CPU clusters (one to a handful of Raspberry
//! Pis, or a laptop), with a hand-written ring allreduce over MPI.
//!
//! Layers of the crate, bottom up:
//!
//! * [`comm`]: the small [`Transport`](comm::Transport) trait (rank, size,
//!   non-blocking byte exchanges) with an MPI implementation (feature `mpi`)
//!   and an in-process one (ranks as threads), and
//!   [`Communicator`](comm::Communicator): typed messages, broadcast and
//!   barrier, written once for every transport.
//! * [`collectives`]: ring allreduce (reduce-scatter + allgather) and the
//!   baselines (MPI's own allreduce, gather-to-root), written once against the
//!   trait.
//! * [`parallel`]: a compute pool of exactly the number of cores granted.
//! * [`kernels`]: which SIMD kernels (portable, AVX2+FMA, AVX-512) the
//!   GEMM and convolutions run, chosen at run time; forced with
//!   [`kernels::select_isa`] or `RINGSGD_KERNELS`.
//! * [`model`]: the [`Trainable`](model::Trainable) trait, what the trainer
//!   needs from any model (flat parameters and gradients, the gradient of
//!   the loss on a batch).
//! * [`nn`]: a hand-written CNN (conv, pool, linear, loss) on `ndarray`, with
//!   all parameters in one flat buffer.
//! * [`optim`]: SGD with momentum, weight decay, Nesterov and LR schedules.
//! * [`data`]: CIFAR-10 loading, augmentation, sharding.
//! * [`checkpoint`]: checkpoints and safetensors export.
//! * [`health`]: the node's CPU temperature and clock (throttling).
//! * [`trainer`]: the data-parallel training loop over any
//!   [`Trainable`](model::Trainable) model.
//!
//! The speedup sweep behind `cargo bench --bench speedup` (launcher, tables,
//! plots, cost model) is not part of the library: it lives with the bench in
//! the repository's `benches/speedup` crate.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod collectives;
pub mod comm;
pub mod data;
mod error;
pub mod health;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod optim;
pub mod output;
pub mod parallel;
pub mod trainer;

pub use error::{Error, Result};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
