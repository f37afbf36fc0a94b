//! Gradient checks (central differences) for every layer and for a whole
//! small network, on random shapes, strides and paddings; determinism across
//! thread counts; overfitting a tiny dataset; error paths.
//!
//! Error bound: the model runs in f32, so the check uses `eps = 4e-3` on
//! inputs and parameters of order 1 and accepts
//! `|numeric - analytic| <= 1e-2 * max(|numeric|, |analytic|) + 1e-3`.
//! A point where the loss has a kink (ReLU or max-pool switching inside
//! `±eps`) is detected by comparing against `eps/4` and skipped; at most a
//! quarter of the points may be skipped.

use super::*;
use crate::parallel::ComputePool;
use ndarray::{Array4, ArrayView4};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_input(rng: &mut ChaCha8Rng, b: usize, chw: [usize; 3]) -> Array4<f32> {
    Array4::from_shape_fn((b, chw[0], chw[1], chw[2]), |_| {
        rng.random_range(-1.0f32..1.0)
    })
}

/// `sum(logits * r)` in f64.
fn probe(model: &mut Model, pool: &ComputePool, x: ArrayView4<'_, f32>, r: &[f32]) -> f64 {
    let z = model.predict(pool, x).unwrap();
    z.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Finite-difference step.
const EPS: f32 = 4e-3;

fn close(num: f64, ana: f64) -> bool {
    (num - ana).abs() <= 1e-2 * num.abs().max(ana.abs()) + 1e-3
}

/// The two step sizes agree (to half of `close`'s bound): no kink inside ±EPS.
fn kink_free(num: f64, fine: f64) -> bool {
    (num - fine).abs() <= 5e-3 * num.abs().max(fine.abs()) + 1e-3
}

/// Redraws the parameters so that activations and gradients are of order 1
/// (the checks' absolute tolerance is meant for that scale, which the
/// default initialisation, `1/sqrt(fan_in)`, is well below): weights
/// `U(+-sqrt(6/fan_in))`, biases `U(+-0.5)` so that bias paths are
/// exercised.
fn order_one_params(model: &mut Model, rng: &mut ChaCha8Rng) {
    for t in model.tensors().to_vec() {
        let bound = if t.name.ends_with(".bias") {
            0.5
        } else {
            (6.0 / t.shape[1..].iter().product::<usize>() as f32).sqrt()
        };
        for p in &mut model.params_mut()[t.offset..t.offset + t.len] {
            *p = rng.random_range(-bound..bound);
        }
    }
}

/// Checks d(sum(logits * r))/d(params) and d/d(input) of `spec`.
fn gradcheck(spec: &str, chw: [usize; 3], batch: usize, seed: u64) {
    let pool = ComputePool::new(2).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = Model::from_spec(spec, chw, seed).unwrap();
    order_one_params(&mut model, &mut rng);
    let mut x = rand_input(&mut rng, batch, chw);
    let r: Vec<f32> = (0..batch * model.num_classes())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    model.set_input_grad(true);
    model
        .backward_from_logit_grads(&pool, x.view(), &r)
        .unwrap();
    let grads = model.grads().to_vec();
    let dx = model.input_grad().unwrap().to_vec();
    assert_eq!(dx.len(), batch * chw.iter().product::<usize>());

    let (mut checked, mut skipped) = (0, 0);
    let mut verdict = |num: f64, num_fine: f64, ana: f64, what: String| {
        if !kink_free(num, num_fine) {
            skipped += 1; // a kink inside ±eps
            return;
        }
        checked += 1;
        assert!(
            close(num, ana),
            "{spec}: {what}: numeric {num} vs analytic {ana}"
        );
    };
    let central = |f: &mut dyn FnMut(f32) -> f64, eps: f32| (f(eps) - f(-eps)) / (2.0 * eps as f64);
    // Parameters: all of them when few, else a random sample.
    let n = model.num_params();
    let idx: Vec<usize> = if n <= 60 {
        (0..n).collect()
    } else {
        (0..60).map(|_| rng.random_range(0..n)).collect()
    };
    for &i in &idx {
        let p0 = model.params()[i];
        let mut f = |d: f32| {
            model.params_mut()[i] = p0 + d;
            let v = probe(&mut model, &pool, x.view(), &r);
            model.params_mut()[i] = p0;
            v
        };
        let num = central(&mut f, EPS);
        let fine = central(&mut f, EPS / 4.0);
        let name = model
            .tensors()
            .iter()
            .find(|t| (t.offset..t.offset + t.len).contains(&i))
            .unwrap()
            .name
            .clone();
        verdict(num, fine, grads[i] as f64, format!("param {i} ({name})"));
    }
    let nx = x.len();
    for _ in 0..30 {
        let i = rng.random_range(0..nx);
        let x0 = x.as_slice().unwrap()[i];
        let mut f = |d: f32| {
            x.as_slice_mut().unwrap()[i] = x0 + d;
            let v = probe(&mut model, &pool, x.view(), &r);
            x.as_slice_mut().unwrap()[i] = x0;
            v
        };
        let num = central(&mut f, EPS);
        let fine = central(&mut f, EPS / 4.0);
        verdict(num, fine, dx[i] as f64, format!("input {i}"));
    }
    eprintln!("{spec}: {checked} checked, {skipped} skipped");
    assert!(
        skipped * 4 <= checked + skipped,
        "{spec}: {skipped} kinks of {}",
        checked + skipped
    );
}

#[test]
fn gradcheck_conv_shapes_strides_paddings() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for case in 0..8u64 {
        let cin = rng.random_range(1..4usize);
        let cout = rng.random_range(1..5usize);
        let kh = rng.random_range(1..6usize);
        let kw = if case % 2 == 0 {
            kh
        } else {
            rng.random_range(1..6usize)
        };
        let s = rng.random_range(1..4usize);
        let p = rng.random_range(0..3usize);
        let h = rng.random_range(kh.saturating_sub(2 * p).max(1)..9);
        let w = rng.random_range(kw.saturating_sub(2 * p).max(1)..9);
        let spec = format!("conv{kh}x{kw}({cout},s{s},p{p}) flatten");
        gradcheck(&spec, [cin, h, w], 3, case);
    }
    gradcheck("conv1x1(3) flatten", [2, 3, 4], 2, 11);
    gradcheck("conv3x3(4,p1) flatten", [3, 6, 6], 2, 12);
    gradcheck("conv5x5(2,p2) flatten", [2, 7, 5], 2, 13);
}

