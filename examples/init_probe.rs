//! Diagnostic: the first steps of PiNet training on CIFAR-10 (1 rank, the
//! cifar10 example's defaults: global batch 128, lr 0.05, momentum 0.9,
//! weight decay 5e-4, cosine over one epoch, augmentation), printing per step
//! the batch loss and, at a few steps, activation and gradient statistics.
//!
//! `init_probe --data PATH [--steps N] [--seed S] [--init lib|he|torch]
//! [--warmup N] [--every K]`
//!
//! `--init lib` keeps the library's initialisation; `he` redraws
//! He-uniform weights `U(+-sqrt(6/fan_in))` with zero biases, `torch`
//! PyTorch's default `U(+-1/sqrt(fan_in))` for weights and biases (both from
//! their own seeded stream, so they compare with each other).

use ringsgd::data::{cifar, epoch_permutation, Augmentation, BatchBuilder, Normalizer};
use ringsgd::nn::Model;
use ringsgd::optim::{LrSchedule, Sgd, SgdConfig};
use ringsgd::parallel::ComputePool;
use ringsgd::{Error, Result};

use rand::{RngExt, SeedableRng};

/// Prefixes of PiNet that end in a flat output: the activations after each
/// block.
const PREFIXES: [(&str, &str); 3] = [
    (
        "block1",
        "conv3x3(32,p1) relu conv3x3(32,p1) relu maxpool2 flatten",
    ),
    (
        "block2",
        "conv3x3(32,p1) relu conv3x3(32,p1) relu maxpool2 conv3x3(64,p1) relu conv3x3(64,p1) relu maxpool2 flatten",
    ),
    (
        "fc1",
        "conv3x3(32,p1) relu conv3x3(32,p1) relu maxpool2 conv3x3(64,p1) relu conv3x3(64,p1) relu maxpool2 flatten linear(256) relu",
    ),
];

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::invalid(format!("{name}: missing or bad value"))),
        None => Ok(default),
    }
}

fn norm(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

fn redraw(model: &mut Model, init: &str, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x1417);
    let tensors = model.tensors().to_vec();
    let params = model.params_mut();
    let mut fan = 1;
    for t in &tensors {
        if t.name.ends_with(".weight") {
            fan = t.shape[1..].iter().product::<usize>();
        }
        let bound = match (init, t.name.ends_with(".weight")) {
            ("he", true) => (6.0 / fan as f64).sqrt() as f32,
            ("he", false) => 0.0,
            (_, _) => (1.0 / fan as f64).sqrt() as f32,
        };
        for p in &mut params[t.offset..t.offset + t.len] {
            *p = if bound > 0.0 {
                rng.random_range(-bound..bound)
            } else {
                0.0
            };
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data: String = arg(&args, "--data", String::new())?;
    let steps: u64 = arg(&args, "--steps", 50)?;
    let seed: u64 = arg(&args, "--seed", 1)?;
    let init: String = arg(&args, "--init", "lib".to_string())?;
    let warmup: u64 = arg(&args, "--warmup", 0)?;
    let every: u64 = arg(&args, "--every", 10)?;
    let c = cifar::load(std::path::Path::new(&data))?;
    let norm_ = Normalizer::from_dataset(&c.train)?;
    let pool = ComputePool::new(2)?;
    let mut model = Model::pinet(seed)?;
    if init != "lib" {
        redraw(&mut model, &init, seed);
    }
    let gb = 128;
    let spe = (c.train.len() / gb) as u64;
    let sched = LrSchedule::Cosine {
        warmup_steps: warmup,
        total_steps: spe,
    };
    let cfg = SgdConfig {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let mut sgd = Sgd::new(cfg, model.num_params())?;
    let perm = epoch_permutation(c.train.len(), seed, 0);
    let mut bb = BatchBuilder::new(norm_, Some(Augmentation::standard()))?;
    let mut probes: Vec<Model> = PREFIXES
        .iter()
        .map(|(_, s)| Model::from_spec(s, [3, 32, 32], 0))
        .collect::<Result<_>>()?;
    println!("init={init} seed={seed} warmup={warmup}");
    for s in 0..steps.min(spe) {
        let idx = &perm[s as usize * gb..(s as usize + 1) * gb];
        let batch = bb.fill_train(&c.train, idx, seed, 0, s as usize * gb)?;
        let report = s % every == 0 || s + 1 == steps;
        if report {
            for ((name, _), p) in PREFIXES.iter().zip(&mut probes) {
                let n = p.num_params();
                p.params_mut().copy_from_slice(&model.params()[..n]);
                let out = p.predict(&pool, batch.images)?;
                let v = out.as_slice().expect("contiguous");
                let rms =
                    (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
                let dead_units = (0..out.ncols())
                    .filter(|&j| out.column(j).iter().all(|&x| x == 0.0))
                    .count();
                println!(
                    "  step {s:3} act {name:6} rms {rms:10.4} zero {:.3} dead_units {dead_units}/{}",
                    v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64,
                    out.ncols()
                );
            }
            let logits = model.predict(&pool, batch.images)?;
            let v = logits.as_slice().expect("contiguous");
            println!(
                "  step {s:3} logits rms {:10.4}",
                norm(v) / (v.len() as f64).sqrt()
            );
        }
        let stats = model.train_step(&pool, batch.images, batch.labels)?;
        if report {
            let line: Vec<String> = model
                .tensors()
                .iter()
                .filter(|t| t.name.ends_with(".weight"))
                .map(|t| {
                    let r = t.offset..t.offset + t.len;
                    format!(
                        "{} |g|/|w| {:.2e}",
                        t.name.trim_end_matches(".weight"),
                        norm(&model.grads()[r.clone()]) / norm(&model.params()[r]).max(1e-30)
                    )
                })
                .collect();
            println!(
                "  step {s:3} grads |g| {:.3e}  {}",
                norm(model.grads()),
                line.join("  ")
            );
        }
        let lr = sched.lr(0.05, s);
        let (p, g) = model.params_and_grads_mut();
        sgd.step(p, g, lr)?;
        println!(
            "step {s:3} lr {lr:.5} loss {:.4} acc {:.3} |w| {:.2}",
            stats.mean_loss(),
            stats.accuracy(),
            norm(model.params())
        );
    }
    Ok(())
}
