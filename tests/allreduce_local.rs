//! Allreduce over the in-process communicator: every algorithm, world sizes
//! 1..=8, awkward lengths, exact comparison against a reference sum, and
//! bitwise-identical results on all ranks.

use ringsgd::collectives::{Algorithm, Allreducer};
use ringsgd::comm::local::run_ranks;
use ringsgd::comm::Transport;
use ringsgd::Error;

/// Integer-valued input of rank `r`: sums of up to 8 such values are exact
/// in f32, so every algorithm must match the reference bit for bit.
fn input(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + rank * 13) % 101) as f32 - 50.0)
        .collect()
}

fn reference_sum(p: usize, len: usize) -> Vec<f32> {
    let mut acc = vec![0.0f32; len];
    for r in 0..p {
        for (a, x) in acc.iter_mut().zip(input(r, len)) {
            *a += x;
        }
    }
    acc
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs one allreduce on `p` ranks; returns every rank's output.
fn run(
    p: usize,
    len: usize,
    algorithm: Algorithm,
    segment_bytes: usize,
    mean: bool,
) -> Vec<Vec<f32>> {
    run_ranks(p, |comm| {
        let mut reducer = Allreducer::new(algorithm).with_segment_bytes(segment_bytes);
        let mut buf = input(comm.rank(), len);
        if mean {
            reducer.allreduce_mean(&comm, &mut buf)?;
        } else {
            reducer.allreduce_sum(&comm, &mut buf)?;
        }
        Ok(buf)
    })
    .unwrap_or_else(|e| panic!("p={p} len={len} {algorithm} seg={segment_bytes}: {e}"))
}

fn check(p: usize, len: usize, algorithm: Algorithm, segment_bytes: usize) {
    let expected = reference_sum(p, len);
    let sums = run(p, len, algorithm, segment_bytes, false);
    for (r, out) in sums.iter().enumerate() {
        assert!(
            bits(out) == bits(&expected),
            "sum differs from the reference: p={p} len={len} {algorithm} seg={segment_bytes} rank {r}"
        );
    }
    let expected_mean: Vec<f32> = expected.iter().map(|s| s / p as f32).collect();
    let means = run(p, len, algorithm, segment_bytes, true);
    for (r, out) in means.iter().enumerate() {
        assert!(
            bits(out) == bits(&expected_mean),
            "mean differs from the reference: p={p} len={len} {algorithm} seg={segment_bytes} rank {r}"
        );
    }
}

#[test]
fn every_algorithm_matches_the_reference_for_awkward_lengths() {
    for p in 1..=8usize {
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
        ];
        lens.sort_unstable();
        lens.dedup();
        for &len in &lens {
            for algorithm in Algorithm::ALL {
                check(p, len, algorithm, Allreducer::DEFAULT_SEGMENT_BYTES);
            }
        }
    }
}

#[test]
fn ring_segmentation_edge_cases() {
    // One value per segment, segments that do not divide the chunk, one
    // segment per chunk (0), and segments larger than the chunk.
    for p in [2, 3, 5, 8] {
        for len in [0, 1, p - 1, p + 1, 13, 101, 1009] {
            for seg in [0, 1, 4, 12, 36, 4096, 1 << 20] {
                check(p, len, Algorithm::Ring, seg);
            }
        }
    }
}

#[test]
fn one_million_values_on_every_world_size() {
    let len = 1_000_000;
    for p in 1..=8 {
        let expected = bits(&reference_sum(p, len));
        for algorithm in Algorithm::ALL {
            for (r, out) in run(p, len, algorithm, Allreducer::DEFAULT_SEGMENT_BYTES, false)
                .iter()
                .enumerate()
            {
                assert!(bits(out) == expected, "p={p} {algorithm} rank {r}");
            }
        }
    }
}

/// Pseudo-random non-integer inputs (a fixed LCG): rounding now depends on
/// the summation order, which must still be the same on every run and rank.
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

