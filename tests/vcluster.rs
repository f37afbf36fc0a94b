//! The cifar10 example across four virtual hosts (`.ci/vcluster`: network
//! namespaces on a switch, 1 Gbit links shaped with tbf): training on 1, 2
//! and 4 hosts along one trajectory, resume on 3 hosts, and the faults a Pi
//! cluster meets (a rank killed, a rank frozen, a host cut off, rank 0
//! killed while it writes a checkpoint), each ending the job named, leaving
//! no process behind, and the last checkpoint resuming bitwise exactly on
//! the remaining 3 hosts.
//!
//! Needs root (CAP_NET_ADMIN) and Open MPI; skipped with a printed reason
//! otherwise. The cluster is always taken down, also when a check fails.

#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fault::{pids_of_rank, wait_all_gone, Job};

const HOSTS: usize = 4;
const MODEL: &str = "conv3x3(8,p1) relu maxpool2 conv3x3(16,p1) relu maxpool2 flatten linear(10)";
/// 960 images in global batches of 48: 20 steps an epoch (divisible by 1,
/// 2, 3 and 4 ranks).
const TRAIN_ARGS: [&str; 10] = [
    "--synthetic",
    "960",
    "--global-batch",
    "48",
    "--cores",
    "1",
    "--no-progress",
    "--no-eval",
    "--lr",
    "0.05",
];
const STEPS_PER_EPOCH: u64 = 20;
/// Peer timeout of the fault runs (seconds).
const PEER_TIMEOUT: u64 = 3;
/// Epochs of the fault runs, their resumes and references (the cosine
/// schedule depends on it, so all use the same).
const FAULT_EPOCHS: &str = "8";

fn vcluster() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/vcluster")
}

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: network namespaces need CAP_NET_ADMIN".into());
    }
    let probe = format!("ringsgd-probe-{}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &probe]).output();
    match made {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            None
        }
        Ok(o) => Some(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("no `ip` command: {e}")),
    }
}

/// Takes the cluster down when dropped (also on a failed assertion).
struct Cluster;

impl Cluster {
    fn up() -> Cluster {
        let out = Command::new(vcluster())
            .args(["up", &HOSTS.to_string(), "--rate", "1gbit"])
            .output()
            .expect("run .ci/vcluster up");
        let text = common::output_text(&out);
        println!("{text}");
        assert!(out.status.success(), "vcluster up failed:\n{text}");
        Cluster
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(vcluster())
            .args(args)
            .output()
            .expect("run .ci/vcluster")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.cmd(&["down"]);
        if !out.status.success() {
            eprintln!("vcluster down failed:\n{}", common::output_text(&out));
        }
    }
}

/// Every fault hits vh3; the remaining hosts resume the run.
const SURVIVORS: &str = "vh1,vh2,vh4";

