//! Public-API tests of the CNN: PiNet's shape and parameter count, errors on
//! bad input, overfitting a tiny synthetic dataset, and optimiser wiring.

use ndarray::Array4;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringsgd::nn::{ActivationShape, LayerSpec, Model, ModelBuilder, ModelSpec, PINET_SPEC};
use ringsgd::optim::{LrSchedule, Sgd, SgdConfig};
use ringsgd::parallel::ComputePool;

#[test]
fn pinet_has_the_documented_parameters() {
    let m = Model::pinet(0).unwrap();
    assert_eq!(m.num_params(), 1_116_970);
    assert_eq!(m.spec(), PINET_SPEC);
    assert_eq!(m.input_chw(), [3, 32, 32]);
    assert_eq!(m.num_classes(), 10);
    // Forward FLOPs: 2 x (conv MACs + linear MACs) = 51,057,664.
    assert_eq!(m.forward_flops(), 51_057_664);
    let names: Vec<&str> = m.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "conv3.weight",
            "conv3.bias",
            "conv4.weight",
            "conv4.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias"
        ]
    );
    let t = &m.tensors()[2];
    assert_eq!(
        (t.shape.as_slice(), t.offset, t.len),
        (&[32, 32, 3, 3][..], 896, 9216)
    );
    let last = m.tensors().last().unwrap();
    assert_eq!(last.offset + last.len, m.num_params());
    // Same seed, same bits; different seed, different weights.
    assert_eq!(Model::pinet(0).unwrap().params(), m.params());
    assert_ne!(Model::pinet(1).unwrap().params(), m.params());
}

