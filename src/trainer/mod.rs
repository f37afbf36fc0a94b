//! Data-parallel training: the loop, its reports, checkpoints and resume.
//!
//! [`Trainer`] runs synchronous data-parallel SGD over any
//! [`Transport`](crate::comm::Transport): the in-process one (ranks as
//! threads) or MPI (ranks as processes on one or several machines).
//!
//! What a step does on each of `p` ranks:
//!
//! 1. take this rank's `global_batch / p` images of the step's global batch
//!    (same permutation on every rank, drawn from the seed: no data moves);
//! 2. forward and backward in the rank's compute pool (gradient of the mean
//!    loss of its share);
//! 3. wait in a barrier for the slowest rank (timed as `wait`);
//! 4. average the gradients with the configured allreduce (timed as
//!    `allreduce`);
//! 5. check that the averaged gradient (and every rank's loss) is finite,
//!    the same decision on every rank: a diverging run stops with
//!    [`Error::NonFinite`](crate::Error::NonFinite) before its first bad
//!    update, so the weights and the last checkpoint stay good;
//! 6. apply the same SGD update on every rank.

mod balance;
mod config;
mod data_parallel;
mod export;
mod finite;
mod metrics;
mod overlap;
mod resume;
mod timing;

pub use balance::{balanced_shares, equal_shares, grad_scale, Balance};
pub use config::TrainConfig;
pub use data_parallel::{StepOutcome, StepProgress, Trainer};
pub use export::export_safetensors;
pub use metrics::{EpochReport, EvalReport, MetricsCsv, RankReport, Straggler, METRICS_HEADER};
pub use timing::{critical_path, median_times, peak_rss_bytes, StepTimes};
