//! Multi-rank test of [`MpiComm`]'s point-to-point and collective methods
//! (rsmpi style: any world size, checks itself, exits non-zero on failure).
//!
//! ```text
//! mpirun -np 4 target/debug/examples/mpi_comm
//! ```
//!
//! Checks: ring exchanges of f32 and bytes (including empty messages);
//! a receive of the wrong size is an `Error::Comm` and the communicator
//! stays usable; non-blocking exchanges keep tagged streams apart, report
//! a short message, and checked receives name a long one and keep their
//! order;
//! broadcast from every root; broadcast and native allreduce with mismatched
//! lengths fail on every rank; bad ranks are `InvalidArgument`; a second
//! `init` is refused.

use std::process::ExitCode;

use ringsgd::comm::mpi::MpiComm;
use ringsgd::comm::{exchange, Communicator, Transport};
use ringsgd::Error;

type Check = Result<(), String>;

/// A named check run on every rank.
type NamedCheck = (&'static str, fn(&MpiComm) -> Check);

fn ring_neighbours(comm: &MpiComm) -> (usize, usize) {
    let p = comm.size();
    ((comm.rank() + 1) % p, (comm.rank() + p - 1) % p)
}

fn ring_exchange(comm: &MpiComm) -> Check {
    let (right, left) = ring_neighbours(comm);
    for len in [0usize, 1, 3, 1000, 100_000] {
        let send: Vec<f32> = (0..len)
            .map(|i| (comm.rank() * 1_000_000 + i) as f32)
            .collect();
        let mut recv = vec![-1.0f32; len];
        comm.sendrecv(&send, right, &mut recv, left)
            .map_err(|e| format!("sendrecv of f32, len {len}: {e}"))?;
        let expected: Vec<f32> = (0..len).map(|i| (left * 1_000_000 + i) as f32).collect();
        if recv != expected {
            return Err(format!(
                "sendrecv of f32, len {len}: wrong data from rank {left}"
            ));
        }
        let send = vec![comm.rank() as u8; len];
        let mut recv = vec![255u8; len];
        comm.sendrecv(&send, right, &mut recv, left)
            .map_err(|e| format!("sendrecv of bytes, len {len}: {e}"))?;
        if recv.iter().any(|&b| b != left as u8) {
            return Err(format!(
                "sendrecv of bytes, len {len}: wrong data from rank {left}"
            ));
        }
    }
    // Blocking send/recv in an order that cannot deadlock: even ranks send
    // first. (With one rank, the message goes to itself via sendrecv above.)
    if comm.size() > 1 {
        let data = [comm.rank() as f32; 5];
        let mut got = [0.0f32; 5];
        if comm.rank() % 2 == 0 {
            comm.send(right, &data).map_err(|e| e.to_string())?;
            comm.recv(left, &mut got).map_err(|e| e.to_string())?;
        } else {
            comm.recv(left, &mut got).map_err(|e| e.to_string())?;
            comm.send(right, &data).map_err(|e| e.to_string())?;
        }
        if got != [left as f32; 5] {
            return Err("send/recv: wrong data".into());
        }
        let mut bytes = [0u8; 2];
        if comm.rank() % 2 == 0 {
            comm.send(right, b"ok").map_err(|e| e.to_string())?;
            comm.recv(left, &mut bytes).map_err(|e| e.to_string())?;
        } else {
            comm.recv(left, &mut bytes).map_err(|e| e.to_string())?;
            comm.send(right, b"ok").map_err(|e| e.to_string())?;
        }
        if &bytes != b"ok" {
            return Err("send/recv of bytes: wrong data".into());
        }
    }
    Ok(())
}

fn wrong_size_receive_is_an_error(comm: &MpiComm) -> Check {
    let (right, left) = ring_neighbours(comm);
    // Everyone sends 5 values but expects 4: the probe sees the size, drains
    // the message and reports it. Then a well-sized exchange must work.
    let mut four = [0.0f32; 4];
    match comm.sendrecv(&[1.0; 5], right, &mut four, left) {
        Err(Error::Comm { rank, msg })
            if rank == comm.rank() && msg.contains("of 4 f32 value(s): expected 16 byte(s)") => {}
        other => {
            return Err(format!(
                "oversized message: expected Error::Comm, got {other:?}"
            ))
        }
    }
    // Too short is caught as well (MPI itself would accept it silently).
    let mut six = [0.0f32; 6];
    match comm.sendrecv(&[1.0; 5], right, &mut six, left) {
        Err(Error::Comm { msg, .. }) if msg.contains("holds 20 byte(s)") => {}
        other => {
            return Err(format!(
                "undersized message: expected Error::Comm, got {other:?}"
            ))
        }
    }
    let mut one = [0.0f32; 1];
    comm.sendrecv(&[comm.rank() as f32], right, &mut one, left)
        .map_err(|e| format!("exchange after a size error: {e}"))?;
    if one[0] != left as f32 {
        return Err("exchange after a size error: wrong data".into());
    }
    Ok(())
}

fn exchange_messages(comm: &MpiComm) -> Check {
    let (right, left) = ring_neighbours(comm);
    for len in [0usize, 1, 1000, 100_000] {
        // Two streams (tags 5 and 9), sent in the opposite order to the one
        // the receives were posted in: tags keep them apart.
        let a: Vec<u8> = (0..len).map(|i| (comm.rank() + i) as u8).collect();
        let b: Vec<u8> = (0..len).map(|i| (comm.rank() * 7 + i) as u8).collect();
        let mut ra = vec![0u8; len];
        let mut rb = vec![0u8; len];
        let (got_a, got_b) = exchange::run(comm, |x| {
            let ta = x.recv(left, 5, &mut ra)?;
            let tb = x.recv(left, 9, &mut rb)?;
            x.send(right, 9, &b)?;
            x.send(right, 5, &a)?;
            let (mut da, mut db) = (None, None);
            while da.is_none() || db.is_none() {
                if da.is_none() {
                    da = x.test(ta)?;
                }
                if db.is_none() {
                    db = x.test(tb)?;
                }
                if da.is_none() || db.is_none() {
                    x.wait_any(true, &mut || false)?;
                }
            }
            Ok((
                da.unwrap_or_default().to_vec(),
                db.unwrap_or_default().to_vec(),
            ))
        })
        .map_err(|e| format!("exchange len {len}: {e}"))?;
        let ea: Vec<u8> = (0..len).map(|i| (left + i) as u8).collect();
        let eb: Vec<u8> = (0..len).map(|i| (left * 7 + i) as u8).collect();
        if got_a != ea || got_b != eb {
            return Err(format!("exchange len {len}: wrong data"));
        }
    }
    // A message shorter than its receive is an Error::Comm naming both
    // lengths, and the communicator stays usable.
    let short = [1u8; 3];
    let mut four = [0u8; 4];
    let res = exchange::run(comm, |x| {
        let t = x.recv(left, 1, &mut four)?;
        x.send(right, 1, &short)?;
        while x.test(t)?.is_none() {
            x.wait_any(true, &mut || false)?;
        }
        Ok(())
    });
    match res {
        Err(Error::Comm { msg, .. })
            if msg.contains("expected 4 byte(s)") && msg.contains("holds 3 byte(s)") => {}
        other => return Err(format!("short exchange message: got {other:?}")),
    }
    // Checked receives match in posting order (three messages on one tag,
    // the middle one too long for its receive): the long one is drained and
    // named, never a truncation that ends the job, and the third still
    // lands in the third receive.
    let msgs: [&[u8]; 3] = [&[1, 1], &[2, 2, 2, 2, 2], &[3, 3]];
    let (mut a, mut b, mut c) = ([0u8; 2], [0u8; 2], [0u8; 2]);
    let errors = exchange::run(comm, |x| {
        x.recv_checked(left, 2, &mut a)?;
        x.recv_checked(left, 2, &mut b)?;
        x.recv_checked(left, 2, &mut c)?;
        for m in msgs {
            x.send(right, 2, m)?;
        }
        let mut errors = Vec::new();
        while x.pending() > 0 {
            if let Err(e) = x.wait_any(true, &mut || false) {
                errors.push(e);
            }
        }
        Ok(errors)
    })
    .map_err(|e| format!("checked exchange: {e}"))?;
    match &errors[..] {
        [Error::Comm { msg, .. }]
            if msg.contains("expected 2 byte(s)") && msg.contains("holds 5 byte(s)") => {}
        other => return Err(format!("long checked exchange message: got {other:?}")),
    }
    if a != [1, 1] || c != [3, 3] {
        return Err(format!("checked receives out of order: {a:?} {c:?}"));
    }
    let mut one = [0.0f32; 1];
    comm.sendrecv(&[comm.rank() as f32], right, &mut one, left)
        .map_err(|e| format!("sendrecv after a short exchange message: {e}"))?;
    if one[0] != left as f32 {
        return Err("sendrecv after a short exchange message: wrong data".into());
    }
    Ok(())
}

fn broadcasts(comm: &MpiComm) -> Check {
    for root in 0..comm.size() {
        let mut buf: Vec<f32> = if comm.rank() == root {
            (0..1000).map(|i| (i + root) as f32).collect()
        } else {
            vec![0.0; 1000]
        };
        comm.broadcast(root, &mut buf).map_err(|e| e.to_string())?;
        if buf.iter().enumerate().any(|(i, &v)| v != (i + root) as f32) {
            return Err(format!("broadcast of f32 from root {root}: wrong data"));
        }
        let mut bytes = if comm.rank() == root {
            b"hello".to_vec()
        } else {
            vec![0; 5]
        };
        comm.broadcast(root, &mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes != b"hello" {
            return Err(format!("broadcast of bytes from root {root}: wrong data"));
        }
        comm.barrier().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn mismatches_fail_on_every_rank(comm: &MpiComm) -> Check {
    if comm.size() == 1 {
        return Ok(());
    }
    let last = comm.size() - 1;
    let mut buf = vec![0.0f32; if comm.rank() == last { 3 } else { 4 }];
    match comm.broadcast(0, &mut buf) {
        Err(Error::RankMismatch(m)) if m.contains(&format!("rank {last}: length 3")) => {}
        other => return Err(format!("broadcast length mismatch: got {other:?}")),
    }
    let mut buf = vec![0u8; 4];
    let root = if comm.rank() == 0 { 1 } else { 0 };
    match comm.broadcast(root, &mut buf) {
        Err(Error::RankMismatch(m)) if m.contains("root 1") => {}
        other => return Err(format!("broadcast root mismatch: got {other:?}")),
    }
    let mut buf = vec![1.0f32; if comm.rank() == 0 { 9 } else { 8 }];
    match comm.native_allreduce_sum_f32(&mut buf) {
        Some(Err(Error::RankMismatch(m))) if m.contains("rank 0: 9") => {}
        other => return Err(format!("native allreduce length mismatch: got {other:?}")),
    }
    // Still usable afterwards.
    let mut buf = vec![1.0f32; 8];
    comm.native_allreduce_sum_f32(&mut buf)
        .ok_or("MPI has a native allreduce")?
        .map_err(|e| e.to_string())?;
    if buf != vec![comm.size() as f32; 8] {
        return Err("native allreduce after a mismatch: wrong sum".into());
    }
    Ok(())
}

fn bad_arguments(comm: &MpiComm) -> Check {
    let p = comm.size();
    match comm.send(p, &[1.0]) {
        Err(Error::InvalidArgument(m)) if m.contains(&format!("rank {p}")) => {}
        other => return Err(format!("send to rank {p}: got {other:?}")),
    }
    let mut b = [0u8; 1];
    match comm.recv(p + 3, &mut b) {
        Err(Error::InvalidArgument(_)) => {}
        other => return Err(format!("recv from rank {}: got {other:?}", p + 3)),
    }
    match ringsgd::comm::mpi::init() {
        Err(Error::Comm { msg, .. }) if msg.contains("already initialised") => {}
        Err(e) => return Err(format!("second init: unexpected error {e}")),
        Ok(_) => return Err("second init succeeded".into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let comm = match ringsgd::comm::mpi::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpi_comm: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks: [NamedCheck; 6] = [
        ("ring_exchange", ring_exchange),
        (
            "wrong_size_receive_is_an_error",
            wrong_size_receive_is_an_error,
        ),
        ("exchange_messages", exchange_messages),
        ("broadcasts", broadcasts),
        (
            "mismatches_fail_on_every_rank",
            mismatches_fail_on_every_rank,
        ),
        ("bad_arguments", bad_arguments),
    ];
    for (name, check) in checks {
        if let Err(msg) = check(&comm) {
            eprintln!(
                "mpi_comm: rank {} of {}: {name} FAILED: {msg}",
                comm.rank(),
                comm.size()
            );
            comm.abort(1);
        }
    }
    if comm.rank() == 0 {
        println!(
            "mpi_comm: all {} checks passed on {} rank(s)",
            checks.len(),
            comm.size()
        );
    }
    ExitCode::SUCCESS
}
