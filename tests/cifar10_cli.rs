//! The cifar10 example end to end, on small synthetic CIFAR-10 files: under
//! `mpirun -np 1, 2, 3` (loss decreases, replicas identical, np = 2 and 3
//! follow np = 1), bad inputs (clear error, non-zero exit, no hang),
//! checkpoints (exact resume, resume on another world size, corruption).
//!
//! The example is built by `cargo test` into `target/<profile>/examples/`;
//! every launch is killed after a timeout so a hang fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::output_text;
use ringsgd::data::synthetic;

const TIMEOUT_S: u32 = 180;
/// Small enough for debug builds on 2 cores: two conv layers, 16 channels.
const MODEL: &str = "conv3x3(8,p1) relu maxpool2 conv3x3(16,p1) relu maxpool2 flatten linear(10)";

/// A fresh scratch folder under the target dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringsgd_cli_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Synthetic CIFAR-10 files (5 x 48 training, 60 test images) in `dir`.
fn data(dir: &Path) -> PathBuf {
    synthetic::write_cifar_dir(dir, 48, 60, 3).unwrap()
}

/// Runs the example on `np` MPI ranks (0: standalone, no mpirun). Built
/// without the `mpi` feature, the ranks are threads (`--local-ranks`).
fn run(np: usize, args: &[&str]) -> Output {
    let mut cmd = common::with_timeout(TIMEOUT_S);
    let mpi = cfg!(feature = "mpi");
    if np > 0 && mpi {
        common::add_mpirun(&mut cmd, np).args(["--bind-to", "none"]);
    }
    cmd.arg(common::example("cifar10")).args(args);
    if np > 0 && !mpi {
        cmd.args(["--local-ranks", &np.to_string()]);
    }
    common::set_ompi_env(&mut cmd).env("RUST_LOG", "warn");
    cmd.output().expect("start timeout/mpirun")
}

