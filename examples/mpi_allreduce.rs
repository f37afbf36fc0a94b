//! Multi-rank test of the allreduce algorithms under MPI (rsmpi style: works
//! at any world size, checks its own results, exits non-zero on failure).
//!
//! ```text
//! mpirun -np 3 target/debug/examples/mpi_allreduce
//! ```
//!
//! Checks, on every rank: ring, naive and MPI native against an exact
//! reference (integer-valued inputs) for awkward lengths, sum and mean, with
//! several segment sizes; all ranks end with identical bytes; ring and naive
//! are bitwise reproducible on non-integer inputs; a warm ring allreduce
//! performs no heap allocation; allreduce on a sub-communicator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use ringsgd::collectives::{ensure_agree, Algorithm, Allreducer};
use ringsgd::comm::mpi::MpiComm;
use ringsgd::comm::Transport;

/// Counts heap allocations, to check that a warm allreduce does none.
struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

// A test-program-only counting wrapper around the system allocator; the
// library itself stays free of unsafe code.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

type Check = Result<(), String>;

/// A named check run on every rank.
type NamedCheck = (&'static str, fn(&MpiComm) -> Check);

fn input(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + rank * 13) % 101) as f32 - 50.0)
        .collect()
}

fn reference_sum(ranks: &[usize], len: usize) -> Vec<f32> {
    let mut acc = vec![0.0f32; len];
    for &r in ranks {
        for (a, x) in acc.iter_mut().zip(input(r, len)) {
            *a += x;
        }
    }
    acc
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn against_reference(comm: &MpiComm) -> Check {
    let p = comm.size();
    let world: Vec<usize> = (0..p).collect();
    let mut lens = vec![
        0,
        1,
        p.saturating_sub(1),
        p,
        p + 1,
        2,
        3,
        7,
        13,
        101,
        1009,
        10_007,
        1_000_000,
    ];
    lens.sort_unstable();
    lens.dedup();
    for &len in &lens {
        let expected = reference_sum(&world, len);
        let expected_mean: Vec<f32> = expected.iter().map(|s| s / p as f32).collect();
        let mut outputs = Vec::new();
        for algorithm in Algorithm::ALL {
            let segments: &[usize] = if algorithm == Algorithm::Ring && len <= 10_007 {
                &[Allreducer::DEFAULT_SEGMENT_BYTES, 0, 4, 12, 4096]
            } else {
                &[Allreducer::DEFAULT_SEGMENT_BYTES]
            };
            for &seg in segments {
                let mut reducer = Allreducer::new(algorithm).with_segment_bytes(seg);
                let what = format!("{algorithm} len={len} seg={seg}");
                let mut buf = input(comm.rank(), len);
                reducer
                    .allreduce_sum(comm, &mut buf)
                    .map_err(|e| format!("{what} sum: {e}"))?;
                if !same_bits(&buf, &expected) {
                    return Err(format!("{what}: sum differs from the reference"));
                }
                ensure_agree(comm, &format!("{what} sum output"), &to_bytes(&buf))
                    .map_err(|e| e.to_string())?;
                let mut buf = input(comm.rank(), len);
                reducer
                    .allreduce_mean(comm, &mut buf)
                    .map_err(|e| format!("{what} mean: {e}"))?;
                if !same_bits(&buf, &expected_mean) {
                    return Err(format!("{what}: mean differs from the reference"));
                }
                outputs.push((what, buf));
            }
        }
        // Ring, naive and MPI native against each other.
        for (what, out) in &outputs[1..] {
            if !same_bits(out, &outputs[0].1) {
                return Err(format!("{what} differs from {}", outputs[0].0));
            }
        }
    }
    Ok(())
}

fn noisy(rank: usize, len: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_u64.wrapping_mul(rank as u64 + 1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e3
        })
        .collect()
}

