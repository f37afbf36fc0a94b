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

use std::path::PathBuf;
use std::process::{Command, Output};

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

/// `target/<profile>/examples/<name>`, found from this test's own path
/// (`target/<profile>/deps/mpi_programs-<hash>`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} not found: `cargo test` builds the examples; if you ran a single test \
         target, run `cargo build --examples` first",
        path.display()
    );
    path
}

fn mpi_command(np: usize, transport: Transport) -> Command {
    assert!(
        find_in_path("mpirun").is_some(),
        "mpirun not found in PATH, but the `mpi` feature is on: install Open MPI \
         (./.ci/deps does it) or test with --no-default-features"
    );
    let mut cmd = Command::new("timeout");
    cmd.args([
        "-k",
        "10",
        &TIMEOUT_S.to_string(),
        "mpirun",
        "-np",
        &np.to_string(),
        "--oversubscribe",
    ]);
    set_mpi_env(&mut cmd, transport);
    cmd
}

fn set_mpi_env(cmd: &mut Command, transport: Transport) {
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_mpi_yield_when_idle", "1");
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
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => stdout,
        Some(124) | Some(137) => panic!(
            "{what}: killed after {TIMEOUT_S} s (deadlock?)\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        ),
        code => panic!("{what}: exit status {code:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"),
    }
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

/// Runs `name` without mpirun: a one-rank MPI world.
fn standalone(name: &str) -> String {
    let exe = example(name);
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "10", &TIMEOUT_S.to_string()]).arg(&exe);
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
        let out = mpirun("mpi_allreduce", np, Transport::Default, &[]);
        assert!(
            out.contains(&format!("all 4 checks passed on {np} rank(s)")),
            "{out}"
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn allreduce_program_over_tcp() {
    let out = mpirun("mpi_allreduce", 3, Transport::Tcp, &[]);
    assert!(out.contains("all 4 checks passed on 3 rank(s)"), "{out}");
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn communicator_programs_on_1_to_4_ranks_and_over_tcp() {
    for np in 1..=4 {
        let out = mpirun("mpi_comm", np, Transport::Default, &[]);
        assert!(
            out.contains(&format!("all 6 checks passed on {np} rank(s)")),
            "{out}"
        );
    }
    let out = mpirun("mpi_comm", 2, Transport::Tcp, &[]);
    assert!(out.contains("all 6 checks passed on 2 rank(s)"), "{out}");
}

#[test]
#[cfg_attr(
    not(feature = "mpi"),
    ignore = "built without the `mpi` feature: the MPI test programs are not built"
)]
fn mismatched_lengths_are_an_error_on_every_rank_under_mpi() {
    for np in 2..=4 {
        let out = mpirun("mpi_mismatch", np, Transport::Default, &[]);
        assert!(
            out.contains(&format!("all 3 checks passed on {np} rank(s)")),
            "{out}"
        );
    }
    let out = mpirun("mpi_mismatch", 2, Transport::Tcp, &[]);
    assert!(out.contains("all 3 checks passed on 2 rank(s)"), "{out}");
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