/// The first `np` hosts, as mpirun's `--host` list.
fn first(np: usize) -> String {
    (1..=np)
        .map(|k| format!("vh{k}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `vcluster run -- -np N --host HOSTS -x RINGSGD_TEST_TAG cifar10 ARGS...`,
/// one rank on each of `hosts`.
fn cifar10(hosts: &str, tag: &str, args: &[&str]) -> Command {
    let np = hosts.split(',').count().to_string();
    let mut cmd = Command::new(vcluster());
    cmd.args(["run", "--", "-np", &np, "--host", hosts])
        .args(["-x", "RINGSGD_TEST_TAG"])
        .arg(common::example("cifar10"))
        .args(TRAIN_ARGS)
        .args(
            ["--model", MODEL]
                .iter()
                .filter(|_| !args.contains(&"--model")),
        )
        .args(args)
        .env("RINGSGD_TEST_TAG", tag)
        .env("RUST_LOG", "warn");
    cmd
}

/// Runs on `hosts` to the end (at most 240 s) and expects success; stdout.
fn ok(hosts: &str, args: &[&str]) -> String {
    let child = cifar10(hosts, "ok", args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vcluster run");
    let out = common::wait_with_timeout(child, Duration::from_secs(240));
    let text = common::output_text(&out);
    assert!(out.status.success(), "on {hosts} {args:?} failed:\n{text}");
    assert!(text.contains("identical on all ranks"), "{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn train_losses(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "train_loss")?;
            w.next()?.parse().ok()
        })
        .collect()
}

/// `(epoch, step)` of "resumed from PATH at epoch E, step S".
fn resumed_at(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("resumed from"))
        .unwrap_or_else(|| panic!("did not resume:\n{stdout}"));
    let nums: Vec<u64> = line
        .rsplit(" at epoch ")
        .next()
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// A faulted job: started on 4 hosts, fault injected after epoch 2.
struct FaultRun {
    /// Seconds from the fault to mpirun's exit.
    secs: f64,
    code: Option<i32>,
    stderr: String,
}

/// Trains on 4 hosts with checkpoints until epoch 2 is done, then `inject`s
/// the fault and times the end of the job.
fn fault_run(tag: &str, ckpt: &Path, peer_timeout: u64, inject: &mut dyn FnMut(&Path)) -> FaultRun {
    let timeout = peer_timeout.to_string();
    let mut job = Job::spawn(&mut cifar10(
        &first(HOSTS),
        tag,
        &[
            "--epochs",
            FAULT_EPOCHS,
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--peer-timeout",
            &timeout,
        ],
    ));
    job.wait_for_line("epoch 2/", Duration::from_secs(120));
    inject(ckpt);
    let (code, secs, stderr) = job.wait_exit(Duration::from_secs(90));
    FaultRun { secs, code, stderr }
}

/// Every process of job `tag` has exited (within `within`), on every host;
/// the seconds it took.
fn assert_nothing_left(tag: &str, within: Duration) -> f64 {
    wait_all_gone(tag, HOSTS, within).unwrap_or_else(|left| {
        panic!(
            "{tag}: processes left {} s after the end: {left:?}",
            within.as_secs()
        )
    })
}

/// The weights hash after resuming `ckpt` on 3 hosts and training to the
/// end of epoch `epochs`.
fn resume_on_three(ckpt: &Path, epochs: u64) -> (u64, String) {
    let e = epochs.to_string();
    let out = ok(
        SURVIVORS,
        &[
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--resume",
            "--epochs",
            &e,
        ],
    );
    (resumed_at(&out).1, common::weights_hash(&out))
}

/// What an unfaulted run gives when it stops after `step` steps on 4 hosts
/// and resumes on 3 until `epochs`.
fn reference_hash(dir: &Path, step: u64, epochs: u64) -> String {
    let ckpt = dir.join(format!("ref-{step}.ckpt"));
    let e = epochs.to_string();
    let s = step.to_string();
    ok(
        &first(HOSTS),
        &[
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--epochs",
            &e,
            "--max-steps",
            &s,
        ],
    );
    resume_on_three(&ckpt, epochs).1
}

#[test]
fn trains_across_hosts_and_survives_faults() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED tests/vcluster.rs: {why}");
        return;
    }
    let t_all = Instant::now();
    let scratch = common::Scratch::new("vcluster", "faults");
    let dir = scratch.path();
    let cluster = Cluster::up();

    // Bad launches: a clear error naming the host (from the ssh-like agent
    // and Open MPI), a non-zero exit, no hang.
    let bad_launch = |mpirun: &[&str], needle: &str| {
        let child = Command::new(vcluster())
            .args(["run", "--"])
            .args(mpirun)
            .arg(common::example("cifar10"))
            .args(TRAIN_ARGS)
            .args(["--model", MODEL, "--epochs", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vcluster run");
        let out = common::wait_with_timeout(child, Duration::from_secs(120));
        let text = common::output_text(&out);
        assert!(
            out.status.code().is_some_and(|c| c != 0),
            "{mpirun:?}: expected a failure:\n{text}"
        );
        assert!(
            text.contains(needle),
            "{mpirun:?}: no '{needle}' in:\n{text}"
        );
    };
    bad_launch(&["-np", "2", "--host", "vh1,nosuchhost"], "nosuchhost");
    let no_slots = dir.join("no-slots");
    std::fs::write(&no_slots, "vh1 slots=0\nvh2 slots=0\n").unwrap();
    bad_launch(
        &["-np", "2", "--hostfile", no_slots.to_str().unwrap()],
        "already filled",
    );
    assert!(cluster.cmd(&["cut", "vh4"]).status.success());
    bad_launch(&["-np", "4"], "vh4");
    assert!(cluster.cmd(&["heal", "vh4"]).status.success());

    // One trajectory on 1, 2 and 4 hosts; replicas identical ("identical
    // on all ranks" is checked by `ok`).
    let curves: Vec<Vec<f64>> = [1, 2, 4]
        .iter()
        .map(|&np| train_losses(&ok(&first(np), &["--epochs", "3"])))
        .collect();
    for (np, c) in [(2, &curves[1]), (4, &curves[2])] {
        assert_eq!(c.len(), 3, "np={np}: {c:?}");
        for (a, b) in curves[0].iter().zip(c) {
            assert!(
                (a - b).abs() / a < 1e-3,
                "np={np} left np=1's trajectory: {c:?} vs {:?}",
                curves[0]
            );
        }
    }
    assert!(
        curves[0][2] < curves[0][0],
        "loss did not decrease: {:?}",
        curves[0]
    );

    // Rank 0's checkpoint of a 4-host run resumes on 3 hosts.
    let ckpt = dir.join("four.ckpt");
    ok(
        &first(HOSTS),
        &["--checkpoint", ckpt.to_str().unwrap(), "--epochs", "2"],
    );
    let (step, _) = resume_on_three(&ckpt, 3);
    assert_eq!(step, 2 * STEPS_PER_EPOCH);

    // A slow but alive host is not a fault: the run goes on, and every
    // epoch line names it as the one the others waited for (PiNet, so that
    // the step's compute is long enough for the CPU quota to bite).
    assert!(cluster.cmd(&["throttle", "vh3", "20"]).status.success());
    let slow = ok(
        &first(HOSTS),
        &["--epochs", "2", "--peer-timeout", "3", "--model", "pinet"],
    );
    assert!(cluster.cmd(&["throttle", "vh3", "off"]).status.success());
    let epochs: Vec<&str> = slow.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(epochs.len(), 2, "{slow}");
    for line in &epochs {
        assert!(
            line.contains("slowest rank 2 (vh3)"),
            "throttled vh3 not named: {line}"
        );
    }
    println!("throttled vh3: {}", epochs[1]);

    let mut report = Vec::new();
    let mut refs: Vec<(u64, String)> = Vec::new();
    let mut check_resume = |name: &str, ckpt: &Path| {
        let epochs = FAULT_EPOCHS.parse().unwrap();
        let (step, hash) = resume_on_three(ckpt, epochs);
        assert_eq!(step % STEPS_PER_EPOCH, 0, "{name}: checkpoint mid-epoch");
        let want = match refs.iter().find(|(s, _)| *s == step) {
            Some((_, h)) => h.clone(),
            None => {
                let h = reference_hash(dir, step, epochs);
                refs.push((step, h.clone()));
                h
            }
        };
        assert_eq!(
            hash, want,
            "{name}: the checkpoint at step {step} did not resume exactly"
        );
        step
    };

    // A rank killed: Open MPI ends the job and names rank and host.
    let ck = dir.join("kill.ckpt");
    let r = fault_run("vc-kill", &ck, PEER_TIMEOUT, &mut |_| {
        assert!(cluster.cmd(&["kill", "vh3", "KILL"]).status.success());
    });
    assert!(r.code.is_some_and(|c| c != 0), "kill: exit {:?}", r.code);
    assert!(
        r.stderr.contains("rank 2") && r.stderr.contains("vh3"),
        "kill: rank 2 on vh3 not named:\n{}",
        r.stderr
    );
    assert!(r.secs <= 5.0, "kill: the job took {:.1} s to end", r.secs);
    assert_nothing_left("vc-kill", Duration::from_secs(10));
    let step = check_resume("kill", &ck);
    report.push(format!(
        "rank killed: ended after {:.1} s, resumed at step {step}",
        r.secs
    ));

    // A rank frozen: named by the others' liveness check.
    let ck = dir.join("stop.ckpt");
    let r = fault_run("vc-stop", &ck, PEER_TIMEOUT, &mut |_| {
        assert!(cluster.cmd(&["kill", "vh3", "STOP"]).status.success());
    });
    assert_eq!(r.code, Some(3), "stop: exit code:\n{}", r.stderr);
    assert!(
        r.stderr.contains("from rank 2 (host vh3)"),
        "stop: rank 2 on vh3 not named:\n{}",
        r.stderr
    );
    assert!(
        r.secs <= PEER_TIMEOUT as f64 + 10.0,
        "stop: {:.1} s from the fault to the end",
        r.secs
    );
    assert_nothing_left("vc-stop", Duration::from_secs(10));
    let step = check_resume("stop", &ck);
    report.push(format!(
        "rank frozen: ended after {:.1} s, resumed at step {step}",
        r.secs
    ));

    // A host cut off: named by the others, who leave the end of the job to
    // Open MPI's lost-host detection (an abort would wait for the lost
    // host's daemon). That takes ~13 s from the cut whatever the deadline,
    // so this run's deadline leaves the 10 s allowance a margin.
    let cut_timeout = PEER_TIMEOUT + 3;
    let ck = dir.join("cut.ckpt");
    let r = fault_run("vc-cut", &ck, cut_timeout, &mut |_| {
        assert!(cluster.cmd(&["cut", "vh3"]).status.success());
    });
    assert!(r.code.is_some_and(|c| c != 0), "cut: exit {:?}", r.code);
    assert!(
        r.stderr.contains("from rank 2 (host vh3)"),
        "cut: rank 2 on vh3 not named:\n{}",
        r.stderr
    );
    assert!(
        r.secs <= cut_timeout as f64 + 10.0,
        "cut: {:.1} s from the fault to the end",
        r.secs
    );
    // The cut host's daemon notices the lost mpirun and ends its rank.
    let lingered = assert_nothing_left("vc-cut", Duration::from_secs(30));
    assert!(cluster.cmd(&["heal", "vh3"]).status.success());
    let step = check_resume("cut", &ck);
    report.push(format!(
        "host cut: ended after {:.1} s, its processes gone {lingered:.1} s later (still cut), \
         resumed at step {step}",
        r.secs
    ));

    // Rank 0 killed while it writes a checkpoint: the previous one stays.
    let ck = dir.join("write.ckpt");
    let r = fault_run("vc-write", &ck, PEER_TIMEOUT, &mut |ck| {
        let before = std::fs::read(ck).expect("a checkpoint after epoch 2");
        // The next save creates a temporary beside the checkpoint first.
        let folder = ck.parent().unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let tmp = std::fs::read_dir(folder).unwrap().flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("write.ckpt") && n != "write.ckpt"
            });
            if tmp {
                break;
            }
            assert!(Instant::now() < until, "no checkpoint write seen");
            std::thread::yield_now();
        }
        for pid in pids_of_rank("vc-write", 0) {
            common::fault::signal(pid, "KILL");
        }
        // Killed before or after the rename: either way a whole checkpoint
        // (check_resume proves it is exactly some step's state).
        assert!(!before.is_empty());
    });
    assert!(r.code.is_some_and(|c| c != 0), "write: exit {:?}", r.code);
    assert_nothing_left("vc-write", Duration::from_secs(10));
    let step = check_resume("rank 0 killed while writing", &ck);
    report.push(format!(
        "rank 0 killed while writing: ended after {:.1} s, resumed at step {step}",
        r.secs
    ));

    println!(
        "vcluster faults ({:.0} s in all):\n  {}",
        t_all.elapsed().as_secs_f64(),
        report.join("\n  ")
    );
    drop(cluster);
}
