//! Everything checked before the data is loaded: the launch mode, the
//! numeric settings, that all ranks were given the same flags, and the
//! outputs (see [`crate::outputs`]). A bad input fails here, in seconds,
//! rather than after an epoch or after the whole run.

use ringsgd::{Error, Result};

use crate::cli::Args;
use crate::outputs;

/// Flags that may legitimately differ between ranks: where a node finds the
/// data (its content is compared separately), its core count (the results
/// do not depend on it), and rank 0's progress display. Clap ids.
#[cfg(feature = "mpi")]
pub const PER_RANK: [&str; 7] = [
    "cores",
    "data",
    "download",
    "cache_dir",
    "download_url",
    "no_progress",
    "log_every",
];

/// For `--local-ranks` and builds without MPI: the launch and the settings
/// checks, then the outputs. Returns the arguments with `resume` decided
/// (`--resume-if-present`).
pub fn local(args: &Args) -> Result<Args> {
    refuse_nested_launch(args)?;
    check_settings(args)?;
    let plan = outputs::plan(args)?;
    Ok(resolved(args, plan))
}

/// For an MPI world (collective: every rank calls it). The ranks first
/// agree on their command lines, so the checks that follow fail on all of
/// them together; rank 0, which writes every output, checks the outputs and
/// tells the others whether the run resumes. When rank 0's check fails it
/// returns the error (and the binary aborts the job) while the others wait.
#[cfg(feature = "mpi")]
pub fn world(args: &Args, comm: &dyn ringsgd::comm::Transport) -> Result<Args> {
    use ringsgd::collectives::ensure_agree_keyed;
    use ringsgd::comm::Communicator;
    if comm.size() > 1 {
        ensure_agree_keyed(comm, "the program", &program_identity()?).map_err(|e| {
            // Name the hosts too: that is where the stale copy is.
            let hosts: Vec<String> = (0..comm.size())
                .map(|r| format!("rank {r} on {}", comm.host_name(r)))
                .collect();
            Error::RankMismatch(format!(
                "{} ({}); copy the same build to every node",
                e.to_string().trim_start_matches("ranks disagree: "),
                hosts.join(", ")
            ))
        })?;
        ensure_agree_keyed(comm, "the command line", &command_line()?)?;
    }
    check_settings(args)?;
    let mut resume = [0u8];
    if comm.rank() == 0 {
        resume[0] = u8::from(outputs::plan(args)?.resume);
    }
    comm.broadcast(0, &mut resume)?;
    Ok(resolved(
        args,
        outputs::Plan {
            resume: resume[0] == 1,
        },
    ))
}

fn resolved(args: &Args, plan: outputs::Plan) -> Args {
    let mut args = args.clone();
    args.resume = plan.resume;
    args
}

/// The size of the job this process was started in by a launcher
/// (`mpirun` of Open MPI, or a PMI launcher such as MPICH's), with the
/// variable that says so.
fn launcher_world_size() -> Option<(&'static str, usize)> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .into_iter()
        .find_map(|var| Some((var, std::env::var(var).ok()?.trim().parse().ok()?)))
}

/// `--local-ranks` (or a build without MPI) started by `mpirun -np M` with
/// M > 1 would be M independent runs writing the same files.
fn refuse_nested_launch(args: &Args) -> Result<()> {
    let Some((var, m)) = launcher_world_size().filter(|&(_, m)| m > 1) else {
        return Ok(());
    };
    Err(Error::invalid(match args.local_ranks {
        Some(n) => format!(
            "--local-ranks {n}: this process was started by mpirun as one of {m} processes \
             ({var}={m}); each would run its own {n} ranks, {m} duplicate jobs racing on the same \
             files. Use either `mpirun -np {m}` or `--local-ranks {n}`, not both"
        ),
        None => format!(
            "this build has no MPI support (built without the `mpi` feature) but was started by \
             mpirun as one of {m} processes ({var}={m}): they would be {m} separate runs writing \
             the same files. Rebuild with the `mpi` feature, or use --local-ranks without mpirun"
        ),
    }))
}

/// The numeric and named settings, checked on their own (the library
/// checks some of them again, later, without the flag's name), and the
/// counts and memory of [`crate::limits`].
pub fn check_settings(args: &Args) -> Result<()> {
    let bad = |flag: &str, want: &str, got: f32| {
        Err(Error::invalid(format!("{flag}: must be {want}, got {got}")))
    };
    if let Some(lr) = args.lr {
        if !(lr.is_finite() && lr > 0.0) {
            return bad("--lr", "a finite number > 0", lr);
        }
    }
    if !(args.momentum.is_finite() && (0.0..1.0).contains(&args.momentum)) {
        return bad("--momentum", "in [0, 1)", args.momentum);
    }
    if !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        return bad("--weight-decay", "a finite number >= 0", args.weight_decay);
    }
    if !(args.step_gamma.is_finite() && args.step_gamma > 0.0 && args.step_gamma <= 1.0) {
        return bad("--step-gamma", "in (0, 1]", args.step_gamma);
    }
    if args.nesterov && args.momentum == 0.0 {
        return Err(Error::invalid("--nesterov needs --momentum > 0"));
    }
    if args.balance_every > 0 && args.balance != "auto" {
        return Err(Error::invalid(
            "--balance-every needs --balance auto (the shares are equal with --balance off)",
        ));
    }
    args.lr_schedule(1)?;
    crate::limits::check_counts(args)?;
    crate::limits::check_node_memory(args)
}

/// A value as the ranks compare it: numbers by value (`0.10` and `1e-1`
/// agree), anything else as written.
#[cfg(feature = "mpi")]
fn canonical_value(raw: &str) -> String {
    if let Ok(i) = raw.parse::<i128>() {
        return i.to_string();
    }
    match raw.parse::<f64>() {
        Ok(f) => format!("{f:?}"),
        Err(_) => raw.to_string(),
    }
}

/// What this process runs: the crate version and a checksum of its own
/// executable (ranks on different nodes must run the same build).
#[cfg(feature = "mpi")]
fn program_identity() -> Result<Vec<(String, Option<String>)>> {
    let exe = std::path::Path::new("/proc/self/exe");
    let bytes = std::fs::read(exe).map_err(|e| Error::io(exe, e))?;
    Ok(vec![
        (
            "version".to_string(),
            Some(env!("CARGO_PKG_VERSION").to_string()),
        ),
        (
            "executable".to_string(),
            Some(format!(
                "{} bytes, crc32 {:08x}",
                bytes.len(),
                crc32fast::hash(&bytes)
            )),
        ),
    ])
}

/// This process's command line as `(--flag, value)` for every flag but
/// those in [`PER_RANK`], defaults included (`None`: not given and no
/// default). Built from clap's definition, so a new flag is compared
/// without being listed here.
#[cfg(feature = "mpi")]
pub fn command_line() -> Result<Vec<(String, Option<String>)>> {
    use clap::CommandFactory;
    let cmd = Args::command();
    let matches = cmd
        .clone()
        .try_get_matches_from(std::env::args_os())
        .map_err(|e| Error::invalid(e.to_string()))?;
    let mut entries = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if PER_RANK.contains(&id) || id == "help" || id == "version" {
            continue;
        }
        let key = match arg.get_long() {
            Some(long) => format!("--{long}"),
            None => id.to_string(),
        };
        let value = matches.get_raw(id).map(|vals| {
            vals.map(|v| canonical_value(&v.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ")
        });
        entries.push((key, value));
    }
    Ok(entries)
}