#[test]
fn gradcheck_relu_fused_and_standalone() {
    gradcheck("conv3x3(3,p1) relu flatten", [2, 5, 5], 3, 21);
    gradcheck("relu flatten", [2, 3, 3], 2, 22);
    gradcheck("flatten linear(6) relu linear(3)", [1, 3, 4], 3, 23);
    gradcheck("maxpool2 relu flatten linear(2)", [2, 4, 4], 2, 24);
}

#[test]
fn gradcheck_maxpool() {
    gradcheck("maxpool2 flatten", [2, 6, 4], 3, 31);
    gradcheck("maxpool3(s2) flatten", [2, 7, 7], 2, 32);
    gradcheck("maxpool2(s3) flatten", [1, 8, 5], 2, 33);
}

#[test]
fn gradcheck_linear() {
    gradcheck("flatten linear(5)", [2, 2, 3], 4, 41);
    gradcheck("flatten linear(40) linear(3)", [3, 4, 4], 35, 42);
}

#[test]
fn gradcheck_small_network() {
    gradcheck(
        "conv3x3(4,p1) relu maxpool2 conv3x3(5,s2,p1) relu flatten linear(7) relu linear(3)",
        [2, 8, 8],
        18, // 18 images: backward chunks of 2 images (9 chunks)
        51,
    );
}

