//! The cifar10 example accepts nothing wrong (issue 12, "nothing wrong
//! accepted"): a corrupted archive, a resume on other data, ranks holding
//! other labels or another test set, a diverging run, and flags that
//! overflow, do nothing or need more memory than the machine has, each
//! give a clear error naming the file, the step or the flag, before the
//! first step (before the data is loaded where the flag alone tells), and
//! every file that existed before is byte-for-byte unchanged.
//!
//! Every launch is killed after a timeout, so a hang fails. The tests of
//! several ranks holding different data and of `allreduce_bench` need the
//! `mpi` feature.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{output_text, Scratch};
use ringsgd::data::synthetic;

const TIMEOUT_S: u32 = 120;
/// One small conv layer: a run of a few steps takes well under a second.
const MODEL: &str = "conv3x3(8,p1) relu maxpool2 flatten linear(10)";

/// The example with a timeout, quiet logging and Open MPI's settings.
fn example_cmd(wrapper: &[&str]) -> Command {
    let mut cmd = common::with_timeout(TIMEOUT_S);
    cmd.args(wrapper).arg(common::example("cifar10"));
    common::set_ompi_env(&mut cmd).env("RUST_LOG", "warn");
    cmd
}

/// A short run (one epoch, global batch 24, no progress bar) on `data`
/// (a path, or `synthetic:N`), plus `extra`.
fn args(data: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = match data.strip_prefix("synthetic:") {
        Some(n) => vec!["--synthetic".into(), n.into()],
        None => vec!["--data".into(), data.into()],
    };
    a.extend(
        [
            "--model",
            MODEL,
            "--global-batch",
            "24",
            "--cores",
            "1",
            "--seed",
            "3",
            "--no-progress",
        ]
        .map(String::from),
    );
    // A later `--flag value` replaces an earlier one.
    let mut i = 0;
    while i < extra.len() {
        let flag = extra[i];
        let value = extra.get(i + 1).filter(|v| !v.starts_with("--"));
        if let Some(at) = a.iter().position(|x| x == flag) {
            a.remove(at);
            if value.is_some() {
                a.remove(at);
            }
        }
        a.push(flag.to_string());
        if let Some(v) = value {
            a.push(v.to_string());
            i += 1;
        }
        i += 1;
    }
    if !a.iter().any(|x| x == "--epochs") {
        a.extend(["--epochs".to_string(), "1".to_string()]);
    }
    a
}

