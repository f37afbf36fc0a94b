//! Fault injection into running MPI jobs: find a rank's process and signal
//! it.

use std::path::Path;

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
