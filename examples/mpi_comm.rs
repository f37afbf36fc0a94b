//! Multi-rank test of [`MpiComm`]'s point-to-point and collective methods
//! (rsmpi style: any world size, checks itself, exits non-zero on failure).
//!
//! ```text
//! mpirun -np 4 target/debug/examples/mpi_comm
//! ```
//!
//! Checks: ring exchanges of f32 and bytes (including empty messages);
//! a receive of the wrong size is an `Error::Comm` and the communicator
//! stays usable; segmented sendrecv delivers every segment in order and
//! propagates callback errors without desynchronising the peers;
//! broadcast from every root; broadcast and native allreduce with mismatched
//! lengths fail on every rank; bad ranks are `InvalidArgument`; a second
//! `init` is refused.

use std::process::ExitCode;

use ringsgd::comm::mpi::MpiComm;
use ringsgd::comm::Communicator;
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
        comm.sendrecv_f32(&send, right, &mut recv, left)
            .map_err(|e| format!("sendrecv_f32 len {len}: {e}"))?;
        let expected: Vec<f32> = (0..len).map(|i| (left * 1_000_000 + i) as f32).collect();
        if recv != expected {
            return Err(format!(
                "sendrecv_f32 len {len}: wrong data from rank {left}"
            ));
        }
        let send = vec![comm.rank() as u8; len];
        let mut recv = vec![255u8; len];
        comm.sendrecv_bytes(&send, right, &mut recv, left)
            .map_err(|e| format!("sendrecv_bytes len {len}: {e}"))?;
        if recv.iter().any(|&b| b != left as u8) {
            return Err(format!(
                "sendrecv_bytes len {len}: wrong data from rank {left}"
            ));
        }
    }
    // Blocking send/recv in an order that cannot deadlock: even ranks send
    // first. (With one rank, the message goes to itself via sendrecv above.)
    if comm.size() > 1 {
        let data = [comm.rank() as f32; 5];
        let mut got = [0.0f32; 5];
        if comm.rank() % 2 == 0 {
            comm.send_f32(right, &data).map_err(|e| e.to_string())?;
            comm.recv_f32(left, &mut got).map_err(|e| e.to_string())?;
        } else {
            comm.recv_f32(left, &mut got).map_err(|e| e.to_string())?;
            comm.send_f32(right, &data).map_err(|e| e.to_string())?;
        }
        if got != [left as f32; 5] {
            return Err("send/recv: wrong data".into());
        }
        let mut bytes = [0u8; 2];
        if comm.rank() % 2 == 0 {
            comm.send_bytes(right, b"ok").map_err(|e| e.to_string())?;
            comm.recv_bytes(left, &mut bytes)
                .map_err(|e| e.to_string())?;
        } else {
            comm.recv_bytes(left, &mut bytes)
                .map_err(|e| e.to_string())?;
            comm.send_bytes(right, b"ok").map_err(|e| e.to_string())?;
        }
        if &bytes != b"ok" {
            return Err("send_bytes/recv_bytes: wrong data".into());
        }
    }
    Ok(())
}

fn wrong_size_receive_is_an_error(comm: &MpiComm) -> Check {
    let (right, left) = ring_neighbours(comm);
    // Everyone sends 5 values but expects 4: the probe sees the size, drains
    // the message and reports it. Then a well-sized exchange must work.
    let mut four = [0.0f32; 4];
    match comm.sendrecv_f32(&[1.0; 5], right, &mut four, left) {
        Err(Error::Comm { rank, msg }) if rank == comm.rank() && msg.contains("expected 4") => {}
        other => {
            return Err(format!(
                "oversized message: expected Error::Comm, got {other:?}"
            ))
        }
    }
    // Too short is caught as well (MPI itself would accept it silently).
    let mut six = [0.0f32; 6];
    match comm.sendrecv_f32(&[1.0; 5], right, &mut six, left) {
        Err(Error::Comm { msg, .. }) if msg.contains("20 byte(s)") => {}
        other => {
            return Err(format!(
                "undersized message: expected Error::Comm, got {other:?}"
            ))
        }
    }
    let mut one = [0.0f32; 1];
    comm.sendrecv_f32(&[comm.rank() as f32], right, &mut one, left)
        .map_err(|e| format!("exchange after a size error: {e}"))?;
    if one[0] != left as f32 {
        return Err("exchange after a size error: wrong data".into());
    }
    Ok(())
}