fn standalone(a: &[String]) -> Output {
    example_cmd(&[])
        .args(a)
        .output()
        .expect("start the example")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Synthetic CIFAR-10 files (5 x 48 training, 60 test images) under `dir`.
fn data(dir: &Path) -> PathBuf {
    synthetic::write_cifar_dir(dir, 48, 60, 3).unwrap()
}

/// Non-zero exit, no hang, no panic, every needle in the output, and no
/// epoch line; with `before_load`, not even the banner (printed once the
/// data is loaded).
fn assert_refused_at(out: &Output, needles: &[&str], before_load: bool) {
    let all = output_text(out);
    assert!(!common::timed_out(out), "killed by the timeout:\n{all}");
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "expected a failure:\n{all}"
    );
    assert!(!all.contains("panicked"), "panic, not an error:\n{all}");
    for n in needles {
        assert!(all.contains(n), "error does not mention {n:?}:\n{all}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.lines().any(|l| l.trim_start().starts_with("epoch "))
            && !stdout.contains("test_accuracy="),
        "refused only after training:\n{all}"
    );
    if before_load {
        assert!(
            !stdout.contains("ringsgd cifar10:"),
            "refused only after loading the data:\n{all}"
        );
    }
}

fn assert_refused(out: &Output, needles: &[&str]) {
    assert_refused_at(out, needles, true)
}

fn assert_ok(out: &Output) -> String {
    assert!(out.status.success(), "run failed:\n{}", output_text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every regular file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    out
}

fn assert_unchanged(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let after = snapshot(dir);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "{what}: files added or removed"
    );
    for (k, v) in before {
        assert!(after[k] == *v, "{what}: {} changed", k.display());
    }
}

#[test]
fn corrupted_archives_and_wrong_md5s_are_refused() {
    let s = Scratch::new("inputs", "archive");
    let dir = s.path();
    let good = dir.join("cifar-10-binary.tar.gz");
    synthetic::write_cifar_tar_gz(&good, 48, 60, 3).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    // The gzip trailer's CRC-32, and one data byte in the middle.
    let crc = dir.join("crc.tar.gz");
    let mut b = bytes.clone();
    let n = b.len();
    b[n - 8] ^= 0x01;
    std::fs::write(&crc, &b).unwrap();
    let flipped = dir.join("flipped.tar.gz");
    let mut b = bytes.clone();
    b[n / 2] ^= 0x04;
    std::fs::write(&flipped, &b).unwrap();
    let ckpt = dir.join("run.ckpt");
    let folder = data(&dir.join("folder"));
    let before = snapshot(dir);
    for bad in [&crc, &flipped] {
        let out = standalone(&args(p(bad), &["--checkpoint", p(&ckpt)]));
        assert_refused(&out, &[p(bad), "gzip"]);
    }
    // --verify-md5: the official digest by default, or the one given; only
    // for an archive.
    let md5 = ringsgd::data::download::md5_hex_of_file(&good).unwrap();
    let out = standalone(&args(p(&good), &["--verify-md5"]));
    assert_refused(
        &out,
        &[
            p(&good),
            &md5,
            ringsgd::data::cifar::CIFAR10_MD5,
            "--verify-md5",
        ],
    );
    let out = standalone(&args(p(&folder), &["--verify-md5", &md5]));
    assert_refused(&out, &["MD5", "folder"]);
    assert_unchanged(dir, &before, "after the refused runs");
    let stdout = assert_ok(&standalone(&args(p(&good), &["--verify-md5", &md5])));
    assert!(stdout.contains("test_accuracy="), "{stdout}");
}

#[test]
fn a_resume_on_other_data_is_refused_naming_what_differs() {
    let s = Scratch::new("inputs", "resume");
    let dir = s.path();
    let (ckpt, csv) = (dir.join("run.ckpt"), dir.join("m.csv"));
    let outputs = ["--checkpoint", p(&ckpt), "--metrics-csv", p(&csv)];
    assert_ok(&standalone(&args("synthetic:96", &outputs)));
    let real = data(&dir.join("real"));
    let relabelled = data(&dir.join("relabelled"));
    let f = relabelled.join("data_batch_4.bin");
    let mut b = std::fs::read(&f).unwrap();
    b[0] = (b[0] + 1) % 10;
    std::fs::write(&f, b).unwrap();
    let before = snapshot(dir);
    let resume = |data: &str| {
        let mut extra = outputs.to_vec();
        extra.extend(["--epochs", "2", "--resume"]);
        standalone(&args(data, &extra))
    };
    // Twice the images: sizes and digests named.
    assert_refused_at(
        &resume("synthetic:192"),
        &[
            p(&ckpt),
            "trained on other data",
            "training set size: 96 images in the checkpoint, 192 images here",
            "test set size",
        ],
        false,
    );
    // Real (CIFAR-format files) instead of synthetic.
    assert_refused_at(
        &resume(p(&real)),
        &["kind: synthetic in the checkpoint, CIFAR-10 here"],
        false,
    );
    assert_unchanged(dir, &before, "after the refused resumes");
    // A checkpoint of the real files, resumed on files with one label
    // changed: only the training labels differ.
    let (ckpt2, csv2) = (dir.join("real.ckpt"), dir.join("real.csv"));
    let outputs2 = ["--checkpoint", p(&ckpt2), "--metrics-csv", p(&csv2)];
    let out = standalone(&args(p(&real), &outputs2));
    assert_ok(&out);
    // The files are CIFAR-format but not CIFAR-10's 10,000 records each:
    // loaded, with a warning naming the file.
    assert!(
        output_text(&out).contains("records where each file of the official CIFAR-10 holds 10000"),
        "{}",
        output_text(&out)
    );
    let before = snapshot(dir);
    let mut extra = outputs2.to_vec();
    extra.extend(["--epochs", "2", "--resume"]);
    let out = standalone(&args(p(&relabelled), &extra));
    assert_refused_at(&out, &["training labels: crc32"], false);
    let all = output_text(&out);
    assert!(
        !all.contains("training images:") && !all.contains("test labels:"),
        "{all}"
    );
    assert_unchanged(dir, &before, "after the refused resume");
    // The same data resumes.
    let stdout = assert_ok(&standalone(&args(p(&real), &extra)));
    assert!(stdout.contains("resumed from"), "{stdout}");
}

/// A resume continues the same run: other optimiser settings (learning
/// rate, momentum, weight decay, Nesterov, schedule, augmentation) are
/// refused, each named with both values; more epochs are allowed.
#[test]
fn a_resume_with_other_optimiser_settings_is_refused_naming_them() {
    let s = Scratch::new("inputs", "resume-settings");
    let dir = s.path();
    let ckpt = dir.join("run.ckpt");
    let outputs = ["--checkpoint", p(&ckpt)];
    assert_ok(&standalone(&args("synthetic:96", &outputs)));
    let before = snapshot(dir);
    let resume = |more: &[&str]| {
        let mut extra = outputs.to_vec();
        extra.extend(["--epochs", "2", "--resume"]);
        extra.extend(more);
        standalone(&args("synthetic:96", &extra))
    };
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--lr", "0.1"],
            &["learning rate (--lr)", "0.1 in this run"],
        ),
        (
            &["--momentum", "0.5"],
            &["momentum (--momentum) 0.9 in the checkpoint, 0.5"],
        ),
        (
            &["--weight-decay", "0"],
            &["weight decay (--weight-decay) 0.0005 in the checkpoint"],
        ),
        (
            &["--nesterov"],
            &["Nesterov (--nesterov) false in the checkpoint, true"],
        ),
        (
            &["--schedule", "constant"],
            &["schedule", "Constant in this run"],
        ),
        (&["--warmup-steps", "1"], &["schedule", "warmup_steps: 1"]),
        (&["--no-augment"], &["augmentation (--no-augment)"]),
    ];
    for (more, needles) in cases {
        let out = resume(more);
        assert_refused_at(&out, needles, false);
        assert!(
            output_text(&out).contains("--overwrite"),
            "{}",
            output_text(&out)
        );
    }
    assert_unchanged(dir, &before, "after the refused resumes");
    let stdout = assert_ok(&resume(&[]));
    assert!(stdout.contains("resumed from"), "{stdout}");
}

