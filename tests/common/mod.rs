//! Helpers shared by the integration tests: scratch folders, and launching
//! the example programs under `timeout` and `mpirun`.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub mod fault;

/// A scratch folder under the system temp dir, unique per test process,
/// removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `ringsgd-test-{kind}-{name}-{pid}`, emptied first.
    pub fn new(kind: &str, name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ringsgd-test-{kind}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `target/<profile>/examples/<name>`, found from the test binary's own path
/// (`target/<profile>/deps/<test>-<hash>`).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
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

/// `timeout -k 10 <secs>`, to be followed by the program: a launch that
/// hangs is killed, and fails its test instead of hanging CI.
pub fn with_timeout(secs: u32) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "10", &secs.to_string()]);
    cmd
}

/// Appends `mpirun -np <np> --oversubscribe`: more ranks than cores are
/// allowed.
pub fn add_mpirun(cmd: &mut Command, np: usize) -> &mut Command {
    cmd.args(["mpirun", "-np", &np.to_string(), "--oversubscribe"])
}

/// Sets, for the child only, what Open MPI needs here: runs as root allowed
/// (containers, CI), and idle ranks yielding their core (oversubscribed).
pub fn set_ompi_env(cmd: &mut Command) -> &mut Command {
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_mpi_yield_when_idle", "1")
}

/// Whether [`with_timeout`] killed the launch (exit status 124, or 137
/// after SIGKILL).
pub fn timed_out(out: &Output) -> bool {
    matches!(out.status.code(), Some(124) | Some(137))
}

/// The exit status, stdout and stderr of a launch, for failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for `child` with piped stdout/stderr, killing it after `limit`
/// (the output then has the kill's status, which [`timed_out`] does not
/// recognise: check `status.success()`).
pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let t0 = Instant::now();
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = read(child.stdout.take().map(|s| Box::new(s) as _));
    let err = read(child.stderr.take().map(|s| Box::new(s) as _));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            break child.wait().expect("wait for killed child");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The hash in the cifar10 example's "weights hash XXXX (identical on all
/// ranks)" line.
pub fn weights_hash(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("weights hash "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no weights hash in:\n{stdout}"))
        .to_string()
}