fn segmented_sendrecv(comm: &MpiComm) -> Check {
    let (right, left) = ring_neighbours(comm);
    for (len, seg) in [
        (0usize, 4usize),
        (1, 4),
        (10, 3),
        (10, 0),
        (1000, 64),
        (100_000, 4096),
    ] {
        let send: Vec<f32> = (0..len)
            .map(|i| (comm.rank() * 1_000_000 + i) as f32)
            .collect();
        let mut got = Vec::new();
        let mut offsets = Vec::new();
        comm.sendrecv_f32_segmented(&send, right, len, left, seg, &mut |off, s| {
            offsets.push(off);
            got.extend_from_slice(s);
            Ok(())
        })
        .map_err(|e| format!("segmented len {len} seg {seg}: {e}"))?;
        let expected: Vec<f32> = (0..len).map(|i| (left * 1_000_000 + i) as f32).collect();
        if got != expected {
            return Err(format!("segmented len {len} seg {seg}: wrong data"));
        }
        let n_seg = if seg == 0 {
            1
        } else {
            len.div_ceil(seg).max(1)
        };
        if offsets.len() != n_seg {
            return Err(format!(
                "segmented len {len} seg {seg}: {} callbacks, expected {n_seg}",
                offsets.len()
            ));
        }
    }
    // A failing callback: the transfer still completes on both sides and the
    // first error comes back.
    let send = vec![1.0f32; 100];
    let mut calls = 0;
    let res = comm.sendrecv_f32_segmented(&send, right, 100, left, 10, &mut |off, _| {
        calls += 1;
        if off == 20 {
            Err(Error::invalid("callback failed at offset 20"))
        } else {
            Ok(())
        }
    });
    match res {
        Err(Error::InvalidArgument(m)) if m.contains("offset 20") && calls == 3 => {}
        other => {
            return Err(format!(
                "failing callback: got {other:?} after {calls} calls"
            ))
        }
    }
    let mut one = [0.0f32; 1];
    comm.sendrecv_f32(&[comm.rank() as f32], right, &mut one, left)
        .map_err(|e| format!("exchange after a callback error: {e}"))?;
    if one[0] != left as f32 {
        return Err("exchange after a callback error: wrong data".into());
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
        comm.broadcast_f32(root, &mut buf)
            .map_err(|e| e.to_string())?;
        if buf.iter().enumerate().any(|(i, &v)| v != (i + root) as f32) {
            return Err(format!("broadcast_f32 from root {root}: wrong data"));
        }
        let mut bytes = if comm.rank() == root {
            b"hello".to_vec()
        } else {
            vec![0; 5]
        };
        comm.broadcast_bytes(root, &mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes != b"hello" {
            return Err(format!("broadcast_bytes from root {root}: wrong data"));
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
    match comm.broadcast_f32(0, &mut buf) {
        Err(Error::RankMismatch(m)) if m.contains(&format!("rank {last}: length 3")) => {}
        other => return Err(format!("broadcast length mismatch: got {other:?}")),
    }
    let mut buf = vec![0u8; 4];
    let root = if comm.rank() == 0 { 1 } else { 0 };
    match comm.broadcast_bytes(root, &mut buf) {
        Err(Error::RankMismatch(m)) if m.contains("root 1") => {}
        other => return Err(format!("broadcast root mismatch: got {other:?}")),
    }
    let mut buf = vec![1.0f32; if comm.rank() == 0 { 9 } else { 8 }];
    match comm.native_allreduce_sum_f32(&mut buf) {
        Err(Error::RankMismatch(m)) if m.contains("rank 0: 9") => {}
        other => return Err(format!("native allreduce length mismatch: got {other:?}")),
    }
    // Still usable afterwards.
    let mut buf = vec![1.0f32; 8];
    comm.native_allreduce_sum_f32(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf != vec![comm.size() as f32; 8] {
        return Err("native allreduce after a mismatch: wrong sum".into());
    }
    Ok(())
}

fn bad_arguments(comm: &MpiComm) -> Check {
    let p = comm.size();
    match comm.send_f32(p, &[1.0]) {
        Err(Error::InvalidArgument(m)) if m.contains(&format!("rank {p}")) => {}
        other => return Err(format!("send to rank {p}: got {other:?}")),
    }
    let mut b = [0u8; 1];
    match comm.recv_bytes(p + 3, &mut b) {
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
        ("segmented_sendrecv", segmented_sendrecv),
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
