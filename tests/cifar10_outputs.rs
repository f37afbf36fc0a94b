//! The cifar10 example's outputs (issue 12, "nothing overwritten or
//! destroyed", "nothing reported late"): every bad output path, careless
//! re-run, one-sided flag, nested launch and invalid setting is refused
//! with an error naming the flag before the data is loaded, and every file
//! that existed before is byte-for-byte unchanged; a full disk leaves the
//! old outputs intact.
//!
//! Device nodes are made with `mknod` inside the scratch folder (as root
//! only; the tests say when they skip that part): /dev itself is never
//! touched. Every launch is killed after a timeout so a hang fails. The
//! MPMD test (a flag given to one rank only) needs the `mpi` feature.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{output_text, Scratch};
use ringsgd::data::synthetic;

const TIMEOUT_S: u32 = 120;
/// One small conv layer: a run of a few steps takes well under a second.
const MODEL: &str = "conv3x3(8,p1) relu maxpool2 flatten linear(10)";
const FLAGS: [&str; 4] = [
    "--checkpoint",
    "--metrics-csv",
    "--export",
    "--summary-json",
];

/// Synthetic CIFAR-10 files (5 x 48 training, 60 test images) under `dir`.
fn data(dir: &Path) -> PathBuf {
    synthetic::write_cifar_dir(dir, 48, 60, 3).unwrap()
}

/// The example with a timeout, quiet logging and Open MPI's settings.
fn example_cmd(wrapper: &[&str]) -> Command {
    let mut cmd = common::with_timeout(TIMEOUT_S);
    cmd.args(wrapper).arg(common::example("cifar10"));
    common::set_ompi_env(&mut cmd).env("RUST_LOG", "warn");
    cmd
}

/// A command line: a short run (one epoch of 10 steps, no progress bar)
/// plus what a test adds.
#[derive(Clone, Debug)]
struct Cli(Vec<String>);

impl Cli {
    fn new(data: &Path) -> Cli {
        Cli(vec![])
            .set("--data", p(data))
            .set("--model", MODEL)
            .set("--epochs", "1")
            .set("--global-batch", "24")
            .set("--cores", "1")
            .set("--seed", "3")
            .flag("--no-progress")
    }

    /// `flag value`, replacing the flag's earlier value if any.
    fn set(mut self, flag: &str, value: &str) -> Cli {
        match self.0.iter().position(|a| a == flag) {
            Some(i) => self.0[i + 1] = value.to_string(),
            None => self.0.extend([flag.to_string(), value.to_string()]),
        }
        self
    }

    fn flag(mut self, flag: &str) -> Cli {
        self.0.push(flag.to_string());
        self
    }

    /// Without `flag` (and its value, if it takes one).
    fn without(mut self, flag: &str) -> Cli {
        if let Some(i) = self.0.iter().position(|a| a == flag) {
            let has_value = self.0.get(i + 1).is_some_and(|v| !v.starts_with("--"));
            self.0.drain(i..i + 1 + usize::from(has_value));
        }
        self
    }
}

/// One process, no mpirun (a one-rank MPI world when built with MPI).
fn standalone(cli: &Cli) -> Output {
    example_cmd(&[])
        .args(&cli.0)
        .output()
        .expect("start the example")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A clean refusal before any work: non-zero exit, no hang, no panic, every
/// needle in the output, and neither the banner (printed once the data is
/// loaded) nor an epoch line.
fn assert_refused(out: &Output, needles: &[&str]) {
    let all = output_text(out);
    assert!(
        !common::timed_out(out),
        "killed by the timeout (hang?):\n{all}"
    );
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "expected a failure:\n{all}"
    );
    assert!(
        !all.contains("panicked"),
        "panic instead of an error:\n{all}"
    );
    for n in needles {
        assert!(all.contains(n), "error does not mention {n:?}:\n{all}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("ringsgd cifar10:") && !stdout.contains("epoch "),
        "refused only after work was done:\n{all}"
    );
}

fn assert_ok(out: &Output) -> String {
    assert!(out.status.success(), "run failed:\n{}", output_text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every entry under `dir`: its kind and, for regular files, its bytes; for
/// links, their target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let t = m.file_type();
            let entry = if t.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ("link".into(), target.into_os_string().into_encoded_bytes())
            } else if t.is_dir() {
                stack.push(path.clone());
                ("dir".into(), Vec::new())
            } else if t.is_file() {
                ("file".into(), std::fs::read(&path).unwrap())
            } else {
                (format!("{t:?}"), Vec::new())
            };
            out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), entry);
        }
    }
    out
}

