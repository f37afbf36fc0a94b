//! The `mnist` example on IDX files the test generates: it trains, reports
//! `test_accuracy=`, fails below its accuracy floor, and names a bad file;
//! in-process ranks always, and under mpirun with the `mpi` feature.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{example, Scratch};
use ringsgd::data::{mnist, synthetic};

const TIMEOUT_S: u32 = 120;

fn run(args: &[&str], mpi_ranks: Option<usize>) -> Output {
    let mut cmd: Command = common::with_timeout(TIMEOUT_S);
    if let Some(np) = mpi_ranks {
        common::add_mpirun(&mut cmd, np);
        common::set_ompi_env(&mut cmd);
    }
    let out = cmd
        .arg(example("mnist"))
        .args(args)
        .output()
        .expect("start the mnist example under timeout");
    assert!(
        !common::timed_out(&out),
        "killed after {TIMEOUT_S} s\n{}",
        common::output_text(&out)
    );
    out
}

fn accuracy(out: &Output) -> f64 {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test_accuracy="))
        .unwrap_or_else(|| panic!("no test_accuracy line\n{}", common::output_text(out)));
    line.trim().parse().unwrap()
}

fn write_data(dir: &Path) {
    synthetic::write_mnist_dir(dir, 640, 120, 3, true).unwrap();
}

#[test]
fn trains_on_generated_idx_files_with_in_process_ranks() {
    let s = Scratch::new("mnist-example", "local");
    write_data(s.path());
    let dir = s.path().to_str().unwrap();
    let common_args = [
        "--data",
        dir,
        "--local-ranks",
        "2",
        "--cores",
        "1",
        "--epochs",
        "3",
    ];
    let out = run(
        &[&common_args[..], &["--min-accuracy", "0.5", "--pad", "2"]].concat(),
        None,
    );
    assert!(out.status.success(), "{}", common::output_text(&out));
    let acc = accuracy(&out);
    assert!(acc >= 0.5, "{acc}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1x28x28") && stdout.contains("augment pad=2,hflip=false"),
        "{stdout}"
    );

    // The floor is enforced: no accuracy reaches 1.01.
    let out = run(
        &[&common_args[..], &["--min-accuracy", "1.01"]].concat(),
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("below the floor"), "{stderr}");
}

#[test]
fn a_bad_idx_file_is_named() {
    let s = Scratch::new("mnist-example", "bad");
    write_data(s.path());
    let labels = s.path().join(format!("{}.gz", mnist::TEST_LABELS));
    let mut bytes = std::fs::read(&labels).unwrap();
    let n = bytes.len();
    bytes[n - 8] ^= 0xff; // the gzip CRC
    std::fs::write(&labels, bytes).unwrap();
    let out = run(
        &["--data", s.path().to_str().unwrap(), "--local-ranks", "1"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", common::output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&labels.display().to_string()) && stderr.contains("gzip check failed"),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(not(feature = "mpi"), ignore = "built without the `mpi` feature")]
fn trains_under_mpirun_with_the_same_result_as_in_process() {
    let s = Scratch::new("mnist-example", "mpi");
    write_data(s.path());
    let args = [
        "--data",
        s.path().to_str().unwrap(),
        "--cores",
        "1",
        "--epochs",
        "2",
    ];
    let floor = ["--min-accuracy", "0.3"];
    let mpi = run(&[&args[..], &floor].concat(), Some(2));
    assert!(mpi.status.success(), "{}", common::output_text(&mpi));
    let local = run(&[&args[..], &floor, &["--local-ranks", "2"]].concat(), None);
    assert!(local.status.success(), "{}", common::output_text(&local));
    // Same seed and world size: bitwise the same run, whatever the transport.
    assert_eq!(accuracy(&mpi), accuracy(&local));
}
