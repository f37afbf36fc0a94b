//! The CNN on every kernel family this CPU runs (`ringsgd::kernels::Isa`):
//! bitwise-identical gradients for 1, 2 and 3 threads on each, results
//! close to the portable kernels', the forward pass bit for bit the same
//! on AVX2 and AVX-512, and on aarch64 NEON bit for bit the portable
//! kernels (logits and gradients). Families the CPU lacks are skipped with
//! a printed reason.
//!
//! The kernel choice is process-wide, so this file holds a single test that
//! switches it; it runs in its own process (an integration test binary).

use ndarray::Array4;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringsgd::kernels::{select_isa, Isa};
use ringsgd::nn::{Model, PINET_SPEC};
use ringsgd::parallel::ComputePool;

/// Awkward sizes for every kernel: channel counts that are not multiples of
/// any panel height (20, 12, 9), output widths 16 (AVX-512's 16-lane weight
/// gradient) and 8 (its AVX2 fallback), a weight gradient on the GEMM path
/// (9 channels), linear layers of 576 -> 37 -> 5, and a batch of 33.
const SPEC: &str = "conv3x3(20,p1) relu conv3x3(12,p1) relu maxpool2 conv3x3(8,p1) relu \
conv3x3(9,p1) relu flatten linear(37) relu linear(5)";

struct Run {
    /// Gradients of one train step.
    grads: Vec<u32>,
    /// Its loss sum.
    loss: u64,
    /// Logits of a forward pass (before the step).
    logits: Vec<u32>,
}

fn run(spec: &str, chw: [usize; 3], batch: usize, cores: usize) -> Run {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let x = Array4::from_shape_fn((batch, chw[0], chw[1], chw[2]), |_| {
        rng.random_range(-1.0f32..1.0)
    });
    let classes = if spec == PINET_SPEC { 10 } else { 5 };
    let labels: Vec<u8> = (0..batch).map(|i| (i % classes) as u8).collect();
    let pool = ComputePool::new(cores).unwrap();
    let mut model = Model::from_spec(spec, chw, 5).unwrap();
    let logits = model
        .predict(&pool, x.view())
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let s = model.train_step(&pool, x.view(), &labels).unwrap();
    let grads = model.grads().iter().map(|g| g.to_bits()).collect();
    Run {
        grads,
        loss: s.loss_sum.to_bits(),
        logits,
    }
}

fn close(a: &[u32], b: &[u32], what: &str) {
    let (fa, fb): (Vec<f32>, Vec<f32>) = (
        a.iter().map(|&v| f32::from_bits(v)).collect(),
        b.iter().map(|&v| f32::from_bits(v)).collect(),
    );
    let scale = fb.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in fa.iter().zip(&fb).enumerate() {
        assert!(x.is_finite(), "{what}: element {i} is {x}");
        assert!(
            (x - y).abs() <= 2e-3 * scale + 1e-3 * y.abs(),
            "{what}: element {i}: {x} vs {y} (scale {scale})"
        );
    }
}

#[test]
fn every_kernel_family_is_deterministic_and_agrees() {
    let cases: [(&str, [usize; 3], usize); 2] =
        [(SPEC, [3, 16, 16], 33), (PINET_SPEC, [3, 32, 32], 5)];
    let mut reference: Vec<Option<Run>> = Vec::new();
    for &(spec, chw, batch) in &cases {
        select_isa(Isa::Portable).unwrap();
        reference.push(Some(run(spec, chw, batch, 1)));
    }
    let mut forward_bits: Vec<(Isa, Vec<Vec<u32>>)> = Vec::new();
    for isa in Isa::ALL {
        if let Err(e) = select_isa(isa) {
            eprintln!("skipped {isa}: {e}");
            continue;
        }
        let mut fwd = Vec::new();
        for (c, &(spec, chw, batch)) in cases.iter().enumerate() {
            let runs: Vec<Run> = (1..=3).map(|cores| run(spec, chw, batch, cores)).collect();
            for (cores, r) in runs.iter().enumerate().skip(1) {
                assert!(
                    r.grads == runs[0].grads
                        && r.logits == runs[0].logits
                        && r.loss == runs[0].loss,
                    "{isa}, case {c}: {} threads differ from 1",
                    cores + 1
                );
            }
            let reference = reference[c].as_ref().unwrap();
            if isa == Isa::Neon {
                assert!(
                    runs[0].grads == reference.grads
                        && runs[0].logits == reference.logits
                        && runs[0].loss == reference.loss,
                    "neon, case {c}: not bit for bit the portable kernels"
                );
            }
            close(
                &runs[0].logits,
                &reference.logits,
                &format!("{isa} logits, case {c}"),
            );
            close(
                &runs[0].grads,
                &reference.grads,
                &format!("{isa} grads, case {c}"),
            );
            fwd.push(runs[0].logits.clone());
        }
        forward_bits.push((isa, fwd));
    }
    let find = |i: Isa| forward_bits.iter().find(|(x, _)| *x == i).map(|(_, b)| b);
    match (find(Isa::Avx2Fma), find(Isa::Avx512)) {
        (Some(a), Some(b)) => assert!(a == b, "AVX2 and AVX-512 forward passes differ"),
        _ => eprintln!("skipped the AVX2 / AVX-512 bit comparison: this CPU lacks one"),
    }
    reference.clear();
    select_isa(Isa::best()).unwrap();
}