fn ok(np: usize, args: &[&str]) -> String {
    let out = run(np, args);
    assert!(
        out.status.success(),
        "np={np} {args:?} failed:\n{}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and expects a clean failure whose output contains `needle`.
fn fails_with(np: usize, args: &[&str], needle: &str) {
    let out = run(np, args);
    let all = output_text(&out);
    let code = out.status.code();
    assert!(
        code.is_some() && code != Some(0),
        "expected a failure:\n{all}"
    );
    assert!(
        !common::timed_out(&out),
        "killed by the timeout (hang?):\n{all}"
    );
    assert!(
        all.contains(needle),
        "error does not mention '{needle}':\n{all}"
    );
    assert!(
        !all.contains("panicked"),
        "panic instead of an error:\n{all}"
    );
}

fn train_losses(csv: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "train_loss").unwrap();
    lines
        .map(|l| l.split(',').nth(col).unwrap().parse().unwrap())
        .collect()
}

fn last_line(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or("")
}

fn base_args<'a>(data: &'a str, csv: &'a str) -> Vec<&'a str> {
    vec![
        "--data",
        data,
        "--model",
        MODEL,
        "--epochs",
        "3",
        "--global-batch",
        "24",
        "--lr",
        "0.05",
        "--cores",
        "1",
        "--seed",
        "7",
        "--metrics-csv",
        csv,
        "--verify-every",
        "1",
    ]
}

#[test]
fn trains_on_1_2_3_ranks_along_the_same_trajectory() {
    let dir = scratch("ranks");
    let data = data(&dir);
    let data = data.to_str().unwrap();
    let mut curves = Vec::new();
    for np in [1, 2, 3] {
        let csv = dir.join(format!("np{np}.csv"));
        let csv_s = csv.to_str().unwrap();
        let stdout = ok(np, &base_args(data, csv_s));
        assert!(last_line(&stdout).starts_with("test_accuracy="), "{stdout}");
        assert!(stdout.contains("identical on all ranks"), "{stdout}");
        let losses = train_losses(&csv);
        assert_eq!(losses.len(), 3, "{losses:?}");
        assert!(
            losses[2] < losses[0] * 0.9,
            "np={np}: loss did not decrease: {losses:?}"
        );
        curves.push(losses);
    }
    for (np, c) in [(2, &curves[1]), (3, &curves[2])] {
        for (a, b) in curves[0].iter().zip(c) {
            assert!(
                (a - b).abs() / a < 1e-3,
                "np={np} left np=1's trajectory: {c:?} vs {:?}",
                curves[0]
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_is_exact_and_works_on_another_world_size() {
    let dir = scratch("resume");
    let data = data(&dir);
    let data = data.to_str().unwrap();
    let csv = dir.join("m.csv");
    let csv = csv.to_str().unwrap();
    let full = common::weights_hash(&ok(2, &base_args(data, csv)));

    let ckpt = dir.join("run.ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let mut first = base_args(data, csv);
    // Each fresh start replaces the previous checkpoint and CSV: say so.
    first.extend(["--checkpoint", ckpt, "--max-steps", "10", "--overwrite"]);
    ok(2, &first);
    let mut rest = base_args(data, csv);
    rest.extend(["--checkpoint", ckpt, "--resume"]);
    let resumed = ok(2, &rest);
    assert!(resumed.contains("resumed from"), "{resumed}");
    assert_eq!(
        common::weights_hash(&resumed),
        full,
        "resumed run ended with other weights"
    );

    // The same checkpoint continued on 3 ranks and standalone.
    ok(2, &first);
    let on_three = ok(3, &rest);
    assert!(on_three.contains("resumed from"), "{on_three}");
    ok(2, &first);
    let export = dir.join("w.safetensors");
    let mut alone = rest.clone();
    alone.extend(["--export", export.to_str().unwrap()]);
    ok(0, &alone);
    let tensors = ringsgd::checkpoint::safetensors::read(&export).unwrap();
    assert_eq!(tensors.len(), 6, "conv1/conv2/fc weights and biases");

    // A corrupted checkpoint is refused with a clear error.
    let mut bytes = std::fs::read(ckpt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(ckpt, &bytes).unwrap();
    fails_with(2, &rest, "checksum");
    std::fs::write(ckpt, b"hello").unwrap();
    fails_with(1, &rest, "run.ckpt");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = scratch("bad");
    let good = data(&dir.join("good"));
    let good_s = good.to_str().unwrap();
    let csv = dir.join("m.csv");
    let csv = csv.to_str().unwrap();

    // Unknown flag (clap) and batch not divisible by the ranks.
    fails_with(0, &["--data", good_s, "--no-such-flag"], "--no-such-flag");
    let mut args = base_args(good_s, csv);
    let batch = args.iter().position(|a| *a == "--global-batch").unwrap();
    args[batch + 1] = "32";
    fails_with(3, &args, "not divisible");

    // Truncated file, label 10, missing file, wrong folder.
    let broken = |name: &str, edit: &dyn Fn(&Path)| {
        let root = dir.join(name);
        let bin = data(&root);
        edit(&bin);
        root
    };
    let truncated = broken("truncated", &|bin| {
        let f = bin.join("data_batch_2.bin");
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
    });
    fails_with(
        2,
        &base_args(truncated.to_str().unwrap(), csv),
        "data_batch_2.bin",
    );
    let label = broken("label", &|bin| {
        let f = bin.join("data_batch_3.bin");
        let mut b = std::fs::read(&f).unwrap();
        b[3073 * 5] = 10;
        std::fs::write(&f, b).unwrap();
    });
    fails_with(1, &base_args(label.to_str().unwrap(), csv), "record 5");
    let missing = broken("missing", &|bin| {
        std::fs::remove_file(bin.join("test_batch.bin")).unwrap();
    });
    fails_with(
        2,
        &base_args(missing.to_str().unwrap(), csv),
        "test_batch.bin",
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        1,
        &base_args(empty.to_str().unwrap(), csv),
        "cifar-10-batches-bin",
    );
    fails_with(0, &["--model", MODEL], "--data");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Ranks that fail at the same moment print whole lines: each error line is
/// one rank's, from its `rank N: error:` prefix to the end of its message
/// (every rank writes a line in one call; `eprintln!` may write it in
/// pieces, which interleaved mid-line under mpirun).
#[test]
fn error_lines_of_ranks_failing_together_are_not_interleaved() {
    // Every rank refuses the same missing file, at once, before any work.
    let missing = "/nonexistent/ringsgd/a-rather-long-path-so-that-a-line-written-in-pieces-would-interleave/cifar-10-binary.tar.gz";
    for _ in 0..3 {
        let out = run(4, &["--data", missing, "--epochs", "1"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        assert!(!lines.is_empty(), "no error line:\n{stderr}");
        for l in lines {
            let ok = (0..4).any(|r| l.starts_with(&format!("rank {r}: error: ")))
                || l.starts_with("error: ");
            assert!(
                ok,
                "a line not started by one rank's prefix: {l:?}\n{stderr}"
            );
            assert_eq!(
                l.matches("error:").count(),
                1,
                "two messages in one line: {l:?}"
            );
            assert!(l.contains(missing), "a message cut short: {l:?}");
        }
    }
}