/// The whole network against the mean cross-entropy (not a linear probe).
#[test]
fn gradcheck_cross_entropy_end_to_end() {
    let pool = ComputePool::new(1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let spec = "conv3x3(3,p1) relu maxpool2 flatten linear(4)";
    let mut model = Model::from_spec(spec, [1, 4, 4], 5).unwrap();
    order_one_params(&mut model, &mut rng);
    let x = rand_input(&mut rng, 5, [1, 4, 4]);
    let labels = [0u8, 3, 1, 2, 3];
    model.train_step(&pool, x.view(), &labels).unwrap();
    let grads = model.grads().to_vec();
    for (i, &ana) in grads.iter().enumerate() {
        let p0 = model.params()[i];
        let mut f = |d: f32| {
            model.params_mut()[i] = p0 + d;
            let s = model.evaluate(&pool, x.view(), &labels).unwrap();
            model.params_mut()[i] = p0;
            s.mean_loss()
        };
        let num = (f(1e-2) - f(-1e-2)) / 2e-2;
        let fine = (f(2.5e-3) - f(-2.5e-3)) / 5e-3;
        if close(num, fine) {
            assert!(close(num, ana as f64), "param {i}: {num} vs {ana}");
        }
    }
}

#[test]
fn gradients_bitwise_identical_for_1_2_3_threads() {
    let spec = "conv3x3(4,p1) relu conv3x3(4,p1) relu maxpool2 conv3x3(6,p1) relu maxpool2 flatten linear(16) relu linear(5)";
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for batch in [1usize, 7, 33] {
        let x = rand_input(&mut rng, batch, [3, 8, 8]);
        let labels: Vec<u8> = (0..batch).map(|i| (i % 5) as u8).collect();
        let mut results = Vec::new();
        for cores in 1..=3 {
            let pool = ComputePool::new(cores).unwrap();
            let mut model = Model::from_spec(spec, [3, 8, 8], 3).unwrap();
            let s = model.train_step(&pool, x.view(), &labels).unwrap();
            let bits: Vec<u32> = model.grads().iter().map(|g| g.to_bits()).collect();
            results.push((s.loss_sum.to_bits(), bits));
        }
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "batch {batch}: results differ"
        );
    }
}

#[test]
fn grads_do_not_depend_on_the_previous_batch_size() {
    // Workspaces are reused across batch sizes; a step must not see stale data.
    let pool = ComputePool::new(2).unwrap();
    let spec = "conv3x3(2,p1) relu maxpool2 flatten linear(3)";
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let big = rand_input(&mut rng, 20, [1, 6, 6]);
    let small = rand_input(&mut rng, 3, [1, 6, 6]);
    let mut warm = Model::from_spec(spec, [1, 6, 6], 1).unwrap();
    warm.train_step(&pool, big.view(), &[1; 20]).unwrap();
    warm.train_step(&pool, small.view(), &[0, 1, 2]).unwrap();
    let mut fresh = Model::from_spec(spec, [1, 6, 6], 1).unwrap();
    fresh.train_step(&pool, small.view(), &[0, 1, 2]).unwrap();
    assert_eq!(warm.grads(), fresh.grads());
}

#[test]
fn non_contiguous_input_matches_contiguous() {
    let pool = ComputePool::new(1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let x = rand_input(&mut rng, 4, [2, 5, 5]);
    // Same logical array, different memory order.
    let mut xt = Array4::<f32>::zeros((5, 5, 2, 4));
    xt.assign(&x.view().permuted_axes([3, 2, 1, 0]));
    let xt_view = xt.view().permuted_axes([3, 2, 1, 0]);
    assert!(xt_view.as_slice().is_none());
    let mut m = Model::from_spec("conv3x3(2) flatten linear(3)", [2, 5, 5], 2).unwrap();
    let a = m.predict(&pool, x.view()).unwrap().to_owned();
    let b = m.predict(&pool, xt_view).unwrap().to_owned();
    assert_eq!(a, b);
}
