//! Train PiNet (or any spec) on CIFAR-10 with data-parallel SGD.
//!
//! ```text
//! cargo build --release --example cifar10
//! # one process, all cores
//! target/release/examples/cifar10 --data ../shared/cifar10/cifar-10-binary.tar.gz
//! # four Raspberry Pis, one rank per Pi, four cores each
//! mpirun -np 4 --hostfile hostfiles/pi4 --map-by node --bind-to none \
//!     target/release/examples/cifar10 \
//!     --data ~/cifar-10-binary.tar.gz --cores 4
//! ```
//!
//! Rank 0 prints one line per epoch (and a step line every 30 s, `--log-every`) and ends with
//! `test_accuracy=<fraction>` (`test_accuracy=none (--no-eval)` without
//! evaluation). Any error is printed with the rank that saw it
//! and ends every rank with a non-zero exit code. Flags and output paths are
//! checked before the data is loaded ([`preflight`]).

mod cli;
mod limits;
mod outputs;
mod plot;
mod preflight;
mod report;
mod run;

use clap::Parser;

fn main() {
    let args = cli::Args::parse();
    let code = match args.local_ranks {
        Some(n) => run_local(&args, n),
        None => run_world(&args),
    };
    std::process::exit(code);
}

/// `n` ranks as threads of this process.
fn run_local(args: &cli::Args, n: usize) -> i32 {
    init_logging(0);
    let args = match preflight::local(args) {
        Ok(a) => a,
        Err(e) => {
            eprint_line(&format!("error: {e}"));
            return 1;
        }
    };
    let args = &args;
    let data = match run::load_data(args, None) {
        Ok(d) => d,
        Err(e) => {
            eprint_line(&format!("error: {e}"));
            return 1;
        }
    };
    match ringsgd::comm::local::run_ranks(n, |comm| run::train(&comm, args, &data)) {
        Ok(_) => 0,
        Err(e) => {
            eprint_line(&format!("error: {e}"));
            1
        }
    }
}

/// The MPI world (a one-rank world when started without mpirun).
#[cfg(feature = "mpi")]
fn run_world(args: &cli::Args) -> i32 {
    use ringsgd::comm::Transport;
    let comm = match ringsgd::comm::mpi::init() {
        Ok(c) => c,
        Err(e) => {
            eprint_line(&format!("error: {e}"));
            return 1;
        }
    };
    let args = &match preflight::world(args, &comm) {
        Ok(a) => a,
        Err(e) => return fail(&comm, e),
    };
    init_logging(comm.rank());
    let rank = comm.rank();
    // A peer that stops answering ends the job from inside the
    // communicator (MPI cannot go on without it): say so the same way as
    // any other error.
    comm.on_peer_timeout(move |e| {
        // One write per line, so that ranks sharing a terminal do not
        // interleave mid-line.
        eprint_line(&format!("rank {rank}: error: {e}"));
    });
    let result = run::load_data(args, Some(&comm)).and_then(|data| run::train(&comm, args, &data));
    match result {
        Ok(_) => 0,
        Err(e) => fail(&comm, e),
    }
}

/// Prints this rank's error and ends the job: exit code 1.
#[cfg(feature = "mpi")]
fn fail(comm: &ringsgd::comm::mpi::MpiComm, e: ringsgd::Error) -> i32 {
    use ringsgd::comm::Transport;
    eprint_line(&format!("rank {}: error: {e}", comm.rank()));
    if comm.size() > 1 {
        // Other ranks may be blocked waiting for this one: end the
        // whole job rather than finalise MPI and hang.
        comm.abort(1);
    }
    1
}

#[cfg(not(feature = "mpi"))]
fn run_world(args: &cli::Args) -> i32 {
    eprintln!("note: built without the `mpi` feature; running as one in-process rank");
    run_local(args, 1)
}

/// Writes `line` and a newline to stderr in one write call, so that ranks
/// sharing a terminal do not interleave mid-line (`eprintln!` may write a
/// formatted line in pieces).
pub fn eprint_line(line: &str) {
    use std::io::Write;
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Rank 0 logs at `info`, others at `warn`, unless RUST_LOG says otherwise.
fn init_logging(rank: usize) {
    let default = if rank == 0 { "info" } else { "warn" };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_target(false)
        .try_init();
}