#[test]
fn results_are_bitwise_reproducible_and_identical_on_all_ranks() {
    for p in [2, 3, 4, 7] {
        for algorithm in Algorithm::ALL {
            let once = || {
                run_ranks(p, |comm| {
                    let mut buf = noisy(comm.rank(), 5003);
                    Allreducer::new(algorithm)
                        .with_segment_bytes(1024)
                        .allreduce_mean(&comm, &mut buf)?;
                    Ok(bits(&buf))
                })
                .unwrap()
            };
            let first = once();
            for r in 1..p {
                assert!(
                    first[r] == first[0],
                    "p={p} {algorithm}: rank {r} differs from rank 0"
                );
            }
            for _ in 0..3 {
                assert!(
                    once() == first,
                    "p={p} {algorithm}: a rerun gave other bits"
                );
            }
        }
    }
}

#[test]
fn reusing_an_allreducer_across_lengths() {
    let out = run_ranks(3, |comm| {
        let mut reducer = Allreducer::new(Algorithm::Ring).with_segment_bytes(64);
        let mut all = Vec::new();
        for len in [1000, 10, 0, 1, 1000, 77] {
            let mut buf = input(comm.rank(), len);
            reducer.allreduce_sum(&comm, &mut buf)?;
            all.push(buf);
        }
        Ok(all)
    })
    .unwrap();
    for per_rank in &out {
        for (buf, len) in per_rank.iter().zip([1000, 10, 0, 1, 1000, 77]) {
            assert!(bits(buf) == bits(&reference_sum(3, len)));
        }
    }
}

fn mismatch_on_every_rank(
    p: usize,
    f: impl Fn(usize) -> (usize, Algorithm, usize, bool) + Sync,
) -> Vec<String> {
    run_ranks(p, |comm| {
        let (len, algorithm, seg, mean) = f(comm.rank());
        let mut buf = vec![1.0f32; len];
        let mut reducer = Allreducer::new(algorithm).with_segment_bytes(seg);
        let res = if mean {
            reducer.allreduce_mean(&comm, &mut buf)
        } else {
            reducer.allreduce_sum(&comm, &mut buf)
        };
        match res {
            Err(Error::RankMismatch(msg)) => {
                // Nothing was reduced.
                assert!(buf.iter().all(|&x| x == 1.0));
                Ok(msg)
            }
            other => panic!("rank {}: expected RankMismatch, got {other:?}", comm.rank()),
        }
    })
    .unwrap()
}

#[test]
fn mismatched_lengths_are_an_error_on_every_rank() {
    for algorithm in Algorithm::ALL {
        let msgs = mismatch_on_every_rank(4, |r| {
            (if r == 2 { 99 } else { 100 }, algorithm, 1024, false)
        });
        for m in &msgs {
            assert!(m.contains("different buffer lengths"), "{m}");
            assert!(m.contains("rank 2: 99") && m.contains("rank 3: 100"), "{m}");
        }
    }
    // Empty on one rank only.
    let msgs = mismatch_on_every_rank(3, |r| {
        (if r == 0 { 0 } else { 5 }, Algorithm::Ring, 1024, false)
    });
    assert!(msgs.iter().all(|m| m.contains("rank 0: 0")));
}

#[test]
fn mismatched_algorithm_operation_or_segment_is_an_error_on_every_rank() {
    let msgs = mismatch_on_every_rank(3, |r| {
        (
            10,
            if r == 1 {
                Algorithm::Naive
            } else {
                Algorithm::Ring
            },
            1024,
            false,
        )
    });
    assert!(msgs.iter().all(|m| m.contains("rank 1: naive")), "{msgs:?}");
    let msgs = mismatch_on_every_rank(2, |r| (10, Algorithm::Ring, 1024, r == 0));
    assert!(
        msgs.iter()
            .all(|m| m.contains("rank 0: mean") && m.contains("rank 1: sum")),
        "{msgs:?}"
    );
    let msgs = mismatch_on_every_rank(2, |r| (10, Algorithm::Ring, 1024 * (r + 1), false));
    assert!(msgs.iter().all(|m| m.contains("segment sizes")), "{msgs:?}");
}

#[test]
fn communicator_trait_object_works() {
    let out = run_ranks(2, |comm| {
        let dyn_comm: &dyn Transport = &comm;
        let mut buf = vec![1.0f32; 3];
        Allreducer::new(Algorithm::Ring).allreduce_sum(dyn_comm, &mut buf)?;
        Ok(buf)
    })
    .unwrap();
    assert_eq!(out, vec![vec![2.0; 3]; 2]);
}