/// `--lr 1e30`: the loss is NaN from the second step. The run stops there,
/// naming the epoch and step, with a non-zero exit; the checkpoint it
/// resumed from is left as it was (the last good one).
#[test]
fn a_diverging_run_fails_and_keeps_the_last_good_checkpoint() {
    let s = Scratch::new("inputs", "diverge");
    let dir = s.path();
    let (ckpt, csv) = (dir.join("run.ckpt"), dir.join("m.csv"));
    let outputs = ["--checkpoint", p(&ckpt), "--metrics-csv", p(&csv)];
    let out = standalone(&args("synthetic:96", &["--lr", "1e30"]));
    assert_refused_at(
        &out,
        &["training diverged at epoch 1, step 2", "not finite"],
        false,
    );
    // One step at that rate still has a finite loss and is checkpointed
    // (a resume must keep the run's learning rate); the resumed run then
    // diverges at its first step.
    let mut first = outputs.to_vec();
    first.extend(["--lr", "1e30", "--max-steps", "1"]);
    assert_ok(&standalone(&args("synthetic:96", &first)));
    let before = snapshot(dir);
    let mut extra = outputs.to_vec();
    extra.extend(["--epochs", "3", "--resume", "--lr", "1e30"]);
    let out = standalone(&args("synthetic:96", &extra));
    assert_refused_at(&out, &["training diverged at epoch 1, step 2"], false);
    assert_unchanged(dir, &before, "after the diverged run");
}

