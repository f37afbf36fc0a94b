//! `cargo bench --bench speedup -- [FLAGS]`: speedup curves over nodes x
//! cores per rank x allreduce algorithm, written to `target/speedup/`.
//!
//! The bench drives the training example as a subprocess under `mpirun`
//! (one launch per configuration, see `ringsgd_speedup::Launcher` for the
//! exact command line). Unless `--bin PATH` (or `RINGSGD_BIN`) names a
//! binary, it first runs `cargo build --release --example cifar10` with the
//! same cargo and manifest, and takes the binary's path from cargo's JSON
//! messages, so it always measures an up-to-date release build in the
//! target directory cargo uses (`CARGO_TARGET_DIR` is honoured).
//!
//! Run `cargo bench --bench speedup -- --help` for the flags; every flag has
//! a `RINGSGD_*` environment variable. Without cargo's `--bench` flag (under
//! `cargo test --benches`) it only prints the plan.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use ringsgd_speedup::{
    analyse, per_rank_markdown, run_sweep, running_as_root, to_markdown, write_outputs, Launcher,
    ModelOptions, ModelReport, RunSummary, SweepOptions, OUTPUT_FILES, USAGE,
};

fn main() -> ExitCode {
    let local_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --benches` / `--all-targets`
    // runs this binary without it. A multi-minute sweep has no place in a
    // test run: then only the options are checked and the plan printed.
    let plan_only = !args.iter().any(|a| a == "--bench");
    let opts = match SweepOptions::parse(args, |k| std::env::var(k).ok(), local_cores) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("speedup: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if plan_only {
        let (configs, skipped) = opts.run_configs(local_cores);
        println!(
            "speedup: not run by `cargo bench` (no --bench flag): {} runs planned, {} \
             nodes x cores pairs skipped; measure with `cargo bench --bench speedup`",
            configs.len(),
            skipped.len()
        );
        for c in &configs {
            println!("  {}", c.describe());
        }
        return ExitCode::SUCCESS;
    }
    match run(&opts, local_cores) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("speedup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn default_out_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("speedup"),
        None => manifest_dir().join("target").join("speedup"),
    }
}

/// Builds `examples/cifar10` in release mode and returns its path, as cargo
/// reports it.
fn build_example() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = manifest_dir().join("Cargo.toml");
    eprintln!("speedup: building the training binary: cargo build --release --example cifar10");
    let mut child = Command::new(&cargo)
        .args(["build", "--release", "--example", "cifar10"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    let mut executable = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let is_example = msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == "cifar10"
                && msg["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "example"));
            if is_example {
                if let Some(exe) = msg["executable"].as_str() {
                    executable = Some(PathBuf::from(exe));
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build --release --example cifar10` failed ({status}); fix the build, or \
             build the binary yourself and pass --bin PATH (RINGSGD_BIN)"
        ));
    }
    executable.ok_or_else(|| {
        "cargo built no executable for example cifar10; pass --bin PATH (RINGSGD_BIN)".into()
    })
}

fn check_mpirun(mpirun: &Path) -> Result<(), String> {
    let out = Command::new(mpirun)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}); install Open MPI (openmpi-bin) or pass --mpirun PATH",
                mpirun.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("Open MPI") && !text.contains("OpenRTE") {
        eprintln!(
            "speedup: warning: {} does not look like Open MPI's; the flags used \
             (--oversubscribe, --bind-to none, --map-by node) are Open MPI's",
            mpirun.display()
        );
    }
    Ok(())
}

