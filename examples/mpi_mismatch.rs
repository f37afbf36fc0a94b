//! Multi-rank test of disagreement handling under MPI: ranks that call an
//! allreduce with different lengths (or algorithms) must all get
//! `Error::RankMismatch`, not a hang, a crash or a wrong answer; and
//! `ensure_agree` must name the odd ranks out, also when their byte strings
//! differ in length. Exits non-zero on failure; needs at least 2 ranks to
//! test anything (with 1 rank it checks that agreement trivially holds).
//!
//! ```text
//! mpirun -np 3 target/debug/examples/mpi_mismatch
//! ```

use std::process::ExitCode;

use ringsgd::collectives::{ensure_agree, Algorithm, Allreducer};
use ringsgd::comm::mpi::MpiComm;
use ringsgd::comm::Transport;
use ringsgd::Error;

type Check = Result<(), String>;

/// A named check run on every rank.
type NamedCheck = (&'static str, fn(&MpiComm) -> Check);

fn expect_mismatch(what: &str, res: ringsgd::Result<()>, needle: &str) -> Check {
    match res {
        Err(Error::RankMismatch(m)) if m.contains(needle) => Ok(()),
        other => Err(format!(
            "{what}: expected RankMismatch mentioning {needle:?}, got {other:?}"
        )),
    }
}

fn mismatched_lengths(comm: &MpiComm) -> Check {
    let last = comm.size() - 1;
    for algorithm in Algorithm::ALL {
        for len in [0usize, 1, 1000, 1 << 20] {
            // The last rank passes one value more (or, for 1 << 20, one less).
            let odd = if len == 1 << 20 { len - 1 } else { len + 1 };
            let mine = if comm.rank() == last { odd } else { len };
            let mut buf = vec![1.0f32; mine];
            let mut reducer = Allreducer::new(algorithm);
            expect_mismatch(
                &format!("{algorithm} with lengths {len}/{odd}"),
                reducer.allreduce_sum(comm, &mut buf),
                &format!("rank {last}: {odd}"),
            )?;
            if buf.iter().any(|&x| x != 1.0) {
                return Err(format!(
                    "{algorithm}: the buffer was modified despite the error"
                ));
            }
            // The communicator is still in step: a matching call works.
            let mut buf = vec![1.0f32; len];
            reducer
                .allreduce_mean(comm, &mut buf)
                .map_err(|e| format!("{algorithm}: allreduce after a mismatch: {e}"))?;
            if buf.iter().any(|&x| x != 1.0) {
                return Err(format!("{algorithm}: wrong mean after a mismatch"));
            }
        }
    }
    Ok(())
}

fn mismatched_algorithms(comm: &MpiComm) -> Check {
    let algorithm = if comm.rank() == 0 {
        Algorithm::Naive
    } else {
        Algorithm::Ring
    };
    let mut buf = vec![1.0f32; 100];
    expect_mismatch(
        "ring vs naive",
        Allreducer::new(algorithm).allreduce_sum(comm, &mut buf),
        "rank 0: naive",
    )
}

fn ensure_agree_names_the_odd_ones(comm: &MpiComm) -> Check {
    ensure_agree(comm, "config", b"lr=0.1 batch=128").map_err(|e| e.to_string())?;
    let last = comm.size() - 1;
    // Different lengths on the last rank.
    let value: &[u8] = if comm.rank() == last {
        b"lr=0.1 batch=1280"
    } else {
        b"lr=0.1 batch=128"
    };
    expect_mismatch(
        "ensure_agree, longer value on the last rank",
        ensure_agree(comm, "config", value),
        &format!("rank {last} holds value #2 (17 bytes"),
    )?;
    // Same length, different content on rank 0.
    let value: &[u8] = if comm.rank() == 0 { b"AAAA" } else { b"BBBB" };
    expect_mismatch(
        "ensure_agree, other content on rank 0",
        ensure_agree(comm, "model hash", value),
        "model hash differs across ranks: rank 0 holds value #1",
    )
}

fn main() -> ExitCode {
    let comm = match ringsgd::comm::mpi::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpi_mismatch: {e}");
            return ExitCode::FAILURE;
        }
    };
    if comm.size() == 1 {
        // Nothing can disagree; agreement must hold trivially.
        if let Err(e) = ensure_agree(&comm, "config", b"x") {
            eprintln!("mpi_mismatch: ensure_agree failed on one rank: {e}");
            return ExitCode::FAILURE;
        }
        println!("mpi_mismatch: 1 rank, nothing can disagree (run with -np 2 or more)");
        return ExitCode::SUCCESS;
    }
    let checks: [NamedCheck; 3] = [
        ("mismatched_lengths", mismatched_lengths),
        ("mismatched_algorithms", mismatched_algorithms),
        (
            "ensure_agree_names_the_odd_ones",
            ensure_agree_names_the_odd_ones,
        ),
    ];
    for (name, check) in checks {
        if let Err(msg) = check(&comm) {
            eprintln!(
                "mpi_mismatch: rank {} of {}: {name} FAILED: {msg}",
                comm.rank(),
                comm.size()
            );
            comm.abort(1);
        }
    }
    if comm.rank() == 0 {
        println!(
            "mpi_mismatch: all {} checks passed on {} rank(s)",
            checks.len(),
            comm.size()
        );
    }
    ExitCode::SUCCESS
}