fn assert_unchanged(dir: &Path, before: &BTreeMap<PathBuf, (String, Vec<u8>)>, what: &str) {
    let after = snapshot(dir);
    let names = |s: &BTreeMap<PathBuf, _>| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&after),
        names(before),
        "{what}: files added or removed"
    );
    for (k, v) in before {
        assert!(after[k] == *v, "{what}: {} changed", k.display());
    }
}

/// Makes a character device with the given numbers at `path` (root only).
fn mknod(path: &Path, major: u32, minor: u32) -> bool {
    Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn metrics_rows(csv: &Path) -> usize {
    std::fs::read_to_string(csv).unwrap().lines().count() - 1
}

#[test]
fn non_regular_outputs_are_refused_and_left_as_they_are() {
    let s = Scratch::new("outputs", "nonregular");
    let dir = s.path();
    let cli = Cli::new(&data(&dir.join("data")));
    let folder = dir.join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("inside"), b"keep me").unwrap();
    let fifo = dir.join("pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut targets = vec![(folder, "is a directory"), (fifo, "FIFO")];
    // Nodes with /dev/null's and /dev/full's numbers, made here.
    let (null, full) = (dir.join("null"), dir.join("full"));
    if mknod(&null, 1, 3) && mknod(&full, 1, 7) {
        targets.push((null, "character device"));
        targets.push((full, "character device"));
    } else {
        eprintln!("device-node cases skipped: mknod needs root");
    }
    let before = snapshot(dir);
    for (target, kind) in &targets {
        for flag in FLAGS {
            let out = standalone(&cli.clone().set(flag, p(target)));
            assert_refused(&out, &[flag, p(target), kind, "not a regular file"]);
        }
    }
    // Resuming from a folder is refused the same way.
    let out = standalone(&cli.clone().set("--checkpoint", p(dir)).flag("--resume"));
    assert_refused(&out, &["--checkpoint", "is a directory"]);
    assert_unchanged(dir, &before, "after the refused runs");
}

#[test]
fn outputs_must_differ_from_each_other_and_from_the_data() {
    let s = Scratch::new("outputs", "distinct");
    let dir = s.path();
    let data = data(&dir.join("data"));
    let cli = Cli::new(&data);
    let existing = dir.join("w.safetensors");
    std::fs::write(&existing, b"weights of an earlier run").unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&existing, &link).unwrap();
    let hard = dir.join("hard.json");
    std::fs::hard_link(&existing, &hard).unwrap();
    let batch1 = data.join("data_batch_1.bin");
    let batch2_hard = dir.join("batch2.csv");
    std::fs::hard_link(data.join("data_batch_2.bin"), &batch2_hard).unwrap();
    let test_link = dir.join("test.ckpt");
    std::os::unix::fs::symlink(data.join("test_batch.bin"), &test_link).unwrap();
    let (c, m) = (dir.join("c.ckpt"), dir.join("m.csv"));
    std::fs::create_dir(dir.join("sub")).unwrap();
    let respelled = dir.join("sub/../m.csv");
    let ctmp = dir.join("c.ckpt.tmp");
    let before = snapshot(dir);

    let same = "are the same file";
    type Case<'a> = (Vec<(&'a str, &'a Path)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec![("--checkpoint", &c), ("--metrics-csv", &c)],
            vec![same],
        ),
        (
            vec![("--metrics-csv", &m), ("--export", &respelled)],
            vec![same],
        ),
        (
            vec![("--export", &existing), ("--summary-json", &link)],
            vec![same],
        ),
        (
            vec![("--export", &existing), ("--summary-json", &hard)],
            vec![same],
        ),
        (
            vec![("--checkpoint", &c), ("--metrics-csv", &ctmp)],
            vec![same],
        ),
        (
            vec![("--metrics-csv", &batch1)],
            vec!["input file", "data_batch_1.bin"],
        ),
        (
            vec![("--export", &batch2_hard)],
            vec!["input file", "data_batch_2.bin"],
        ),
        (
            vec![("--checkpoint", &test_link)],
            vec!["input file", "test_batch.bin"],
        ),
    ];
    for (outputs, mut needles) in cases {
        let mut run = cli.clone();
        for (flag, path) in &outputs {
            run = run.set(flag, p(path));
            needles.push(flag);
        }
        assert_refused(&standalone(&run), &needles);
    }
    assert_unchanged(dir, &before, "after the refused runs");
}