fn list(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the sweep; `Ok(false)` when some run failed (partial outputs are
/// still written).
fn run(opts: &SweepOptions, local_cores: usize) -> Result<bool, String> {
    let out_dir = opts.out.clone().unwrap_or_else(default_out_dir);
    let mut model_options = opts.model.clone();
    if let Some(path) = &opts.model_summary {
        let summary = RunSummary::read(path).map_err(|e| e.to_string())?;
        let t = ModelOptions::image_time_from_summary(&summary)
            .map_err(|e| format!("--model-summary {}: {e}", path.display()))?;
        println!(
            "speedup: model compute {:.3} ms/image from {}",
            t * 1e3,
            path.display()
        );
        model_options.image_s = Some(t);
    }
    let binary = match &opts.bin {
        Some(b) if b.is_file() => b.clone(),
        Some(b) => {
            return Err(format!(
                "--bin {}: no such file (build it with `cargo build --release --example cifar10`)",
                b.display()
            ))
        }
        None => build_example()?,
    };
    check_mpirun(&opts.mpirun)?;
    if let Some(d) = &opts.data {
        if !d.exists() {
            return Err(format!("--data {}: no such file or directory", d.display()));
        }
    }
    let (configs, skipped) = opts.run_configs(local_cores);
    let algs: Vec<&str> = opts.algorithms.iter().map(|a| a.name()).collect();
    println!(
        "speedup: {} runs: nodes {} x cores/rank {} x {}; {} steps at global batch {} on {}; \
         {} ({local_cores} local cores)",
        configs.len(),
        list(&opts.nodes),
        list(&opts.cores),
        algs.join(","),
        opts.steps,
        opts.global_batch,
        match &opts.data {
            Some(d) => format!("CIFAR-10 from {}", d.display()),
            None => format!("{} synthetic images", opts.synthetic),
        },
        match &opts.hostfile {
            Some(h) => format!("cluster {}", h.display()),
            None => "this machine".into(),
        },
    );
    if !skipped.is_empty() {
        let s: Vec<String> = skipped.iter().map(|(p, c)| format!("{p}x{c}")).collect();
        println!(
            "speedup: skipped nodes x cores {} (more than the {local_cores} cores here: \
             oversubscribed cores measure the scheduler; --oversubscribe runs them anyway)",
            s.join(", ")
        );
    }
    if configs.is_empty() {
        return Err("nothing to run (see the skipped configurations above)".into());
    }
    let launcher = Launcher {
        mpirun: opts.mpirun.clone(),
        binary,
        hostfile: opts.hostfile.clone(),
        mpirun_args: opts.mpirun_args.clone(),
        example_args: opts.example_args.clone(),
        local_cores,
        as_root: running_as_root(),
        timeout: opts.timeout,
        run_dir: out_dir.join("runs"),
    };
    // Outputs of an earlier sweep must not pass for this one's.
    for name in OUTPUT_FILES {
        let path = out_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let started = Instant::now();
    let total = configs.len();
    let outcome = run_sweep(&launcher, &configs, |i, cfg, result, took| match result {
        Ok(m) => {
            let s = m.split();
            println!(
                "[{:>2}/{total}] {:<5} {}x{}: step {:7.1} ms = compute {:.1} + wait {:.1} + \
                 allreduce {:.1} + other {:.1}; {:.1} img/s ({:.1} s)",
                i + 1,
                cfg.algorithm.name(),
                cfg.nodes,
                cfg.cores_per_rank,
                s.step_s * 1e3,
                s.compute_s * 1e3,
                s.wait_s * 1e3,
                s.allreduce_s * 1e3,
                s.other_s * 1e3,
                m.images_per_sec(),
                took.as_secs_f64()
            );
        }
        Err(e) => eprintln!("speedup: {e} (run {} of {total})", i + 1),
    });
    let ok = outcome.failure.is_none();
    let measurements = outcome.measurements;
    if measurements.is_empty() {
        return Ok(false);
    }
    let rows = analyse(&measurements, opts.epoch_images).map_err(|e| e.to_string())?;
    let model = match ModelReport::build(&rows, &model_options) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("speedup: no cost model: {e}");
            None
        }
    };
    let written = write_outputs(&out_dir, &rows, model.as_ref()).map_err(|e| e.to_string())?;
    println!();
    print!("{}", to_markdown(&rows));
    // Which node bent the curve: every rank's compute, wait, temperature
    // and clock.
    let per_rank = per_rank_markdown(&measurements);
    if !per_rank.is_empty() {
        println!("\nper rank (last epoch of each run):");
        print!("{per_rank}");
    }
    if let Some(m) = &model {
        println!();
        print!("{}", m.summary_text());
    }
    println!(
        "\nspeedup: {} runs in {:.0} s{}; wrote",
        measurements.len(),
        started.elapsed().as_secs_f64(),
        if ok {
            ""
        } else {
            " (INCOMPLETE: a run failed)"
        }
    );
    for p in written {
        println!("  {}", p.display());
    }
    println!(
        "  {} (per-run summaries and logs)",
        launcher.run_dir.display()
    );
    Ok(ok)
}
