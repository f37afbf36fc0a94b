//! Counts, sizes and memory checked before any work: a flag whose value
//! would overflow, do nothing, or need more memory than this machine has is
//! refused with an error naming the flag and the figure, instead of a run
//! that silently trains with a learning rate of 0, never starts, or is
//! killed for memory after a minute.
//!
//! The rules (also in the README):
//!
//! * `--epochs` in 1..=[`MAX_EPOCHS`] (`--epochs 0` would end before the
//!   first step even with `--max-steps`); `--max-steps`, `--step-epochs`,
//!   `--synthetic`, `--global-batch` and `--local-ranks` >= 1;
//! * `--bucket-kb` only with the ring allreduce, and at most 1 TiB;
//! * `--cores` in 1..=4 x this node's online CPUs (oversubscribing a core
//!   more than 4 times is never faster, and each compute thread costs a
//!   stack and its workspaces);
//! * once the training set's size is known (before the first step): the
//!   run's length in steps fits in 64 bits and `--warmup-steps` is shorter
//!   than it (cosine schedule), and `--summary-warmup` leaves steps for the
//!   medians;
//! * the memory the data and the model will take on this node, estimated
//!   from `--synthetic` (or CIFAR-10's 60,000 records) and from the model
//!   spec and the per-rank batch, must not exceed 90% of what /proc/meminfo
//!   calls `MemAvailable`. The model's share is the library's own plan of
//!   its buffers ([`ModelPlan::memory`](ringsgd::nn::ModelPlan::memory),
//!   from the shape walk the model is built with), plus momentum.

use ringsgd::collectives::Algorithm;
use ringsgd::nn::ModelSpec;
use ringsgd::{Error, Result};

use crate::cli::Args;

/// Largest `--epochs` (a million passes over CIFAR-10 take centuries on a
/// Pi cluster; anything above is a typo).
pub const MAX_EPOCHS: u64 = 1_000_000;
/// Largest `--bucket-kb` (1 TiB: no gradient comes near it, and the byte
/// count fits in 64 bits).
pub const MAX_BUCKET_KB: usize = 1 << 30;
/// `--cores` may be at most this many times the node's online CPUs.
pub const CORES_FACTOR: usize = 4;
/// Bytes of one stored image and label.
const RECORD_BYTES: u128 = ringsgd::data::cifar::RECORD_BYTES as u128;
/// CIFAR-10's training and test records.
const CIFAR_RECORDS: u128 = 60_000;

fn invalid(msg: String) -> Error {
    Error::invalid(msg)
}

/// The counts that need no data: `--epochs`, `--max-steps`,
/// `--step-epochs`, `--cores`.
pub fn check_counts(args: &Args) -> Result<()> {
    if args.epochs == 0 {
        let hint = if args.max_steps.is_some() {
            " (--max-steps only stops a run early: with --epochs 0 nothing would run)"
        } else {
            ""
        };
        return Err(invalid(format!("--epochs 0: must be at least 1{hint}")));
    }
    if args.epochs > MAX_EPOCHS {
        return Err(invalid(format!(
            "--epochs {}: at most {MAX_EPOCHS} (a typo? the learning-rate schedule spans all \
             epochs, so a huge value trains with a learning rate near its peak or 0)",
            args.epochs
        )));
    }
    if args.max_steps == Some(0) {
        return Err(invalid(
            "--max-steps 0: must be at least 1 (leave it out to train all epochs)".into(),
        ));
    }
    if args.step_epochs == 0 {
        return Err(invalid(
            "--step-epochs 0: must be at least 1 (0 would decay the learning rate every step)"
                .into(),
        ));
    }
    for (flag, v) in [
        ("--synthetic", args.synthetic),
        ("--global-batch", Some(args.global_batch)),
        ("--local-ranks", args.local_ranks),
    ] {
        if v == Some(0) {
            return Err(invalid(format!("{flag} 0: must be at least 1")));
        }
    }
    if let Some(kb) = args.bucket_kb {
        if kb > 0 && args.allreduce != Algorithm::Ring {
            return Err(invalid(format!(
                "--bucket-kb {kb}: overlapping the allreduce with backward needs --allreduce ring \
                 (not {}); leave --bucket-kb out",
                args.allreduce
            )));
        }
        if kb > MAX_BUCKET_KB {
            return Err(invalid(format!(
                "--bucket-kb {kb}: must be at most {MAX_BUCKET_KB} (1 TiB; a bucket larger than \
                 the gradient is the whole gradient)"
            )));
        }
    }
    if let Some(c) = args.cores {
        let online = online_cpus();
        let most = CORES_FACTOR * online;
        if c == 0 || c > most {
            return Err(invalid(format!(
                "--cores {c}: must be in 1..={most} ({CORES_FACTOR} x the {online} CPUs of this \
                 node; more threads than that only add memory and switching)"
            )));
        }
    }
    Ok(())
}

