//! Fault injection into running MPI jobs: find a rank's process and signal
//! it.

use std::path::Path;
use std::time::{Duration, Instant};

/// PIDs of the processes of MPI rank `rank` whose environment holds
/// `RINGSGD_TEST_TAG=<tag>` (mpirun passes its environment to the ranks; the
/// tag tells this test's job from any other on the machine).
pub fn pids_of_rank(tag: &str, rank: usize) -> Vec<u32> {
    let want_tag = format!("RINGSGD_TEST_TAG={tag}");
    let want_rank = format!("OMPI_COMM_WORLD_RANK={rank}");
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ"))
        else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        let has = |w: &str| vars.contains(&w.as_bytes());
        if has(&want_tag) && has(&want_rank) && !is_zombie(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Sends `SIG<name>` to `pid` (`kill -s <name>`); whether it was delivered.
pub fn signal(pid: u32, name: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A launched job whose stdout is read line by line while it runs, and
/// whose stderr is collected.
pub struct Job {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Job {
    /// Starts `cmd` with stdout and stderr piped.
    pub fn spawn(cmd: &mut std::process::Command) -> Job {
        use std::io::{BufRead, Read};
        use std::process::Stdio;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the job");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }));
        Job {
            child,
            lines,
            stderr,
        }
    }

    /// Waits until a stdout line starts with `prefix`; panics (after
    /// killing the job) if the job ends first or `limit` passes.
    pub fn wait_for_line(&mut self, prefix: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if line.starts_with(prefix) {
                    return;
                }
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!(
                    "the job ended ({s}) before printing '{prefix}':\n{}",
                    self.take_stderr()
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("no line '{prefix}' within {} s", limit.as_secs());
    }

    /// Everything the job wrote to stderr (call once it has exited).
    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }

    /// Waits for the job to exit: its exit code, the seconds it took from
    /// this call, and its stderr. Panics (after killing it) past `limit`:
    /// a hang.
    pub fn wait_exit(mut self, limit: Duration) -> (Option<i32>, f64, String) {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let secs = t0.elapsed().as_secs_f64();
                return (s.code(), secs, self.take_stderr());
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running {} s after the fault (hang)", limit.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits until no process of ranks `0..ranks` of job `tag` is left
/// (zombies aside); the seconds it took, or the processes still there after
/// `within`.
pub fn wait_all_gone(tag: &str, ranks: usize, within: Duration) -> Result<f64, Vec<Vec<u32>>> {
    let t0 = Instant::now();
    loop {
        let left: Vec<Vec<u32>> = (0..ranks).map(|r| pids_of_rank(tag, r)).collect();
        if left.iter().all(Vec::is_empty) {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > within {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