#[test]
fn existing_checkpoint_and_metrics_are_kept_unless_asked() {
    let s = Scratch::new("outputs", "existing");
    let dir = s.path();
    let cli = Cli::new(&data(&dir.join("data")));
    let (ckpt, csv) = (dir.join("run.ckpt"), dir.join("m.csv"));
    let first = cli
        .clone()
        .set("--checkpoint", p(&ckpt))
        .set("--metrics-csv", p(&csv));
    assert_ok(&standalone(&first));
    assert_eq!(metrics_rows(&csv), 1);
    let before = snapshot(dir);

    // A fresh run replaces neither the checkpoint nor a CSV with rows.
    assert_refused(
        &standalone(&first),
        &[
            "--checkpoint",
            p(&ckpt),
            "already exists",
            "--resume",
            "--overwrite",
        ],
    );
    let other = first
        .clone()
        .set("--checkpoint", p(&dir.join("other.ckpt")));
    assert_refused(
        &standalone(&other),
        &["--metrics-csv", p(&csv), "1 row(s)", "--overwrite"],
    );
    let missing = dir.join("missing.ckpt");
    let out = standalone(
        &first
            .clone()
            .set("--checkpoint", p(&missing))
            .flag("--resume"),
    );
    assert_refused(&out, &["--resume", p(&missing), "does not exist"]);
    let out = standalone(&first.clone().flag("--resume").flag("--overwrite"));
    assert_refused(&out, &["--overwrite", "cannot be used with"]);
    assert_unchanged(dir, &before, "after the refused runs");

    // --resume-if-present: resumes and appends when the checkpoint exists...
    let again = first
        .clone()
        .set("--epochs", "2")
        .flag("--resume-if-present");
    let stdout = assert_ok(&standalone(&again));
    assert!(stdout.contains("resumed from"), "{stdout}");
    let text = std::fs::read(&csv).unwrap();
    let old_csv = &before[Path::new("m.csv")].1;
    assert!(text.starts_with(old_csv), "CSV rewritten, not appended");
    assert_eq!(metrics_rows(&csv), 2);
    // ...and starts afresh when it does not (a header-only CSV is fine).
    let (fresh_ckpt, fresh_csv) = (dir.join("fresh.ckpt"), dir.join("fresh.csv"));
    let header = format!("{}\n", ringsgd::trainer::METRICS_HEADER);
    std::fs::write(&fresh_csv, header).unwrap();
    let fresh = cli
        .clone()
        .set("--checkpoint", p(&fresh_ckpt))
        .set("--metrics-csv", p(&fresh_csv))
        .flag("--resume-if-present");
    let stdout = assert_ok(&standalone(&fresh));
    assert!(!stdout.contains("resumed from"), "{stdout}");
    assert!(fresh_ckpt.is_file());
    assert_eq!(metrics_rows(&fresh_csv), 1);

    // --overwrite starts afresh and replaces both.
    let stdout = assert_ok(&standalone(&first.clone().flag("--overwrite")));
    assert!(!stdout.contains("resumed from"), "{stdout}");
    assert_eq!(metrics_rows(&csv), 1);
    // The same seed and steps as the first run: the same checkpoint.
    let ckpt_bytes = std::fs::read(&ckpt).unwrap();
    assert!(ckpt_bytes == before[Path::new("run.ckpt")].1);
}

