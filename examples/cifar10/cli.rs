//! Command-line flags of the cifar10 example.

use std::path::PathBuf;

use clap::Parser;
use ringsgd::collectives::{Algorithm, Wire};
use ringsgd::optim::LrSchedule;

/// `--bucket-kb` when not given: PiNet's fully connected layers (4.2 MB)
/// in one bucket and its convolutions (262 KB) in the other (see the
/// README's overlap section for the measurements behind it).
pub const DEFAULT_BUCKET_KB: usize = 1024;

/// Train a CNN (PiNet by default) on CIFAR-10 with data-parallel SGD.
///
/// Standalone it runs as one rank; under `mpirun -np N` as N ranks (one per
/// Raspberry Pi with `--hostfile hostfiles/piN`); with `--local-ranks N` as N
/// ranks in threads of this process (no MPI).
///
/// Every output (--checkpoint, --metrics-csv, --export, --summary-json) must
/// be a regular file or absent, in an existing writable folder, distinct from
/// the others and from the --data files; all are checked before the data is
/// loaded and written atomically (temporary file, then rename). Under mpirun
/// every rank must be given the same flags, except --cores, --data,
/// --download, --cache-dir, --download-url, --no-progress and --log-every,
/// which may differ per node.
#[derive(Parser, Debug, Clone)]
#[command(name = "cifar10", version, about, allow_negative_numbers = true)]
pub struct Args {
    /// CIFAR-10 binary version: the .tar.gz, the extracted
    /// `cifar-10-batches-bin/` folder, or a folder containing either.
    #[arg(long, value_name = "PATH", conflicts_with = "synthetic")]
    pub data: Option<PathBuf>,

    /// Download the official archive (HTTPS, MD5-checked) into the cache
    /// folder when --data is not given or does not exist.
    #[arg(long)]
    pub download: bool,

    /// Require the --data archive to have this MD5 [default when given
    /// without a value: the official archive's]. Without the flag the MD5
    /// is checked only for a file of the official archive's size; the gzip
    /// CRC is always checked.
    #[arg(long, value_name = "MD5", num_args = 0..=1,
          default_missing_value = ringsgd::data::download::CIFAR10_MD5, conflicts_with = "synthetic")]
    pub verify_md5: Option<String>,

    /// Where --download stores the archive.
    #[arg(long, value_name = "DIR", default_value = "~/.cache/ringsgd")]
    pub cache_dir: String,

    /// URL of the archive for --download.
    #[arg(long, value_name = "URL", default_value = ringsgd::data::download::CIFAR10_URL)]
    pub download_url: String,

    /// Train on N generated CIFAR-shaped images (and N/5 test images) instead
    /// of CIFAR-10; for benchmarks and smoke tests.
    #[arg(long, value_name = "N")]
    pub synthetic: Option<usize>,

    /// Passes over the training set.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub epochs: u64,

    /// Stop after N optimiser steps in total (quick runs).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,

    /// Images per optimiser step over all ranks (a multiple of the rank count).
    #[arg(long, value_name = "B", default_value_t = 128)]
    pub global_batch: usize,

    /// Peak learning rate [default: 0.05 x global batch / 128].
    #[arg(long, value_name = "LR")]
    pub lr: Option<f32>,

    /// Learning-rate schedule: constant, step or cosine.
    #[arg(long, value_name = "S", default_value = "cosine")]
    pub schedule: String,

    /// Linear warm-up steps of the cosine schedule.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_steps: u64,

    /// Step schedule: multiply the learning rate by --step-gamma every N
    /// epochs.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub step_epochs: u64,

    /// Step schedule: factor applied every --step-epochs.
    #[arg(long, value_name = "G", default_value_t = 0.1)]
    pub step_gamma: f32,

    /// SGD momentum.
    #[arg(long, value_name = "M", default_value_t = 0.9)]
    pub momentum: f32,

    /// L2 weight decay (coupled, as PyTorch's SGD).
    #[arg(long, value_name = "WD", default_value_t = 5e-4)]
    pub weight_decay: f32,

    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,

    /// Compute cores per rank [default: this node's cores / ranks on this
    /// node].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,

    /// Gradient averaging: ring, mpi (MPI_Allreduce) or naive (gather to
    /// rank 0, average, broadcast).
    #[arg(long, value_name = "ALG", default_value = "ring")]
    pub allreduce: Algorithm,

    /// Number format of gradient values on the wire: f32, bf16 or fp16 (16
    /// bits halve the bytes; partial sums stay f32). Ring only.
    #[arg(long, value_name = "FMT", default_value = "f32")]
    pub wire: Wire,

    /// The network link's rate (e.g. 1gbit, 100mbit), to show the
    /// allreduce's bandwidth as a fraction of it in each epoch line
    /// [default: the rate the kernel reports for the default route's
    /// interface, if any].
    #[arg(long, value_name = "RATE", value_parser = parse_rate, allow_hyphen_values = true)]
    pub link_rate: Option<f64>,

    /// Overlap the gradient allreduce with backward in buckets of at least
    /// this many KiB, last layer first (0: reduce the whole gradient after
    /// backward; the default puts PiNet's fully connected layers and its
    /// convolutions in two buckets). Ring only [default: 1024].
    #[arg(long, value_name = "KIB")]
    pub bucket_kb: Option<usize>,

    /// Shares of the global batch per rank: off (equal; runs are bitwise
    /// reproducible) or auto (each rank's share follows its measured speed,
    /// re-decided at every epoch end, or every --balance-every steps; for
    /// mixed or throttling boards).
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = ["off", "auto"])]
    pub balance: String,

    /// With --balance auto: re-decide the shares every N steps instead of
    /// at the end of each epoch (0: at the end of each epoch).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub balance_every: u64,

    /// Seed of the weights, the data order and the augmentation.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// Turn off random crop + flip augmentation.
    #[arg(long)]
    pub no_augment: bool,

    /// Checkpoint file written by rank 0 after every epoch and at the end.
    /// An existing file is never replaced by a fresh run: pass --resume,
    /// --resume-if-present or --overwrite.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,

    /// Continue from --checkpoint, which must exist; --metrics-csv is
    /// appended to (its rows of the epoch the run continues in, and later,
    /// are replaced, so that it reads as one run).
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,

    /// Continue from --checkpoint if it exists, else start afresh (for job
    /// scripts that are simply resubmitted after a crash).
    #[arg(long, requires = "checkpoint", conflicts_with = "resume")]
    pub resume_if_present: bool,

    /// Start afresh even if --checkpoint or --metrics-csv exist, replacing
    /// them (each at its first write: both stay as they are until the end
    /// of the first epoch).
    #[arg(long, conflicts_with_all = ["resume", "resume_if_present"])]
    pub overwrite: bool,

    /// Write one CSV row of metrics per epoch (rank 0). A fresh run refuses
    /// a file that already holds rows unless --overwrite; a resume appends
    /// (replacing the rows of the epochs it trains again).
    #[arg(long, value_name = "PATH")]
    pub metrics_csv: Option<PathBuf>,

    /// Export the trained weights as safetensors (rank 0), replacing the
    /// file at the end of the run.
    #[arg(long, value_name = "PATH.safetensors")]
    pub export: Option<PathBuf>,

    /// Write a JSON summary of step timings (rank 0), for the speedup bench.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,

    /// Steps excluded from --summary-json's medians [default: min(2, steps/4)].
    #[arg(long, value_name = "N")]
    pub summary_warmup: Option<usize>,

    /// Seconds a rank may wait for its peers in a training step before it
    /// checks which ranks still answer and ends the job naming those that
    /// do not (dead, frozen or cut off). Evaluation, checkpoints and the
    /// first steps get 6x, loading the data 12x. 0: wait forever.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub peer_timeout: f64,

    /// Compare weight hashes across ranks every K steps (0: never).
    #[arg(long, value_name = "K", default_value_t = 100)]
    pub verify_every: u64,

    /// Skip the test-set evaluation after each epoch.
    #[arg(long)]
    pub no_eval: bool,

    /// Model spec (see ringsgd::nn), or "pinet".
    #[arg(long, value_name = "SPEC", default_value = "pinet")]
    pub model: String,

    /// Run N ranks as threads of this process instead of MPI ranks (refused
    /// under mpirun with more than one process).
    #[arg(long, value_name = "N")]
    pub local_ranks: Option<usize>,

    /// Print per-epoch lines only, no progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Rank 0 prints a step line (epoch and step, images/s, the step's
    /// loss, ETA of the whole run) every N steps (`--log-every 50`) or
    /// seconds (`--log-every 30s`); 0 turns it off [default: 30s when no
    /// progress bar is shown, e.g. under mpirun; off under the bar].
    #[arg(long, value_name = "N|Ns", value_parser = parse_log_every, allow_hyphen_values = true)]
    pub log_every: Option<LogEvery>,
}