#[test]
fn nonsense_and_overflowing_flags_are_refused_before_any_work() {
    let s = Scratch::new("inputs", "flags");
    let dir = s.path();
    let ckpt = dir.join("run.ckpt");
    std::fs::write(&ckpt, b"an earlier run's checkpoint").unwrap();
    let before = snapshot(dir);
    type Case<'a> = (&'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["--epochs", "2305843009213693952"],
            &["--epochs", "at most"],
        ),
        // Sizes that overflow 64 bits: a (saturated) figure, no panic.
        (
            &[
                "--model",
                "conv3x3(18446744073709551615,p18446744073709551615) flatten linear(9)",
            ],
            &["--model", "parameters", "MemAvailable"],
        ),
        (
            &["--epochs", "0", "--max-steps", "2"],
            &["--epochs 0", "--max-steps"],
        ),
        (&["--max-steps", "0"], &["--max-steps 0"]),
        (
            &["--step-epochs", "0", "--schedule", "step"],
            &["--step-epochs 0"],
        ),
        (
            &["--cores", "100000"],
            &["--cores 100000", "CPUs of this node"],
        ),
        (&["--cores", "0"], &["--cores 0"]),
        (&["--synthetic", "0"], &["--synthetic 0"]),
        (&["--global-batch", "0"], &["--global-batch 0"]),
        (&["--local-ranks", "0"], &["--local-ranks 0"]),
        (
            &["--synthetic", "100000000000"],
            &["--synthetic 100000000000", "TiB", "MemAvailable"],
        ),
        (
            &[
                "--model",
                "conv3x3(1000000,p1) relu maxpool2 flatten linear(10)",
            ],
            &[
                "--model",
                "per rank",
                "parameters",
                "MemAvailable",
                "--global-batch",
            ],
        ),
        // Negative numbers are values (naming their flag), not unknown flags.
        (&["--epochs", "-1"], &["'-1'", "--epochs"]),
        (&["--lr", "-0.1"], &["--lr", "-0.1"]),
        (&["--link-rate", "-1gbit"], &["--link-rate", "positive"]),
        (&["--log-every", "-5"], &["--log-every", "-5"]),
        (
            &["--bucket-kb", "64", "--allreduce", "naive"],
            &["--bucket-kb 64", "--allreduce ring"],
        ),
        (
            &["--bucket-kb", "18446744073709551615"],
            &["--bucket-kb 18446744073709551615", "at most"],
        ),
        (
            &["--local-ranks", "100000"],
            &["--local-ranks 100000", "MemAvailable"],
        ),
    ];
    for (extra, needles) in cases {
        let mut extra = extra.to_vec();
        extra.extend(["--overwrite", "--checkpoint", p(&ckpt)]);
        let out = standalone(&args("synthetic:96", &extra));
        assert_refused(&out, needles);
    }
    // Needs the training set's size: refused once it is loaded, before the
    // first step (and before the trainer's banner).
    let out = standalone(&args(
        "synthetic:96",
        &["--warmup-steps", "18446744073709551615"],
    ));
    assert_refused(
        &out,
        &["--warmup-steps 18446744073709551615", "shorter than"],
    );
    let summary = dir.join("summary.json");
    let out = standalone(&args(
        "synthetic:96",
        &["--summary-warmup", "100", "--summary-json", p(&summary)],
    ));
    assert_refused_at(&out, &["--summary-warmup 100", "medians"], false);
    // A model with fewer outputs than the data has classes: refused before
    // the first step, not at the first batch holding a label past them.
    let out = standalone(&args(
        "synthetic:96",
        &["--model", "conv3x3(4,p1) relu flatten linear(7)"],
    ));
    assert_refused_at(&out, &["10 classes", "7 outputs"], false);
    assert_unchanged(dir, &before, "after the refused runs");
}

#[cfg(feature = "mpi")]
#[test]
fn allreduce_bench_refuses_zero_iterations() {
    let mut cmd = common::with_timeout(TIMEOUT_S);
    cmd.arg(common::example("allreduce_bench"))
        .args(["--iters", "0", "--max-bytes", "4096"]);
    common::set_ompi_env(&mut cmd);
    let out = cmd.output().unwrap();
    let all = output_text(&out);
    assert!(!out.status.success() && !common::timed_out(&out), "{all}");
    assert!(
        !all.contains("panicked") && all.contains("--iters 0"),
        "{all}"
    );
}

/// `mpirun -np 1 cifar10 <a> : -np 1 cifar10 <b>`: one rank each.
#[cfg(feature = "mpi")]
fn mpmd(a: &[String], b: &[String]) -> Output {
    let prog = common::example("cifar10");
    let mut cmd = common::with_timeout(TIMEOUT_S);
    cmd.args(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "1"])
        .arg(&prog)
        .args(a)
        .args([":", "-np", "1"])
        .arg(&prog)
        .args(b);
    common::set_ompi_env(&mut cmd).env("RUST_LOG", "warn");
    cmd.output().unwrap()
}

/// Ranks whose data differs only in the training labels, or only in the
/// test set, are refused naming that part and the ranks.
#[cfg(feature = "mpi")]
#[test]
fn ranks_with_other_labels_or_another_test_set_are_named() {
    let s = Scratch::new("inputs", "ranks");
    let dir = s.path();
    let good = data(&dir.join("good"));
    let edit = |name: &str, file: &str, at: usize| {
        let d = data(&dir.join(name));
        let f = d.join(file);
        let mut b = std::fs::read(&f).unwrap();
        b[at] = if at % 3073 == 0 {
            (b[at] + 1) % 10
        } else {
            b[at] ^ 1
        };
        std::fs::write(&f, b).unwrap();
        d
    };
    let labels = edit("labels", "data_batch_2.bin", 3073 * 7);
    let test = edit("test", "test_batch.bin", 3073 * 2 + 100);
    let before = snapshot(dir);
    let a = args(p(&good), &[]);
    for (other, part, not) in [
        (&labels, "training labels: ", "test images: "),
        (&test, "test images: ", "training labels: "),
    ] {
        let out = mpmd(&a, &args(p(other), &[]));
        assert_refused_at(&out, &["the data differs", part, "on rank 1"], false);
        assert!(!output_text(&out).contains(not), "{}", output_text(&out));
    }
    assert_unchanged(dir, &before, "after the refused runs");
}