#[test]
fn bad_paths_and_settings_fail_before_the_first_step() {
    let s = Scratch::new("outputs", "early");
    let dir = s.path();
    let cli = Cli::new(&data(&dir.join("data")));
    let file = dir.join("file.txt");
    std::fs::write(&file, b"a file, not a folder").unwrap();
    let before = snapshot(dir);
    for flag in FLAGS {
        let missing = dir.join("no-such-folder/out");
        let out = standalone(&cli.clone().set(flag, p(&missing)));
        assert_refused(&out, &[flag, "no-such-folder", "does not exist"]);
        let under_file = file.join("out");
        let out = standalone(&cli.clone().set(flag, p(&under_file)));
        assert_refused(&out, &[flag, p(&under_file)]);
    }
    let ro = dir.join("read-only");
    std::fs::create_dir(&ro).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    if std::fs::write(ro.join("probe"), b"").is_ok() {
        std::fs::remove_file(ro.join("probe")).unwrap();
        eprintln!("read-only folder case skipped: root ignores permission bits");
    } else {
        for flag in FLAGS {
            let out = standalone(&cli.clone().set(flag, p(&ro.join("out"))));
            assert_refused(&out, &[flag, "cannot create files"]);
        }
    }
    std::fs::remove_dir(&ro).unwrap();

    let settings: &[(&[(&str, &str)], &str)] = &[
        (
            &[("--schedule", "step"), ("--step-gamma", "NaN")],
            "--step-gamma",
        ),
        (&[("--step-gamma", "0")], "--step-gamma"),
        (&[("--step-gamma=-0.5", "")], "--step-gamma"),
        (&[("--step-gamma", "2")], "--step-gamma"),
        (&[("--lr", "NaN")], "--lr"),
        (&[("--lr", "inf")], "--lr"),
        (&[("--lr", "0")], "--lr"),
        (&[("--lr=-0.1", "")], "--lr"),
        (&[("--lr", "1e39")], "--lr"),
        (&[("--momentum", "1")], "--momentum"),
        (&[("--momentum", "NaN")], "--momentum"),
        (&[("--momentum=-0.1", "")], "--momentum"),
        (&[("--weight-decay=-1", "")], "--weight-decay"),
        (&[("--weight-decay", "NaN")], "--weight-decay"),
        (&[("--momentum", "0"), ("--nesterov", "")], "--nesterov"),
        // "" marks a flag given as is (negative values need `=`).
        (&[("--schedule", "linear")], "--schedule"),
    ];
    for (extra, flag) in settings {
        let mut run = cli.clone();
        for (k, v) in *extra {
            run = if v.is_empty() {
                run.flag(k)
            } else {
                run.set(k, v)
            };
        }
        assert_refused(&standalone(&run), &[flag]);
    }
    assert_unchanged(dir, &before, "after the refused runs");
}

