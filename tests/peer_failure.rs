//! A rank that freezes or dies mid-epoch ends the whole job, named, with a
//! non-zero exit and no process left behind (ranks on this machine; the
//! same over real links in `tests/vcluster.rs`).
//!
//! The cifar10 example trains under `mpirun -np 3` with a 2 s peer timeout;
//! once it has finished an epoch, rank 2 is stopped (SIGSTOP) or rank 1
//! killed (SIGKILL).

#![cfg(feature = "mpi")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::fault::{pids_of_rank, signal};

const MODEL: &str = "conv3x3(8,p1) relu maxpool2 flatten linear(10)";

/// A running job and the lines of its stdout.
struct Job {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
    tag: String,
}

fn start(tag: &str) -> Job {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", "3", "--oversubscribe", "--bind-to", "none"])
        .arg(common::example("cifar10"))
        .args([
            "--synthetic",
            "480",
            "--global-batch",
            "48",
            "--epochs",
            "1000",
        ])
        .args([
            "--cores",
            "1",
            "--no-progress",
            "--no-eval",
            "--model",
            MODEL,
        ])
        .args(["--peer-timeout", "2"]);
    common::set_ompi_env(&mut cmd)
        .env("RUST_LOG", "warn")
        .env("RINGSGD_TEST_TAG", tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start mpirun");
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    Job {
        child,
        lines,
        stderr,
        tag: tag.to_string(),
    }
}

impl Job {
    /// Waits until rank 0 printed the end of epoch 2.
    fn wait_for_training(&mut self) {
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                if line.starts_with("epoch 2/") {
                    return;
                }
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("job ended before training: {s}");
            }
        }
        self.kill_all();
        panic!("no epoch line within 120 s");
    }

    /// Waits for mpirun to exit (at most `limit`); its status, the seconds
    /// it took and stderr.
    fn wait_exit(mut self, limit: Duration) -> (Option<i32>, f64, String) {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let secs = t0.elapsed().as_secs_f64();
                return (s.code(), secs, self.stderr.join().unwrap());
            }
            if t0.elapsed() > limit {
                self.kill_all();
                panic!(
                    "mpirun still running {} s after the fault (hang)",
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_all(&mut self) {
        for r in 0..3 {
            for pid in pids_of_rank(&self.tag, r) {
                signal(pid, "KILL");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rank_pid(tag: &str, rank: usize) -> u32 {
    let pids = pids_of_rank(tag, rank);
    assert_eq!(pids.len(), 1, "rank {rank}: processes {pids:?}");
    pids[0]
}

/// No process of the job is left (zombies waiting to be reaped aside),
/// 2 s after mpirun exited.
fn assert_nothing_left(tag: &str) {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let left: Vec<Vec<u32>> = (0..3).map(|r| pids_of_rank(tag, r)).collect();
        if left.iter().all(Vec::is_empty) {
            return;
        }
        assert!(Instant::now() < until, "ranks still running: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tag(name: &str) -> String {
    format!("peer-failure-{name}-{}", std::process::id())
}

#[test]
fn a_frozen_rank_is_named_and_the_job_ends() {
    let tag = tag("stop");
    let mut job = start(&tag);
    job.wait_for_training();
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
    let mut job = start(&tag);
    job.wait_for_training();
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
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", "3", "--oversubscribe", "--bind-to", "none"])
        .arg(common::example("cifar10"))
        .args([
            "--synthetic",
            "480",
            "--global-batch",
            "48",
            "--epochs",
            "400",
        ])
        .args([
            "--cores",
            "1",
            "--no-progress",
            "--no-eval",
            "--model",
            MODEL,
        ])
        .args(["--peer-timeout", "3"]);
    common::set_ompi_env(&mut cmd)
        .env("RUST_LOG", "warn")
        .env("RINGSGD_TEST_TAG", &tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
