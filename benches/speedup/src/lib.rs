//! Speedup curves: sweeping nodes x cores, splitting each step into compute,
//! waiting and allreduce, and a cost model that predicts beyond the measured
//! points.
//!
//! This crate is what `cargo bench --bench speedup` of the ringsgd
//! repository is made of. It is a workspace member of its own (not part of
//! the `ringsgd` library) so that users of the library compile none of it
//! nor its dependencies (plotters, serde, serde_json). It is pure Rust with
//! no MPI: the sweep launches the training binary (`examples/cifar10`) under
//! `mpirun` as a subprocess and reads the JSON summary rank 0 writes. Errors
//! are the library's [`ringsgd::Error`].
//!
//! * [`summary`](RunSummary): the binary's `--summary-json` output, one
//!   [`Measurement`] per configuration and its [`TimingSplit`].
//! * [`analyse`]: speedup `S = T(1 node x 1 core) / T(p nodes x c cores)` at
//!   fixed global batch, against the baseline of the same algorithm, and
//!   efficiency `S / (p c)`.
//! * [`to_csv`], [`to_markdown`], the SVG plots ([`time_vs_nodes_svg`],
//!   [`speedup_svg`], [`efficiency_svg`], [`model_svg`]) and
//!   [`write_outputs`].
//! * The cost model ([`CostModel`], [`fit_compute`], [`fit_link`],
//!   [`ModelReport`]): `T(p) = t_0 + ceil(B/p) t_img + A(p)` with
//!   `A_ring(p) = 2(p-1)(alpha + beta N/p)` and
//!   `A_gather(p) = 2(p-1)(alpha + beta N)`; see [`model`] for
//!   the derivations and assumptions.
//! * The sweep driver: [`SweepOptions`] (flags and `RINGSGD_*` variables),
//!   [`plan_sweep`], [`Launcher`].
//!
//! ```
//! use ringsgd_speedup::{analyse, to_markdown, Algorithm, Measurement, RunSummary};
//! let json = r#"{"ranks":1,"cores_per_rank":1,"global_batch":64,"steps":12,
//!   "allreduce":"ring","param_count":1116970,"grad_bytes":4467880,"warmup_steps":2,
//!   "step_s_median":0.8,"compute_s_median":0.78,"allreduce_s_median":0.0,
//!   "wait_s_median":0.0,"images_per_sec":80.0,"peak_rss_bytes_max":60000000,
//!   "total_s":10.0}"#;
//! let summary = RunSummary::from_json(json, "ring-n1-c1.json".as_ref())?;
//! let m = Measurement::new(Algorithm::Ring, 1, 1, summary)?;
//! let rows = analyse(&[m], 50_000)?;
//! assert!(to_markdown(&rows).contains("| ring | 1 | 1 | 1 | 800.0 |"));
//! # Ok::<(), ringsgd::Error>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod analysis;
pub mod model;
mod options;
mod outputs;
mod plot;
mod projection;
mod report;
mod summary;
mod sweep;

pub use analysis::{analyse, ScalingRow, CIFAR10_EPOCH_IMAGES};
pub use model::{
    first_nodes_with_efficiency_below, fit_compute, fit_link, images_per_rank,
    max_nodes_with_efficiency_at_least, AllreduceSample, Broadcast, ComputeFit, ComputeSample,
    CostModel, Link, LinkFit, OverlapModel, Prediction, Scheme,
};
pub use options::{env_var_of, hostfile_hosts, parse_counts, SweepOptions, USAGE};
pub use outputs::{write_outputs, OUTPUT_FILES};
pub use plot::{efficiency_svg, model_svg, speedup_svg, time_vs_nodes_svg};
pub use projection::{
    MeasuredPoint, ModelOptions, ModelReport, Scenario, STUDY_SPEEDUP_AT_3_NODES,
};
pub use report::{to_csv, to_markdown, CSV_HEADER};
pub use ringsgd::collectives::Algorithm;
pub use summary::{
    algorithm_label, parse_algorithm, per_rank_markdown, Measurement, RankSummary, RunSummary,
    TimingSplit,
};
pub use sweep::{
    plan_sweep, run_sweep, running_as_root, tail, CommandLine, DataSource, Launcher, RunConfig,
    SweepOutcome, SweepPlan,
};
