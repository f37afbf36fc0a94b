//! End-to-end tests of the speedup sweep driver with a fake training binary
//! (a shell script that writes a summary from a known cost model) and a fake
//! `mpirun` (a shell script that starts `-np` copies), so that the driver,
//! the outputs and the model fit are checked without MPI or the real example.
//! One test also runs the fake binary under the real `mpirun` when it is
//! installed.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ringsgd_speedup::{
    analyse, run_sweep, running_as_root, write_outputs, Algorithm, Broadcast, Launcher,
    ModelReport, Scheme, SweepOptions, CSV_HEADER, OUTPUT_FILES,
};

const FAKE_MPIRUN: &str = r#"#!/bin/sh
# Fake mpirun: -np P [Open MPI flags] BIN ARGS... starts P copies of BIN.
np=1
while [ $# -gt 0 ]; do
  case "$1" in
    -np) np=$2; shift 2 ;;
    --hostfile|--map-by|--bind-to) shift 2 ;;
    --mca) shift 3 ;;
    --oversubscribe|--allow-run-as-root) shift ;;
    --version) echo "fake mpirun (Open MPI compatible flags)"; exit 0 ;;
    -*) echo "fake mpirun: unknown flag $1" >&2; exit 9 ;;
    *) break ;;
  esac
done
pids=""
i=0
while [ $i -lt "$np" ]; do
  OMPI_COMM_WORLD_RANK=$i OMPI_COMM_WORLD_SIZE=$np "$@" &
  pids="$pids $!"
  i=$((i + 1))
done
rc=0
for p in $pids; do wait "$p" || rc=$?; done
exit $rc
"#;

/// The fake training binary; `@MODE@` is replaced per variant.
const FAKE_BIN: &str = r#"#!/bin/sh
# Fake examples/cifar10: parses the contract's flags and has rank 0 write a
# summary computed from a known model: t_img = 4 ms / cores, t0 = 2 ms,
# alpha = 100 us, beta = 1 ns/byte, wait 0.5 ms on >1 rank, other 1 ms.
while [ $# -gt 0 ]; do
  case "$1" in
    --synthetic|--data|--seed) shift 2 ;;
    --max-steps) steps=$2; shift 2 ;;
    --global-batch) batch=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --allreduce) alg=$2; shift 2 ;;
    --summary-json) out=$2; shift 2 ;;
    *) echo "fake cifar10: unknown argument $1" >&2; exit 2 ;;
  esac
done
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}
size=${OMPI_COMM_WORLD_SIZE:-1}
@MODE@
[ "$rank" = 0 ] || exit 0
awk -v p="$size" -v c="$cores" -v b="$batch" -v s="$steps" -v alg="$alg" 'BEGIN {
  n = 4467880; alpha = 1e-4; beta = 1e-9; timg = 0.004 / c
  ipr = int((b + p - 1) / p); compute = 0.002 + ipr * timg
  if (p == 1) ar = 0
  else if (alg == "naive") ar = 2 * (p - 1) * (alpha + beta * n)
  else if (alg == "ring") ar = 2 * (p - 1) * (alpha + beta * n / p)
  else ar = 1.1 * 2 * (p - 1) * (alpha + beta * n / p)
  wait = (p > 1) ? 0.0005 : 0; other = 0.001
  step = compute + wait + ar + other
  printf "{\"ranks\":%d,\"cores_per_rank\":%d,\"global_batch\":%d,\"steps\":%d,", p, c, b, s
  printf "\"allreduce\":\"%s\",\"param_count\":1116970,\"grad_bytes\":%d,\"warmup_steps\":2,", alg, n
  printf "\"step_s_median\":%.9f,\"compute_s_median\":%.9f,\"allreduce_s_median\":%.9f,", step, compute, ar
  printf "\"wait_s_median\":%.9f,\"images_per_sec\":%.6f,\"peak_rss_bytes_max\":%d,\"total_s\":%.6f}\n", wait, b / step, 123456789, s * step
}' > "$out.tmp" && mv "$out.tmp" "$out"
echo "fake cifar10: wrote $out"
"#;

struct Fakes {
    dir: PathBuf,
    mpirun: PathBuf,
    ok: PathBuf,
    fail: PathBuf,
    hang: PathBuf,
    silent: PathBuf,
}

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Writes the fake scripts once, before any test starts a process (a script
/// still open for writing in one thread while another forks could fail to
/// execute with ETXTBSY).
fn fakes() -> &'static Fakes {
    static FAKES: OnceLock<Fakes> = OnceLock::new();
    FAKES.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("scaling-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = Fakes {
            mpirun: dir.join("mpirun"),
            ok: dir.join("cifar10-ok"),
            fail: dir.join("cifar10-fail"),
            hang: dir.join("cifar10-hang"),
            silent: dir.join("cifar10-silent"),
            dir,
        };
        write_exe(&f.mpirun, FAKE_MPIRUN);
        write_exe(&f.ok, &FAKE_BIN.replace("@MODE@", ""));
        write_exe(
            &f.fail,
            &FAKE_BIN.replace(
                "@MODE@",
                "echo \"boom: injected failure on rank $rank\" >&2; exit 3",
            ),
        );
        write_exe(
            &f.hang,
            &FAKE_BIN.replace("@MODE@", "echo $$ > \"$out.pid.$rank\"; sleep 60"),
        );
        write_exe(&f.silent, &FAKE_BIN.replace("@MODE@", "exit 0"));
        f
    })
}