/// How often `--log-every` prints a step line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogEvery {
    Off,
    Steps(u64),
    Seconds(f64),
}

/// `50` (steps), `30s` (seconds), `0` (off).
fn parse_log_every(s: &str) -> Result<LogEvery, String> {
    let bad = || format!("{s:?}: expected a number of steps (50) or seconds (30s), or 0");
    if let Some(secs) = s.strip_suffix('s') {
        let v: f64 = secs.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() || v < 0.0 {
            return Err(bad());
        }
        return Ok(if v == 0.0 {
            LogEvery::Off
        } else {
            LogEvery::Seconds(v)
        });
    }
    match s.trim().parse::<u64>().map_err(|_| bad())? {
        0 => Ok(LogEvery::Off),
        n => Ok(LogEvery::Steps(n)),
    }
}

impl Args {
    /// The learning-rate schedule named by --schedule, for
    /// `steps_per_epoch` steps an epoch.
    pub fn lr_schedule(&self, steps_per_epoch: u64) -> ringsgd::Result<LrSchedule> {
        match self.schedule.as_str() {
            "constant" => Ok(LrSchedule::Constant),
            "step" => Ok(LrSchedule::Step {
                every_steps: self.step_epochs.saturating_mul(steps_per_epoch).max(1),
                gamma: self.step_gamma,
            }),
            "cosine" => Ok(LrSchedule::Cosine {
                warmup_steps: self.warmup_steps,
                total_steps: 0,
            }),
            other => Err(ringsgd::Error::invalid(format!(
                "--schedule: unknown schedule '{other}' (expected constant, step or cosine)"
            ))),
        }
    }
}

/// `1gbit`, `100mbit`, `940mbit`, `10kbit` (bits per second).
fn parse_rate(s: &str) -> Result<f64, String> {
    let lower = s.to_ascii_lowercase();
    let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)]
        .iter()
        .find_map(|(u, m)| lower.strip_suffix(u).map(|n| (n.to_string(), *m)))
        .ok_or_else(|| format!("{s:?}: expected a rate such as 1gbit or 100mbit"))?;
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a rate such as 1gbit or 100mbit"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v * mult)
    } else {
        Err(format!("{s:?}: the rate must be positive"))
    }
}