#[test]
fn a_full_disk_leaves_the_old_outputs_intact() {
    let s = Scratch::new("outputs", "full");
    let dir = s.path();
    let data = data(&dir.join("data"));
    let cli = Cli::new(&data)
        .set("--checkpoint", p(&dir.join("run.ckpt")))
        .set("--metrics-csv", p(&dir.join("m.csv")))
        .set("--export", p(&dir.join("w.safetensors")))
        .set("--summary-json", p(&dir.join("s.json")));
    assert_ok(&standalone(&cli));
    let before = snapshot(dir);

    // A file-size limit of 8 KiB stands in for a full disk: writes past it
    // fail with EFBIG (SIGXFSZ ignored). In-process ranks: MPI's own files
    // would hit the limit too.
    let limited = [
        "bash",
        "-c",
        "trap '' XFSZ; ulimit -f 8; exec \"$@\"",
        "bash",
    ];
    let resume = cli
        .set("--epochs", "2")
        .set("--local-ranks", "1")
        .flag("--resume");
    let failed_write = |cli: &Cli, file: &str| {
        let out = example_cmd(&limited).args(&cli.0).output().unwrap();
        let all = output_text(&out);
        assert!(!out.status.success(), "the write did not fail:\n{all}");
        assert!(!all.contains("panicked"), "{all}");
        assert!(
            all.contains(file) && all.contains("the existing file is unchanged"),
            "{all}"
        );
    };
    failed_write(&resume, "run.ckpt");
    // Without a checkpoint the run gets as far as the export, which fails.
    let export_only = Cli::new(&data)
        .set("--export", p(&dir.join("w.safetensors")))
        .set("--summary-json", p(&dir.join("s.json")))
        .set("--local-ranks", "1");
    failed_write(&export_only, "w.safetensors");
    // The CSV (small, written first) may have gained the row; nothing was
    // replaced by a partial file and no temporary file is left.
    let after = snapshot(dir);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (name, v) in &before {
        if name == Path::new("m.csv") {
            assert!(after[name].1.starts_with(&v.1), "CSV lost rows");
        } else {
            assert!(after[name] == *v, "{} changed", name.display());
        }
    }
}

#[test]
fn local_ranks_under_mpirun_is_refused() {
    let s = Scratch::new("outputs", "nested");
    let dir = s.path();
    let cli = Cli::new(&data(&dir.join("data")))
        .set("--checkpoint", p(&dir.join("run.ckpt")))
        .set("--local-ranks", "2");
    let before = snapshot(dir);
    // What mpirun -np 2 tells each process it starts.
    let out = example_cmd(&[])
        .args(&cli.0)
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert_refused(&out, &["--local-ranks 2", "one of 2 processes"]);
    if cfg!(feature = "mpi") {
        let mut cmd = common::with_timeout(TIMEOUT_S);
        common::add_mpirun(&mut cmd, 2)
            .args(["--bind-to", "none"])
            .arg(common::example("cifar10"))
            .args(&cli.0);
        common::set_ompi_env(&mut cmd).env("RUST_LOG", "warn");
        let out = cmd.output().unwrap();
        assert_refused(&out, &["--local-ranks 2", "one of 2 processes"]);
    } else {
        // Without MPI support, a launch by mpirun is refused as such.
        let plain = cli.clone().without("--local-ranks");
        let out = example_cmd(&[])
            .args(&plain.0)
            .env("OMPI_COMM_WORLD_SIZE", "2")
            .output()
            .unwrap();
        assert_refused(&out, &["without the `mpi` feature", "2 processes"]);
    }
    assert_unchanged(dir, &before, "after the refused runs");
}

/// `mpirun -np 1 prog <a> : -np 1 prog <b>`: one rank each.
#[cfg(feature = "mpi")]
fn mpmd(a: &Cli, b: &Cli) -> Output {
    let prog = common::example("cifar10");
    mpmd_programs(&prog, a, &prog, b)
}

/// Rank 0 runs `prog_a` with `a`, rank 1 `prog_b` with `b`.
#[cfg(feature = "mpi")]
fn mpmd_programs(prog_a: &Path, a: &Cli, prog_b: &Path, b: &Cli) -> Output {
    let mut cmd = common::with_timeout(TIMEOUT_S);
    cmd.args(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "1"])
        .arg(prog_a)
        .args(&a.0)
        .args([":", "-np", "1"])
        .arg(prog_b)
        .args(&b.0);
    common::set_ompi_env(&mut cmd).env("RUST_LOG", "warn");
    cmd.output().unwrap()
}