fn options(args: &[&str]) -> SweepOptions {
    SweepOptions::parse(args.iter().map(|s| s.to_string()), |_| None, 2).unwrap()
}

fn launcher(mpirun: &Path, bin: &Path, out: &Path, timeout: Duration) -> Launcher {
    Launcher {
        mpirun: mpirun.to_path_buf(),
        binary: bin.to_path_buf(),
        hostfile: None,
        mpirun_args: Vec::new(),
        example_args: Vec::new(),
        local_cores: 2,
        as_root: running_as_root(),
        timeout,
        run_dir: out.join("runs"),
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

fn assert_svg(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let body = text.trim();
    assert!(body.contains("<svg"), "{} has no <svg", path.display());
    assert!(body.ends_with("</svg>"), "{} is truncated", path.display());
    assert_eq!(
        body.matches("<g").count(),
        body.matches("</g>").count(),
        "{}: unbalanced groups",
        path.display()
    );
}

/// The smoke run of the sweep: every configuration, every output, and the
/// cost model recovering the fake binary's known parameters.
#[test]
fn fake_sweep_writes_outputs_and_recovers_the_model() {
    let f = fakes();
    let out = f.dir.join("sweep");
    let opts = options(&[
        "--bench",
        "--nodes",
        "1..3",
        "--cores",
        "1..2",
        "--oversubscribe",
        "--steps",
        "5",
        "--global-batch",
        "48",
    ]);
    let (configs, skipped) = opts.run_configs(2);
    assert!(skipped.is_empty());
    assert_eq!(configs.len(), 18);
    let l = launcher(&f.mpirun, &f.ok, &out, Duration::from_secs(30));
    let mut seen = 0;
    let outcome = run_sweep(&l, &configs, |i, _, r, _| {
        assert_eq!(i, seen);
        assert!(r.is_ok(), "{r:?}");
        seen += 1;
    });
    assert!(outcome.failure.is_none());
    assert_eq!(outcome.measurements.len(), 18);

    let rows = analyse(&outcome.measurements, 50_000).unwrap();
    let ring_3x1 = rows
        .iter()
        .find(|r| r.algorithm() == Algorithm::Ring && r.nodes() == 3 && r.cores_per_rank() == 1)
        .unwrap();
    // Speedup from the fake's formula: T(1x1) / T(3x1).
    let t = |p: f64, ar: f64| {
        0.002 + (48.0 / p).ceil() * 0.004 + ar + if p > 1.0 { 0.0005 } else { 0.0 } + 0.001
    };
    let ring3 = 4.0 * (1e-4 + 1e-9 * 4_467_880.0 / 3.0);
    let expected = t(1.0, 0.0) / t(3.0, ring3);
    assert!(close(ring_3x1.speedup.unwrap(), expected, 1e-6));
    assert!(close(ring_3x1.efficiency.unwrap(), expected / 3.0, 1e-6));

    let report = ModelReport::build(&rows, &opts.model).unwrap();
    let link = report.local_link.unwrap();
    assert!(link.identifiable);
    assert!(close(link.link.alpha_s, 1e-4, 1e-3), "{link:?}");
    assert!(close(link.link.beta_s_per_byte, 1e-9, 1e-4), "{link:?}");
    for fit in &report.compute {
        assert!(
            close(fit.per_image_s, 0.004 / fit.cores as f64, 1e-4),
            "{fit:?}"
        );
        assert!(close(fit.per_step_s, 0.002, 1e-2), "{fit:?}");
    }
    assert_eq!(report.cores, 2);
    let pi4_ring = report.scenario("Pi 4, 1 Gbit/s", Scheme::Ring).unwrap();
    let pi4_gather = report
        .scenario(
            "Pi 4, 1 Gbit/s",
            Scheme::GatherToRoot(Broadcast::Sequential),
        )
        .unwrap();
    assert!(pi4_ring.speedup_at(4).unwrap() > pi4_gather.speedup_at(4).unwrap());

    let written = write_outputs(&out, &rows, Some(&report)).unwrap();
    assert_eq!(written.len(), OUTPUT_FILES.len());
    let csv = std::fs::read_to_string(out.join("speedup.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(lines.len(), 19);
    assert!(
        lines[1].starts_with("ring,1,1,1,48,5,2,4467880,"),
        "{}",
        lines[1]
    );
    let md = std::fs::read_to_string(out.join("speedup.md")).unwrap();
    assert!(md.contains("| naive | 3 | 2 | 6 |"), "{md}");
    assert!(md.contains("the study measured 2.64x"), "{md}");
    for name in [
        "time_vs_nodes.svg",
        "speedup.svg",
        "efficiency.svg",
        "model.svg",
    ] {
        assert_svg(&out.join(name));
    }
    // One summary and one log per run, the log holding the command line.
    let log = std::fs::read_to_string(out.join("runs/naive-n2-c1.log")).unwrap();
    assert!(log.contains("-np 2"), "{log}");
    assert!(log.contains("--allreduce naive"), "{log}");
    assert!(log.contains("fake cifar10: wrote"), "{log}");
    assert!(out.join("runs/mpi-n3-c2.json").is_file());
}

#[test]
fn failing_run_reports_stderr_and_stops_the_sweep() {
    let f = fakes();
    let out = f.dir.join("fail");
    let opts = options(&["--nodes", "1..2", "--cores", "1", "--algorithms", "ring"]);
    let (configs, _) = opts.run_configs(2);
    let l = launcher(&f.mpirun, &f.fail, &out, Duration::from_secs(30));
    let outcome = run_sweep(&l, &configs, |_, _, _, _| {});
    assert!(outcome.measurements.is_empty());
    let (cfg, err) = outcome.failure.unwrap();
    assert_eq!((cfg.nodes, cfg.cores_per_rank), (1, 1));
    let msg = err.to_string();
    assert!(msg.contains("boom: injected failure on rank 0"), "{msg}");
    assert!(msg.contains("ring at 1 node x 1 core failed"), "{msg}");
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("--summary-json"), "{msg}");
    assert!(msg.contains("ring-n1-c1.log"), "{msg}");

    let silent = launcher(&f.mpirun, &f.silent, &out, Duration::from_secs(30));
    let err = silent.run(&configs[0]).unwrap_err().to_string();
    assert!(err.contains("wrote no summary"), "{err}");

    let missing = launcher(
        &f.dir.join("no-such-mpirun"),
        &f.ok,
        &out,
        Duration::from_secs(5),
    );
    let err = missing.run(&configs[0]).unwrap_err().to_string();
    assert!(err.contains("cannot start"), "{err}");
}

fn alive(pid: u32) -> bool {
    // A killed process whose parent is gone may linger as a zombie until
    // init reaps it; that is not a running rank.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[test]
fn hanging_run_is_killed_with_its_process_group() {
    let f = fakes();
    let out = f.dir.join("hang");
    let opts = options(&["--nodes", "2", "--cores", "1", "--algorithms", "naive"]);
    let (configs, _) = opts.run_configs(2);
    let l = launcher(&f.mpirun, &f.hang, &out, Duration::from_millis(1500));
    let start = Instant::now();
    let err = l.run(&configs[0]).unwrap_err().to_string();
    let took = start.elapsed();
    assert!(err.contains("timed out after"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // Both fake ranks recorded their pid; neither may survive the kill.
    let summary = out.join("runs/naive-n2-c1.json");
    let mut pids = Vec::new();
    for rank in 0..2 {
        let pid_file = PathBuf::from(format!("{}.pid.{rank}", summary.display()));
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        pids.push(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in pids {
        assert!(!alive(p), "rank process {p} survived the timeout");
    }
}

/// The same fake binary under the real Open MPI `mpirun`, when installed:
/// checks that the launch flags the driver uses are accepted.
#[test]
fn real_mpirun_launches_the_fake_binary() {
    let Ok(v) = std::process::Command::new("mpirun")
        .arg("--version")
        .output()
    else {
        eprintln!("mpirun not installed: skipping the real-mpirun launch test");
        return;
    };
    if !String::from_utf8_lossy(&v.stdout).contains("Open MPI") {
        eprintln!("mpirun is not Open MPI: skipping the real-mpirun launch test");
        return;
    }
    let f = fakes();
    let out = f.dir.join("real");
    // 3 ranks on 2 cores: exercises --oversubscribe and yielding too.
    let opts = options(&[
        "--nodes",
        "1,3",
        "--cores",
        "1",
        "--algorithms",
        "ring",
        "--oversubscribe",
    ]);
    let (configs, _) = opts.run_configs(2);
    let mut l = launcher(Path::new("mpirun"), &f.ok, &out, Duration::from_secs(120));
    l.local_cores = 2;
    let outcome = run_sweep(&l, &configs, |_, _, _, _| {});
    if let Some((cfg, e)) = &outcome.failure {
        panic!("{}: {e}", cfg.describe());
    }
    let ms = outcome.measurements;
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[1].summary.ranks, 3);
}