/// Online CPUs of this node (not the affinity mask, which mpirun may
/// narrow to one core).
pub fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// `0-3,5,7-8` -> 7.
fn count_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in s.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// The run's length against the training set: `steps_per_epoch` steps an
/// epoch. Checked once the data is loaded, before the first step.
pub fn check_run_length(args: &Args, steps_per_epoch: u64) -> Result<()> {
    if steps_per_epoch == 0 {
        // Fewer images than one global batch: the trainer says so.
        return Ok(());
    }
    let total = steps_per_epoch.checked_mul(args.epochs).ok_or_else(|| {
        invalid(format!(
            "--epochs {}: {} epochs of {steps_per_epoch} steps do not fit in a 64-bit step count",
            args.epochs, args.epochs
        ))
    })?;
    let steps = args.max_steps.map_or(total, |m| m.min(total));
    if let Some(w) = args.summary_warmup {
        if w as u64 >= steps {
            return Err(invalid(format!(
                "--summary-warmup {w}: must be fewer than the run's {steps} steps, or no step is \
                 left for --summary-json's medians"
            )));
        }
    }
    if args.schedule == "cosine" && args.warmup_steps >= total {
        return Err(invalid(format!(
            "--warmup-steps {}: must be shorter than the run's {total} steps (--epochs {} x \
             {steps_per_epoch} steps per epoch); the cosine schedule decays after the warm-up",
            args.warmup_steps, args.epochs
        )));
    }
    Ok(())
}

/// What a run will hold in memory on this node, estimated up front.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Images and labels (train and test), held once per process.
    pub data: u128,
    /// Parameters, gradients, momentum and the convolutions' per-chunk
    /// gradient partials, per rank.
    pub weights: u128,
    /// Activations, their gradients and the compute threads' scratch for
    /// one per-rank batch, per rank.
    pub activations: u128,
    /// Parameters of the model.
    pub params: u128,
}

/// The memory estimate for `args` (model `spec`, `per_rank_batch` images
/// per rank, `cores` compute threads per rank). `None` when the spec does
/// not parse or its shapes do not work out (building the model reports
/// that).
pub fn estimate(args: &Args, spec: &str, per_rank_batch: u128, cores: usize) -> Option<Estimate> {
    let data = match args.synthetic {
        Some(n) => {
            let n = n as u128;
            (n + (n / 5).max(1)) * RECORD_BYTES
        }
        None => CIFAR_RECORDS * RECORD_BYTES,
    };
    let chw = [
        ringsgd::data::CHANNELS,
        ringsgd::data::HEIGHT,
        ringsgd::data::WIDTH,
    ];
    let plan = ModelSpec::parse(spec, chw).ok()?.plan().ok()?;
    let batch = usize::try_from(per_rank_batch).unwrap_or(usize::MAX);
    let mem = plan.memory(batch, cores);
    let params = plan.num_params() as u128;
    // The plan's figures saturate: an absurd spec gives an absurd figure,
    // never an overflow. Momentum is one more parameter-sized buffer.
    let weights = (mem.params as u128)
        .saturating_add(params.saturating_mul(4))
        .saturating_add(mem.partials as u128);
    // The model's exact buffers for the batch. On PiNet they grow by 234 MB
    // from a per-rank batch of 128 to one of 512 (2 cores), where peak RSS
    // was measured to grow by 222 MiB (233 MB).
    let activations = (mem.activations as u128).saturating_add(mem.scratch as u128);
    Some(Estimate {
        data,
        weights,
        activations,
        params,
    })
}

