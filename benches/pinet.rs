//! PiNet throughput with criterion: training step (the trainer's own
//! [`Trainer::step`](ringsgd::trainer::Trainer::step) on one rank: forward +
//! backward + SGD)
//! and forward-only images/s at batch 32 and 128 for cores = 1..available,
//! and per-layer forward/backward times at batch 32 with GFLOP/s (criterion
//! reports the layer benches' throughput in FLOP/s as "elem/s").
//!
//! `cargo bench --bench pinet` (filter e.g. `-- train_step/b32`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array4;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringsgd::comm::local::LocalComm;
use ringsgd::nn::Model;
use ringsgd::optim::LrSchedule;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{TrainConfig, Trainer};
use std::time::Duration;

fn data(batch: usize) -> (Array4<f32>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = Array4::from_shape_fn((batch, 3, 32, 32), |_| rng.random_range(-2.0f32..2.0));
    let y = (0..batch).map(|_| rng.random_range(0..10u8)).collect();
    (x, y)
}

fn max_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn throughput(c: &mut Criterion) {
    for forward_only in [false, true] {
        let name = if forward_only {
            "forward"
        } else {
            "train_step"
        };
        let mut g = c.benchmark_group(name);
        g.sample_size(10).measurement_time(Duration::from_secs(4));
        for batch in [32usize, 128] {
            let (x, y) = data(batch);
            g.throughput(Throughput::Elements(batch as u64));
            for cores in 1..=max_cores() {
                let pool = ComputePool::new(cores).unwrap();
                // The trainer's own step on one rank (what training runs).
                let world = LocalComm::world(1).unwrap();
                let mut cfg = TrainConfig::pinet_defaults(batch, 1);
                cfg.schedule = LrSchedule::Constant;
                let mut trainer =
                    Trainer::new(&world[0], pool, Model::pinet(1).unwrap(), cfg).unwrap();
                g.bench_with_input(
                    BenchmarkId::new(format!("b{batch}"), format!("cores{cores}")),
                    &cores,
                    |b, _| {
                        b.iter(|| {
                            if forward_only {
                                trainer.evaluate_batch(x.view(), &y).unwrap();
                            } else {
                                trainer.step(x.view(), &y).unwrap();
                            }
                        })
                    },
                );
            }
        }
        g.finish();
    }
}

fn layers(c: &mut Criterion) {
    let batch = 32;
    let (x, y) = data(batch);
    for cores in 1..=max_cores() {
        let pool = ComputePool::new(cores).unwrap();
        let mut model = Model::pinet(1).unwrap();
        model.train_step(&pool, x.view(), &y).unwrap();
        let ops = model.last_profile();
        let mut g = c.benchmark_group(format!("layers_b{batch}_cores{cores}"));
        g.sample_size(10).measurement_time(Duration::from_secs(2));
        for (i, op) in ops.iter().enumerate() {
            for (pass, flops) in [("fwd", op.forward_flops), ("bwd", op.backward_flops)] {
                g.throughput(Throughput::Elements(flops * batch as u64));
                g.bench_function(format!("{}/{pass}", op.name), |b| {
                    b.iter_custom(|iters| {
                        let mut t = 0.0;
                        for _ in 0..iters {
                            model.train_step(&pool, x.view(), &y).unwrap();
                            let p = &model.last_profile()[i];
                            t += if pass == "fwd" {
                                p.forward_s
                            } else {
                                p.backward_s
                            };
                        }
                        Duration::from_secs_f64(t)
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, throughput, layers);
criterion_main!(benches);
