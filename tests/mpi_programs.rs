//! Launches the MPI test programs (`examples/mpi_*.rs`, built by `cargo
//! test` into `target/<profile>/examples/`) under `mpirun -np 1..4`, over
//! shared memory and over TCP, and standalone (MPI singleton). Each program
//! checks its own results on every rank and exits non-zero on failure; every
//! launch is killed after 120 s so that a deadlock fails the test instead of
//! hanging CI.
//!
//! Ranks beyond the core count are oversubscribed with
//! `mpi_yield_when_idle`, and runs as root are allowed, through `OMPI_*`
//! environment variables set for the child only.
//!
//! Without the `mpi` feature the programs are not built and these tests are
//! reported as ignored, with that reason. With the feature on, a missing
//! `mpirun` is a failure.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::example;

const TIMEOUT_S: u32 = 120;

#[derive(Clone, Copy, Debug)]
enum Transport {
    /// Whatever Open MPI picks on one machine: shared memory.
    Default,
    /// `btl tcp,self`: the loopback network path, as between Raspberry Pis.
    Tcp,
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn mpi_command(np: usize, transport: Transport) -> Command {
    assert!(
        find_in_path("mpirun").is_some(),
        "mpirun not found in PATH, but the `mpi` feature is on: install Open MPI \
         (./.ci/deps does it) or test with --no-default-features"
    );
    let mut cmd = common::with_timeout(TIMEOUT_S);
    common::add_mpirun(&mut cmd, np);
    set_mpi_env(&mut cmd, transport);
    cmd
}

fn set_mpi_env(cmd: &mut Command, transport: Transport) {
    common::set_ompi_env(cmd);
    match transport {
        Transport::Default => {
            cmd.env_remove("OMPI_MCA_btl");
        }
        Transport::Tcp => {
            cmd.env("OMPI_MCA_btl", "tcp,self")
                .env("OMPI_MCA_pml", "ob1");
        }
    }
}

fn check_output(what: &str, out: Output) -> String {
    let all = common::output_text(&out);
    assert!(
        !common::timed_out(&out),
        "{what}: killed after {TIMEOUT_S} s (deadlock?)\n{all}"
    );
    assert!(out.status.success(), "{what}: failed\n{all}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `name` on `np` ranks; returns its stdout.
fn mpirun(name: &str, np: usize, transport: Transport, args: &[&str]) -> String {
    let exe = example(name);
    let what = format!("mpirun -np {np} {name} {} ({transport:?})", args.join(" "));
    let out = mpi_command(np, transport)
        .arg(&exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not start `timeout mpirun`: {e}"));
    check_output(&what, out)
}

/// Runs `name` on `np` ranks and checks that it reports all its `checks`
/// passed.
fn passes(name: &str, checks: usize, np: usize, transport: Transport) {
    let out = mpirun(name, np, transport, &[]);
    assert!(
        out.contains(&format!("all {checks} checks passed on {np} rank(s)")),
        "{out}"
    );
}

/// Runs `name` without mpirun: a one-rank MPI world.
fn standalone(name: &str) -> String {
    let exe = example(name);
    let mut cmd = common::with_timeout(TIMEOUT_S);
    cmd.arg(&exe);
    set_mpi_env(&mut cmd, Transport::Default);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{name} standalone: could not start: {e}"));
    check_output(&format!("{name} standalone"), out)
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn allreduce_programs_on_1_to_4_ranks_over_shared_memory() {
    for np in 1..=4 {
        passes("mpi_allreduce", 4, np, Transport::Default);
    }
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn allreduce_program_over_tcp() {
    passes("mpi_allreduce", 4, 3, Transport::Tcp);
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn communicator_programs_on_1_to_4_ranks_and_over_tcp() {
    for np in 1..=4 {
        passes("mpi_comm", 6, np, Transport::Default);
    }
    passes("mpi_comm", 6, 2, Transport::Tcp);
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn mismatched_lengths_are_an_error_on_every_rank_under_mpi() {
    for np in 2..=4 {
        passes("mpi_mismatch", 3, np, Transport::Default);
    }
    passes("mpi_mismatch", 3, 2, Transport::Tcp);
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn programs_run_standalone_as_a_one_rank_world() {
    let out = standalone("mpi_allreduce");
    assert!(out.contains("all 4 checks passed on 1 rank(s)"), "{out}");
    let out = standalone("mpi_comm");
    assert!(out.contains("all 6 checks passed on 1 rank(s)"), "{out}");
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn benchmark_writes_the_documented_csv() {
    let csv = std::env::temp_dir().join(format!("ringsgd-bench-test-{}.csv", std::process::id()));
    let csv_arg = csv.to_str().expect("temp path is UTF-8");
    let out = mpirun(
        "allreduce_bench",
        2,
        Transport::Default,
        &[
            "--max-bytes",
            "16384",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--csv",
            csv_arg,
        ],
    );
    let text = std::fs::read_to_string(&csv).expect("the benchmark wrote its CSV");
    let _ = std::fs::remove_file(&csv);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("algorithm,ranks,bytes,seconds,algbw_gbps,busbw_gbps"),
        "{text}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    // Sizes 4 KiB and 16 KiB, three algorithms each.
    assert_eq!(rows.len(), 6, "{text}");
    for row in &rows {
        assert_eq!(row.len(), 6, "{text}");
        assert!(["ring", "mpi", "naive"].contains(&row[0]), "{text}");
        assert_eq!(row[1], "2");
        let bytes: f64 = row[2].parse().unwrap();
        let seconds: f64 = row[3].parse().unwrap();
        let algbw: f64 = row[4].parse().unwrap();
        let busbw: f64 = row[5].parse().unwrap();
        assert!(seconds > 0.0, "{text}");
        // Printed with 7 significant digits (seconds) and 6 decimals (GB/s).
        assert!(
            (algbw - bytes / seconds / 1e9).abs() <= 1e-6 + 1e-4 * algbw,
            "{text}"
        );
        // busbw = algbw * 2 (p - 1) / p = algbw at p = 2.
        assert!((busbw - algbw).abs() <= 2e-6, "{text}");
    }
    assert!(out.contains("busbw"), "{out}");
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn custom_model_example_trains_the_same_under_mpirun_as_in_process() {
    // The example's own checks: replicas, checkpoint round trip, accuracy.
    let args = ["--train", "1024", "--test", "256", "--epochs", "2"];
    let mpi = mpirun("custom_model", 2, Transport::Default, &args);
    let exe = example("custom_model");
    let mut cmd = common::with_timeout(TIMEOUT_S);
    cmd.arg(&exe).arg("--local-ranks").arg("2").args(args);
    let local = check_output(
        "custom_model --local-ranks 2",
        cmd.output().expect("start custom_model"),
    );
    let acc = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("test_accuracy="))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no test_accuracy line in\n{out}"))
    };
    // The same training on both transports: bitwise the same weights, so
    // the same accuracy (printed once, by rank 0).
    assert_eq!(acc(&mpi), acc(&local), "{mpi}\n---\n{local}");
    assert_eq!(mpi.matches("test_accuracy=").count(), 1, "{mpi}");
}
