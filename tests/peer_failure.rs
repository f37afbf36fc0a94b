//! A rank that freezes or dies mid-epoch ends the whole job, named, with a
//! non-zero exit and no process left behind (ranks on this machine; the
//! same over real links in `tests/vcluster.rs`).
//!
//! The cifar10 example trains under `mpirun -np 3` with a 2 s peer timeout;
//! once it has finished an epoch, rank 2 is stopped (SIGSTOP) or rank 1
//! killed (SIGKILL).

#![cfg(feature = "mpi")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::fault::{pids_of_rank, signal, wait_all_gone, Job};

const MODEL: &str = "conv3x3(8,p1) relu maxpool2 flatten linear(10)";
const RANKS: usize = 3;

/// `mpirun -np 3 cifar10` on synthetic data (10 steps an epoch) for
/// `epochs` epochs with a peer timeout of `timeout` seconds; its ranks carry
/// `RINGSGD_TEST_TAG=tag`.
fn cifar10(tag: &str, epochs: &str, timeout: &str) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "-np",
        &RANKS.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .arg(common::example("cifar10"))
    .args([
        "--synthetic",
        "480",
        "--global-batch",
        "48",
        "--epochs",
        epochs,
    ])
    .args([
        "--cores",
        "1",
        "--no-progress",
        "--no-eval",
        "--model",
        MODEL,
    ])
    .args(["--peer-timeout", timeout]);
    common::set_ompi_env(&mut cmd)
        .env("RUST_LOG", "warn")
        .env("RINGSGD_TEST_TAG", tag);
    cmd
}

/// A long training job, once it has finished epoch 2.
fn training(tag: &str) -> Job {
    let mut job = Job::spawn(&mut cifar10(tag, "1000", "2"));
    job.wait_for_line("epoch 2/", Duration::from_secs(120));
    job
}

fn rank_pid(tag: &str, rank: usize) -> u32 {
    let pids = pids_of_rank(tag, rank);
    assert_eq!(pids.len(), 1, "rank {rank}: processes {pids:?}");
    pids[0]
}

/// No process of the job is left 2 s after mpirun exited.
fn assert_nothing_left(tag: &str) {
    if let Err(left) = wait_all_gone(tag, RANKS, Duration::from_secs(2)) {
        panic!("ranks still running: {left:?}");
    }
}

fn tag(name: &str) -> String {
    format!("peer-failure-{name}-{}", std::process::id())
}

#[test]
fn a_frozen_rank_is_named_and_the_job_ends() {
    let tag = tag("stop");
    let job = training(&tag);
    let victim = rank_pid(&tag, 2);
    signal(victim, "STOP");
    let (code, secs, stderr) = job.wait_exit(Duration::from_secs(60));
    println!("frozen rank 2: mpirun exited with {code:?} {secs:.1} s after SIGSTOP");
    assert_eq!(code, Some(3), "exit code of a peer timeout:\n{stderr}");
    assert!(
        stderr.contains("peer timeout") && stderr.contains("from rank 2 (host "),
        "the error does not name rank 2 and its host:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_nothing_left(&tag);
    assert!(
        !pids_of_rank(&tag, 2).contains(&victim),
        "the frozen rank {victim} was left behind"
    );
}

#[test]
fn a_killed_rank_ends_the_job_named() {
    let tag = tag("kill");
    let job = training(&tag);
    signal(rank_pid(&tag, 1), "KILL");
    let (code, secs, stderr) = job.wait_exit(Duration::from_secs(60));
    println!("killed rank 1: mpirun exited with {code:?} {secs:.1} s after SIGKILL");
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{stderr}");
    assert!(stderr.contains("rank 1"), "nothing names rank 1:\n{stderr}");
    assert_nothing_left(&tag);
}

/// A rank that is only slow (stopped for less than the deadline) is not a
/// fault: training goes on and the job ends normally.
#[test]
fn a_short_stall_is_not_a_fault() {
    let tag = tag("stall");
    let mut cmd = cifar10(&tag, "400", "3");
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("start mpirun");
    // Stall rank 2 for 1.5 s, twice, while it trains.
    let stall_tag = tag.clone();
    let staller = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        let pid = loop {
            let pids = pids_of_rank(&stall_tag, 2);
            if pids.len() == 1 || Instant::now() > until {
                break pids.first().copied();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(pid) = pid else { return 0 };
        std::thread::sleep(Duration::from_secs(2));
        let mut stalls = 0;
        for _ in 0..2 {
            if !signal(pid, "STOP") {
                break;
            }
            std::thread::sleep(Duration::from_millis(1500));
            signal(pid, "CONT");
            stalls += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        stalls
    });
    let out = common::wait_with_timeout(child, Duration::from_secs(300));
    let stalls = staller.join().unwrap();
    let text = common::output_text(&out);
    assert!(
        stalls >= 1,
        "the job ended before rank 2 could be stalled:\n{text}"
    );
    assert!(out.status.success(), "a 1.5 s stall ended the job:\n{text}");
}
