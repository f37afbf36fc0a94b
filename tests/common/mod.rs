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
/// hangs is killed, and fails its test instead of hanging CI. The launch
/// gets its own Open MPI session folder ([`own_ompi_session_dir`]).
pub fn with_timeout(secs: u32) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "10", &secs.to_string()]);
    own_ompi_session_dir(&mut cmd);
    cmd
}

/// The variable that moves Open MPI's session folders.
const OMPI_TMPDIR_VAR: &str = "OMPI_MCA_orte_tmpdir_base";

/// Points the launch's Open MPI session folders (`ompi.<host>.<uid>/...`)
/// at a folder of its own, `<tmp>/ringsgd-ompi-<pid>-<n>`, unless the
/// command already has one.
///
/// Open MPI 4 makes `<tmp>/ompi.<host>.<uid>` at every start (mpirun, or a
/// program started without it) by checking whether it exists and then
/// calling mkdir, and it removes it again when the last job ends. Two
/// programs that start at the same moment can both find it missing; the
/// second mkdir then fails with "File exists" and the start fails in
/// `orte_init` (open-mpi/ompi#8510). The tests start many programs at once:
/// seen on a fresh Debian 12 (`.ci/bare-check`) in `tests/cifar10_outputs.rs`.
/// The folders of test processes that have ended are removed at the first
/// call in each test process (Open MPI leaves the empty base behind).
pub fn own_ompi_session_dir(cmd: &mut Command) -> &mut Command {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Once;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static SWEEP: Once = Once::new();
    if cmd.get_envs().any(|(k, _)| k == OMPI_TMPDIR_VAR) {
        return cmd;
    }
    let tmp = std::env::temp_dir();
    SWEEP.call_once(|| remove_ended_session_dirs(&tmp));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = tmp.join(format!("ringsgd-ompi-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make an Open MPI session folder");
    cmd.env(OMPI_TMPDIR_VAR, dir)
}

/// Removes `ringsgd-ompi-<pid>-<n>` folders in `tmp` whose test process has
/// ended (no `/proc/<pid>`); nothing without a `/proc` to tell.
fn remove_ended_session_dirs(tmp: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ringsgd-ompi-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Appends `mpirun -np <np> --oversubscribe`: more ranks than cores are
/// allowed.
pub fn add_mpirun(cmd: &mut Command, np: usize) -> &mut Command {
    cmd.args(["mpirun", "-np", &np.to_string(), "--oversubscribe"])
}

/// Sets, for the child only, what Open MPI needs here: runs as root allowed
/// (containers, CI), idle ranks yielding their core (oversubscribed), and
/// a session folder of its own ([`own_ompi_session_dir`]).
pub fn set_ompi_env(cmd: &mut Command) -> &mut Command {
    own_ompi_session_dir(cmd)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
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