/// Bytes as "1.5 GiB".
pub fn human(bytes: u128) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `MemAvailable` of /proc/meminfo in bytes (`None` where there is none).
pub fn mem_available() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a run whose estimated memory on this node exceeds `available`:
/// `processes` processes on this node each hold the data, `ranks` ranks on
/// this node each hold a model (`--local-ranks N`: one process, N ranks).
pub fn check_memory(
    args: &Args,
    est: &Estimate,
    processes: u128,
    ranks: u128,
    available: u128,
) -> Result<()> {
    let data = est.data.saturating_mul(processes);
    let model = est
        .weights
        .saturating_add(est.activations)
        .saturating_mul(ranks);
    let total = data.saturating_add(model);
    // A tenth is left for the system and for the estimate's error.
    let usable = available / 10 * 9;
    if total <= usable {
        return Ok(());
    }
    let avail = format!(
        "this node has {} available (MemAvailable in /proc/meminfo; runs may use 90% of it)",
        human(available)
    );
    let per = |n: u128, what: &str| {
        if n > 1 {
            format!(" x {n} {what}")
        } else {
            String::new()
        }
    };
    if data > usable / 2 && data >= model {
        let what = match args.synthetic {
            Some(n) => format!(
                "--synthetic {n}: {n} training and {} test images of {RECORD_BYTES} bytes",
                (n / 5).max(1)
            ),
            None => "--data: CIFAR-10's 60000 images".to_string(),
        };
        return Err(invalid(format!(
            "{what} need {}{} in memory, and the whole run about {}, but {avail}",
            human(est.data),
            per(processes, "processes"),
            human(total)
        )));
    }
    Err(invalid(format!(
        "--model {:?}: the model would need about {} per rank ({} parameters: {} with gradients \
         and momentum; activations of {} images per rank (--global-batch {} over the ranks): \
         {}){}, and the whole run about {}, but {avail}; use a smaller model or a smaller \
         --global-batch{}",
        args.model,
        human(est.weights.saturating_add(est.activations)),
        est.params,
        human(est.weights),
        (args.global_batch as u128 / ranks_in_job(args).max(1)).max(1),
        args.global_batch,
        human(est.activations),
        match args.local_ranks {
            Some(n) if n > 1 => format!(" x {n} ranks on this node (--local-ranks {n})"),
            _ => per(ranks, "ranks on this node"),
        },
        human(total),
        if args.local_ranks.is_some_and(|n| n > 1) {
            ", or fewer --local-ranks"
        } else {
            ""
        },
    )))
}

/// Ranks of the whole job as far as this process can tell before MPI
/// starts (`--local-ranks`, else the launcher's world size, else 1).
pub fn ranks_in_job(args: &Args) -> u128 {
    args.local_ranks
        .or_else(|| env_usize("OMPI_COMM_WORLD_SIZE"))
        .or_else(|| env_usize("PMI_SIZE"))
        .unwrap_or(1)
        .max(1) as u128
}

fn env_usize(var: &str) -> Option<usize> {
    std::env::var(var).ok()?.trim().parse().ok()
}

/// The memory check of this node's processes and ranks (see
/// [`check_memory`]), skipped when /proc/meminfo has no figure or the
/// model's shapes do not work out.
pub fn check_node_memory(args: &Args) -> Result<()> {
    let spec = if args.model == "pinet" {
        ringsgd::nn::PINET_SPEC
    } else {
        args.model.as_str()
    };
    let ranks = ranks_in_job(args);
    let per_rank_batch = args.global_batch as u128 / ranks;
    let cores = args.cores.unwrap_or_else(online_cpus);
    let Some(est) = estimate(args, spec, per_rank_batch, cores) else {
        return Ok(());
    };
    let Some(available) = mem_available() else {
        log::debug!("no MemAvailable in /proc/meminfo: memory estimate {est:?} not checked");
        return Ok(());
    };
    // --local-ranks: one process holding the data once; under mpirun every
    // process on this node holds its own copy.
    let (processes, ranks_here) = match args.local_ranks {
        Some(n) => (1, n.max(1) as u128),
        None => {
            let local = env_usize("OMPI_COMM_WORLD_LOCAL_SIZE").unwrap_or(1).max(1) as u128;
            (local, local)
        }
    };
    check_memory(args, &est, processes, ranks_here, available)
}