#[test]
fn builder_and_spec_agree() {
    let a = ModelBuilder::new([3, 16, 16])
        .conv(8, 5, 2, 2)
        .relu()
        .layer(LayerSpec::maxpool2d(3, 2))
        .flatten()
        .linear(4)
        .build(1)
        .unwrap();
    let b = Model::from_spec(a.spec(), [3, 16, 16], 1).unwrap();
    assert_eq!(
        a.spec(),
        "conv5x5(8,s2,p2) relu maxpool3(s2) flatten linear(4)"
    );
    assert_eq!(a.params(), b.params());
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let pool = ComputePool::new(1).unwrap();
    for (spec, what) in [
        ("conv7x7(4) flatten", "larger than"),
        ("linear(3)", "flatten"),
        ("flatten maxpool2", "flat"),
        ("conv3x3(4)", "flat logits"),
        ("conv3x3(0) flatten", ">= 1"),
    ] {
        let e = Model::from_spec(spec, [1, 4, 4], 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{spec}: {e}");
    }
    let mut m = Model::from_spec("conv3x3(2,p1) flatten linear(3)", [1, 4, 4], 0).unwrap();
    let e = m
        .train_step(&pool, Array4::zeros((2, 1, 5, 4)).view(), &[0, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("input") && e.contains("[2, 1, 5, 4]"), "{e}");
    let e = m
        .train_step(&pool, Array4::zeros((0, 1, 4, 4)).view(), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty"), "{e}");
    let e = m
        .train_step(&pool, Array4::zeros((2, 1, 4, 4)).view(), &[0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels"), "{e}");
    let e = m
        .train_step(&pool, Array4::zeros((3, 1, 4, 4)).view(), &[0, 1, 3])
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels[2]"), "{e}");
}

/// Four classes of 6x6 single-channel images: a bright quadrant each, plus
/// noise. A tiny CNN must reach 100% training accuracy.
#[test]
fn tiny_network_overfits_tiny_dataset() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 24;
    let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
    let x = Array4::from_shape_fn((n, 1, 6, 6), |(i, _, y, x)| {
        let q = (y / 3) * 2 + x / 3;
        let base = if q == labels[i] as usize { 1.0 } else { 0.0 };
        base + rng.random_range(-0.3f32..0.3)
    });
    let pool = ComputePool::new(2).unwrap();
    let mut model = Model::from_spec(
        "conv3x3(4,p1) relu maxpool2 flatten linear(4)",
        [1, 6, 6],
        11,
    )
    .unwrap();
    let cfg = SgdConfig {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: true,
    };
    let mut sgd = Sgd::new(cfg, model.num_params()).unwrap();
    let sched = LrSchedule::Cosine {
        warmup_steps: 5,
        total_steps: 150,
    };
    let mut last = None;
    for step in 0..150 {
        let s = model.train_step(&pool, x.view(), &labels).unwrap();
        let (p, g) = model.params_and_grads_mut();
        sgd.step(p, g, sched.lr(0.1, step)).unwrap();
        last = Some(s);
    }
    let s = model.evaluate(&pool, x.view(), &labels).unwrap();
    assert_eq!(
        s.accuracy(),
        1.0,
        "train accuracy {} (last step {:?})",
        s.accuracy(),
        last
    );
    assert!(s.mean_loss() < 0.1, "loss {}", s.mean_loss());
}

#[test]
fn partial_batches_and_shards_work() {
    let pool = ComputePool::new(2).unwrap();
    let mut m = Model::from_spec("conv3x3(2,p1) relu flatten linear(3)", [1, 4, 4], 0).unwrap();
    for b in [5usize, 1, 17, 2] {
        let x = Array4::from_elem((b, 1, 4, 4), 0.5f32);
        let labels = vec![1u8; b];
        let s = m.train_step(&pool, x.view(), &labels).unwrap();
        assert_eq!(s.count, b);
        assert_eq!(m.predict(&pool, x.view()).unwrap().dim(), (b, 3));
    }
}

/// The initialisation is PyTorch's default for `nn.Conv2d` / `nn.Linear`:
/// weight and bias of each layer uniform in `+-1/sqrt(fan_in)`. He uniform
/// (`sqrt(6)` times wider, zero biases) kills PiNet in the first steps of
/// the default recipe, so both the width and the biases are checked.
#[test]
fn pinet_init_is_pytorch_default_per_layer() {
    let m = Model::pinet(0).unwrap();
    let fan_ins = [27usize, 288, 288, 576, 4096, 256];
    for (pair, fan_in) in m.tensors().chunks_exact(2).zip(fan_ins) {
        let bound = (1.0 / (fan_in as f64).sqrt()) as f32;
        assert_eq!(Model::init_bound(&pair[0].shape), bound, "{}", pair[0].name);
        for t in pair {
            let v = &m.params()[t.offset..t.offset + t.len];
            let max = v.iter().fold(0f32, |a, &x| a.max(x.abs()));
            assert!(max < bound, "{}: |p| up to {max}, bound {bound}", t.name);
            // Spread over the interval: the largest of n uniform draws is
            // within bound/n of it, with n >= 10 here.
            assert!(max > 0.7 * bound, "{}: |p| only up to {max}", t.name);
            if t.len >= 1000 {
                let rms =
                    (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / t.len as f64).sqrt();
                let want = bound as f64 / 3f64.sqrt();
                assert!(
                    (rms / want - 1.0).abs() < 0.05,
                    "{}: rms {rms}, uniform gives {want}",
                    t.name
                );
            }
        }
    }
    // Seeded: the same seed gives the same weights, another seed others.
    assert_eq!(Model::pinet(0).unwrap().params(), m.params());
    assert_ne!(Model::pinet(1).unwrap().params(), m.params());
}

/// The plan is the model's own shape walk: the same parameters, tensors
/// and FLOPs, one entry per spec layer with its output shape and the op it
/// became, and the buffer sizes a batch needs.
#[test]
fn plan_walks_the_shapes_the_model_is_built_with() {
    let spec = "conv3x3(4,p1) relu maxpool2 flatten linear(3)";
    let plan = ModelSpec::parse(spec, [1, 8, 8]).unwrap().plan().unwrap();
    let model = Model::from_spec(spec, [1, 8, 8], 0).unwrap();
    assert_eq!(plan.num_params(), model.num_params());
    assert_eq!(plan.tensors(), model.tensors());
    assert_eq!(plan.forward_flops(), model.forward_flops());
    assert_eq!(plan.num_classes(), 3);
    assert_eq!(plan.spec().to_string(), model.spec());
    let got: Vec<(String, ActivationShape, Option<&str>, usize, u64)> = plan
        .layers()
        .iter()
        .map(|l| {
            let op = l.op.as_deref();
            (l.layer.to_string(), l.output, op, l.params, l.forward_flops)
        })
        .collect();
    let chw = ActivationShape::Chw;
    assert_eq!(
        got,
        [
            (
                "conv3x3(4,p1)".into(),
                chw([4, 8, 8]),
                Some("conv1+relu"),
                40,
                2 * 4 * 9 * 64
            ),
            ("relu".into(), chw([4, 8, 8]), Some("conv1+relu"), 0, 0),
            ("maxpool2".into(), chw([4, 4, 4]), Some("maxpool1"), 0, 0),
            ("flatten".into(), ActivationShape::Flat(64), None, 0, 0),
            (
                "linear(3)".into(),
                ActivationShape::Flat(3),
                Some("fc1"),
                195,
                2 * 64 * 3
            ),
        ]
    );
    let names: Vec<String> = model.last_profile().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["conv1+relu", "maxpool1", "fc1"]);
    // Batch 32: 16 chunks of 2 images. Per image the stack keeps conv1's
    // 256 outputs and maxpool1's 64 argmaxes; maxpool1's 64 and fc1's 3
    // outputs are contiguous; two gradient buffers and the linear layer's
    // temporary of 64 floats per image; 16 chunks x 40 conv partials.
    let m = plan.memory(32, 2);
    assert_eq!(m.params, 2 * 235 * 4);
    assert_eq!(m.partials, 16 * 40 * 4);
    assert_eq!(m.activations, 32 * (256 + 64 + 64 + 3 + 2 * 64 + 64) * 4);
    assert!(m.scratch > 0 && plan.memory(32, 4).scratch == 2 * m.scratch);
    assert_eq!(m.total(), m.params + m.partials + m.activations + m.scratch);
}

/// Sizes past any memory plan with saturated figures (what a memory check
/// refuses) and do not build; shape errors name the layer.
#[test]
fn absurd_specs_plan_without_overflow_and_do_not_build() {
    let huge = "conv3x3(18446744073709551615,p18446744073709551615) flatten linear(9)";
    let plan = ModelSpec::parse(huge, [3, 32, 32]).unwrap().plan().unwrap();
    assert_eq!(plan.num_params(), usize::MAX);
    assert_eq!(plan.memory(1 << 40, 4).total(), usize::MAX);
    let e = Model::from_spec(huge, [3, 32, 32], 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not fit"), "{e}");
    let e = Model::from_spec("conv3x3(2,p100000) flatten linear(2)", [1, 4, 4], 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layer 1") && e.contains("32-bit"), "{e}");
    let e = ModelSpec::new(
        [1, 4, 4],
        vec![LayerSpec::flatten(), LayerSpec::maxpool2d(2, 2)],
    )
    .plan()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("layer 2 (maxpool2)") && e.contains("flat"),
        "{e}"
    );
}