/// Ranks that run different builds or hold different data, or more ranks
/// than the global batch splits into: refused before any training.
#[cfg(feature = "mpi")]
#[test]
fn a_launch_whose_ranks_differ_is_refused() {
    let s = Scratch::new("outputs", "launch");
    let dir = s.path();
    let cli = Cli::new(&data(&dir.join("data")));

    // Another build on rank 1: a copy of the program with one byte more.
    let other = dir.join("cifar10-other");
    let mut bytes = std::fs::read(common::example("cifar10")).unwrap();
    bytes.push(0);
    std::fs::write(&other, &bytes).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    drop(bytes);
    let out = mpmd_programs(&common::example("cifar10"), &cli, &other, &cli);
    assert_refused(
        &out,
        &[
            "the program differs",
            "on rank 1",
            "rank 1 on ",
            "same build",
        ],
    );

    // Other data on rank 1 (--data may differ between nodes, its content not).
    let elsewhere = synthetic::write_cifar_dir(&dir.join("other"), 48, 60, 4).unwrap();
    let out = mpmd(&cli, &cli.clone().set("--data", p(&elsewhere)));
    assert_refused(&out, &["the data differs", "training images: ", "rank 1"]);

    // 3 ranks cannot split a global batch of 32, nor 4 ranks one of 2.
    for (np, batch) in [(3, "32"), (4, "2")] {
        let mut cmd = example_cmd(&[
            "mpirun",
            "--oversubscribe",
            "--bind-to",
            "none",
            "-np",
            &np.to_string(),
        ]);
        let out = cmd
            .args(&cli.clone().set("--global-batch", batch).0)
            .output()
            .unwrap();
        assert_refused(&out, &[&format!("not divisible by the {np} ranks")]);
    }
}

#[cfg(feature = "mpi")]
#[test]
fn a_flag_given_to_one_rank_only_is_a_mismatch() {
    let s = Scratch::new("outputs", "mpmd");
    let dir = s.path();
    let cli = Cli::new(&data(&dir.join("data")));
    let ckpt = dir.join("run.ckpt");
    let before = snapshot(dir);
    let out = mpmd(&cli, &cli.clone().set("--checkpoint", p(&ckpt)));
    let expected = format!("--checkpoint: unset on rank 0, {:?} on rank 1", p(&ckpt));
    assert_refused(&out, &["ranks disagree", &expected]);
    let out = mpmd(
        &cli.clone().set("--seed", "4").flag("--overwrite"),
        &cli.clone().set("--lr", "0.1"),
    );
    assert_refused(
        &out,
        &[
            r#"--lr: unset on rank 0, "0.1" on rank 1"#,
            r#"--seed: "4" on rank 0, "3" on rank 1"#,
            r#"--overwrite: "true" on rank 0, "false" on rank 1"#,
        ],
    );
    assert_unchanged(dir, &before, "after the refused runs");

    // Per-node flags may differ, and numbers agree by value.
    let a = cli.clone().set("--lr", "0.1");
    let b = cli
        .set("--lr", "1e-1")
        .set("--cores", "2")
        .without("--no-progress");
    let stdout = assert_ok(&mpmd(&a, &b));
    assert!(stdout.contains("test_accuracy="), "{stdout}");
}