fn reproducible(comm: &MpiComm) -> Check {
    for algorithm in [Algorithm::Ring, Algorithm::Naive] {
        let mut first: Option<Vec<f32>> = None;
        let mut reducer = Allreducer::new(algorithm).with_segment_bytes(4096);
        for run in 0..3 {
            let mut buf = noisy(comm.rank(), 100_003);
            reducer
                .allreduce_mean(comm, &mut buf)
                .map_err(|e| format!("{algorithm}: {e}"))?;
            ensure_agree(comm, &format!("{algorithm} noisy output"), &to_bytes(&buf))
                .map_err(|e| e.to_string())?;
            match &first {
                None => first = Some(buf),
                Some(f) if !same_bits(f, &buf) => {
                    return Err(format!("{algorithm}: run {run} gave other bits than run 0"))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// A warm ring call allocates no data buffers (they are the allreducer's,
/// reused): only the bookkeeping of its in-flight messages, a few vectors
/// whose size follows the number of segments, not the data.
fn warm_ring_allocates_no_data_buffers(comm: &MpiComm) -> Check {
    let mut per_call = Vec::new();
    for values in [200_000usize, 400_000] {
        // Same number of segments: the segment grows with the buffer.
        let mut r = Allreducer::new(Algorithm::Ring).with_segment_bytes(values / 50 * 4);
        let mut buf = input(comm.rank(), values);
        r.allreduce_mean(comm, &mut buf)
            .map_err(|e| e.to_string())?;
        let (n0, b0) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            ALLOCATED_BYTES.load(Ordering::Relaxed),
        );
        for _ in 0..3 {
            r.allreduce_mean(comm, &mut buf)
                .map_err(|e| e.to_string())?;
        }
        let n = (ALLOCATIONS.load(Ordering::Relaxed) - n0) / 3;
        let bytes = (ALLOCATED_BYTES.load(Ordering::Relaxed) - b0) / 3;
        per_call.push((values, n, bytes));
    }
    let (_, n_small, b_small) = per_call[0];
    let (big, n_big, b_big) = per_call[1];
    if n_small != n_big || b_small != b_big || b_big * 100 > big * 4 * 4 {
        return Err(format!(
            "a warm ring call should allocate only bookkeeping independent of the data size: \
             (values, allocations, bytes) per call = {per_call:?}"
        ));
    }
    Ok(())
}

fn sub_communicator(comm: &MpiComm) -> Check {
    let color = (comm.rank() % 2) as u32;
    let sub = comm
        .split(Some(color))
        .map_err(|e| e.to_string())?
        .ok_or("split returned no communicator for a defined color")?;
    let members: Vec<usize> = (0..comm.size())
        .filter(|r| r % 2 == comm.rank() % 2)
        .collect();
    if sub.size() != members.len() {
        return Err(format!(
            "sub-communicator has {} ranks, expected {}",
            sub.size(),
            members.len()
        ));
    }
    for algorithm in Algorithm::ALL {
        let mut buf = input(comm.rank(), 1001);
        Allreducer::new(algorithm)
            .allreduce_sum(&sub, &mut buf)
            .map_err(|e| format!("{algorithm} on the sub-communicator: {e}"))?;
        if !same_bits(&buf, &reference_sum(&members, 1001)) {
            return Err(format!("{algorithm} on the sub-communicator: wrong sum"));
        }
    }
    // Ranks outside every color get no communicator.
    if comm.split(None).map_err(|e| e.to_string())?.is_some() {
        return Err("split(None) returned a communicator".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let comm = match ringsgd::comm::mpi::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpi_allreduce: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks: [NamedCheck; 4] = [
        ("against_reference", against_reference),
        ("reproducible", reproducible),
        (
            "warm_ring_allocates_no_data_buffers",
            warm_ring_allocates_no_data_buffers,
        ),
        ("sub_communicator", sub_communicator),
    ];
    for (name, check) in checks {
        if let Err(msg) = check(&comm) {
            eprintln!(
                "mpi_allreduce: rank {} of {}: {name} FAILED: {msg}",
                comm.rank(),
                comm.size()
            );
            // The other ranks may be waiting in a collective this rank
            // left: end the whole job instead of letting it hang.
            comm.abort(1);
        }
    }
    if comm.rank() == 0 {
        println!(
            "mpi_allreduce: all {} checks passed on {} rank(s)",
            checks.len(),
            comm.size()
        );
    }
    ExitCode::SUCCESS
}