/// Issue 12, "progress you can see": step lines (`--log-every`) with the
/// run's ETA, evaluation and checkpoint time in the epoch line and the CSV,
/// and a `test_accuracy=` last line in every case.
#[test]
fn progress_lines_epoch_end_times_and_the_last_line() {
    let s = Scratch::new("outputs", "progress");
    let dir = s.path();
    let cli = Cli::new(&data(&dir.join("data")));
    let (ckpt, csv) = (dir.join("run.ckpt"), dir.join("m.csv"));
    let run = cli
        .clone()
        .set("--checkpoint", p(&ckpt))
        .set("--metrics-csv", p(&csv))
        .set("--log-every", "2");
    let stdout = assert_ok(&standalone(&run));
    let lines: Vec<&str> = stdout.lines().collect();
    // 240 images / 24 a step: 10 steps, a line every 2.
    let steps: Vec<&&str> = lines.iter().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(steps.len(), 5, "{stdout}");
    for (i, l) in steps.iter().enumerate() {
        let at = format!("step {}/10 (run {}/10)", 2 * i + 2, 2 * i + 2);
        assert!(l.starts_with("step epoch 1/1 ") && l.contains(&at), "{l}");
        for w in [" loss ", " img/s ", " eta ", "(run)"] {
            assert!(l.contains(w), "{w:?} missing: {l}");
        }
    }
    let epoch = lines.iter().find(|l| l.starts_with("epoch 1/1 ")).unwrap();
    assert!(
        epoch.contains(" eval ") && epoch.contains(" checkpoint "),
        "{epoch}"
    );
    assert!(
        lines[0].contains(": 1 rank (") && lines[0].contains(" x 1 core, "),
        "{}",
        lines[0]
    );
    assert!(
        lines.last().unwrap().starts_with("test_accuracy=0."),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(text.lines().next(), Some(ringsgd::trainer::METRICS_HEADER));
    assert!(
        rows[0].ends_with(&["eval_seconds", "checkpoint_seconds"]),
        "{text}"
    );
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[1].len(), rows[0].len(), "{text}");
    for v in &rows[1][12..] {
        assert!(v.parse::<f64>().is_ok_and(|s| s >= 0.0), "{text}");
    }

    // Resuming the finished run evaluates it, ends with the line, and
    // changes no file.
    let before = snapshot(dir);
    let stdout = assert_ok(&standalone(&run.clone().flag("--resume")));
    assert!(stdout.contains("is finished"), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("test_accuracy=0."),
        "{stdout}"
    );
    assert_unchanged(dir, &before, "resuming a finished run");
    let stdout = assert_ok(&standalone(&run.clone().flag("--resume").flag("--no-eval")));
    assert_eq!(
        stdout.lines().last(),
        Some("test_accuracy=none (--no-eval)")
    );
    assert_unchanged(dir, &before, "resuming a finished run with --no-eval");

    // Without evaluation the last line says so, and the CSV's evaluation
    // columns are empty; the default (every 30 s) prints no step line in a
    // short run; --cores beyond the machine's without mpirun gives no
    // mpirun hint.
    let csv2 = dir.join("noeval.csv");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    let out = standalone(
        &cli.clone()
            .set("--metrics-csv", p(&csv2))
            .set("--cores", &cores.to_string())
            .flag("--no-eval"),
    );
    let stdout = assert_ok(&out);
    assert_eq!(
        stdout.lines().last(),
        Some("test_accuracy=none (--no-eval)")
    );
    assert!(!stdout.contains("step epoch"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--cores {cores} but")) && !stderr.contains("--bind-to"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&csv2).unwrap();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row.len(), 14, "{text}");
    assert!(
        row[4].is_empty() && row[12].is_empty() && row[13].is_empty(),
        "{text}"
    );

    // Refused before any work: a bad --log-every, and --epochs 0 (which
    // would have no last line to print).
    let before = snapshot(dir);
    for bad in ["2.5", "30x", "s", "infs"] {
        assert_refused(
            &standalone(&cli.clone().set("--log-every", bad)),
            &["--log-every"],
        );
    }
    assert_refused(
        &standalone(&cli.clone().set("--epochs", "0").set("--max-steps", "2")),
        &["--epochs 0", "--max-steps"],
    );
    assert_unchanged(dir, &before, "refused runs");
}

/// Epochs of the rows of a metrics CSV.
fn csv_epochs(csv: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(csv).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

/// Issue 12: one epoch numbering (from 1, in the resume message too) and a
/// CSV that reads as one run: a mid-epoch resume and a resume from an older
/// checkpoint replace the rows they train again instead of adding more.
#[test]
fn a_resumed_csv_reads_as_one_run() {
    let s = Scratch::new("outputs", "csv_resume");
    let dir = s.path();
    let (ckpt, csv) = (dir.join("run.ckpt"), dir.join("m.csv"));
    // 10 steps an epoch.
    let cli = Cli::new(&data(&dir.join("data")))
        .set("--epochs", "2")
        .set("--checkpoint", p(&ckpt))
        .set("--metrics-csv", p(&csv));

    // Stopped mid-epoch 1, then resumed in it: one row for epoch 1.
    assert_ok(&standalone(&cli.clone().set("--max-steps", "3")));
    assert_eq!(csv_epochs(&csv), [1]);
    let stdout = assert_ok(&standalone(
        &cli.clone().set("--max-steps", "10").flag("--resume"),
    ));
    assert!(
        stdout.contains(&format!("resumed from {} at epoch 1, step 3", p(&ckpt))),
        "{stdout}"
    );
    assert_eq!(csv_epochs(&csv), [1]);
    let after_epoch_1 = std::fs::read(&ckpt).unwrap();

    // On to the end, then again from the epoch-1 checkpoint: rows 1 and 2,
    // once each.
    let stdout = assert_ok(&standalone(&cli.clone().flag("--resume")));
    assert!(stdout.contains("at epoch 2, step 10"), "{stdout}");
    assert_eq!(csv_epochs(&csv), [1, 2]);
    let row_1 = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    std::fs::write(&ckpt, &after_epoch_1).unwrap();
    assert_ok(&standalone(&cli.clone().flag("--resume")));
    assert_eq!(csv_epochs(&csv), [1, 2]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        text.lines().nth(1),
        Some(row_1.as_str()),
        "row 1 kept: {text}"
    );

    // A finished run resumed: the CSV is left as it is.
    let before = std::fs::read(&csv).unwrap();
    let stdout = assert_ok(&standalone(&cli.clone().flag("--resume")));
    assert!(stdout.contains("at epoch 2, step 20"), "{stdout}");
    assert_eq!(std::fs::read(&csv).unwrap(), before);
}

#[test]
fn the_training_curves_are_plotted_beside_the_metrics_csv() {
    let s = Scratch::new("outputs", "plot");
    let dir = s.path();
    let data = data(&dir.join("data"));
    let csv = dir.join("m.csv");
    let out = standalone(
        &Cli::new(&data)
            .set("--epochs", "2")
            .set("--metrics-csv", p(&csv)),
    );
    let text = assert_ok(&out);
    let svg = dir.join("m.svg");
    assert!(
        text.contains(&format!("plotted the training curves to {}", svg.display())),
        "{text}"
    );
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "{plot}");
    // Train and test loss, train and test accuracy: one line each, one
    // point per epoch.
    let lines: Vec<&str> = plot
        .lines()
        .filter(|l| l.starts_with("<polyline"))
        .collect();
    assert_eq!(lines.len(), 4, "{plot}");
    for l in lines {
        let pts = l
            .split("points=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/>");
        assert_eq!(pts.split(' ').count(), 2, "{l}");
    }
    // A plot path that is another output is refused before any work.
    let before = snapshot(dir);
    let out = standalone(
        &Cli::new(&data)
            .set("--metrics-csv", p(&dir.join("w.csv")))
            .set("--export", p(&dir.join("w.svg"))),
    );
    assert_refused(&out, &["--metrics-csv's plot (.svg)", "same file"]);
    assert_unchanged(dir, &before, "a plot colliding with --export");
}
