//! Batch shares that follow each rank's speed (`TrainConfig::balance`):
//! a slow rank gets a smaller share, the update stays the mean over the
//! global batch (a balanced 2-rank run follows the 1-rank run), replicas
//! stay identical, and checkpoints carry the shares.

use std::time::Duration;

use ndarray::ArrayView4;
use ringsgd::comm::local::run_ranks;
use ringsgd::comm::Transport;
use ringsgd::data::{synthetic, Normalizer};
use ringsgd::model::{BatchStats, GradSink, TensorInfo, Trainable};
use ringsgd::nn::Model;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{Balance, TrainConfig, Trainer};

const SPEC: &str = "conv3x3(4,p1) relu maxpool2 flatten linear(10)";

/// The crate's CNN, made slower by `per_sample` of sleep per sample (a
/// throttled board).
struct Slow {
    inner: Model,
    per_sample: Duration,
}

impl Trainable for Slow {
    fn identity(&self) -> String {
        self.inner.identity()
    }
    fn input_shape(&self) -> [usize; 3] {
        self.inner.input_chw()
    }
    fn num_classes(&self) -> usize {
        Trainable::num_classes(&self.inner)
    }
    fn params(&self) -> &[f32] {
        self.inner.params()
    }
    fn grads(&self) -> &[f32] {
        self.inner.grads()
    }
    fn params_and_grads_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        self.inner.params_and_grads_mut()
    }
    fn train_step(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> ringsgd::Result<BatchStats> {
        std::thread::sleep(self.per_sample * labels.len() as u32);
        self.inner.train_step(pool, input, labels)
    }
    fn train_step_with(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
        on_grads: &mut GradSink<'_>,
    ) -> ringsgd::Result<BatchStats> {
        std::thread::sleep(self.per_sample * labels.len() as u32);
        self.inner.train_step_with(pool, input, labels, on_grads)
    }
    fn grad_parts(&self) -> Vec<std::ops::Range<usize>> {
        self.inner.grad_parts()
    }
    fn evaluate(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> ringsgd::Result<BatchStats> {
        self.inner.evaluate(pool, input, labels)
    }
    fn tensors(&self) -> Vec<TensorInfo> {
        self.inner.tensors().to_vec()
    }
}

fn cfg(balance: Balance) -> TrainConfig {
    let mut c = TrainConfig::pinet_defaults(64, 1);
    c.seed = 2;
    c.verify_every = Some(1);
    c.balance = balance;
    c
}

/// Per-step losses of every rank (global mean), final shares, weights hash.
fn run(ranks: usize, balance: Balance, slow_rank_ms: u64) -> Vec<(Vec<f64>, Vec<usize>, u64)> {
    let train = synthetic::generate(640, 4);
    let norm = Normalizer::from_dataset(&train).unwrap();
    run_ranks(ranks, |comm| {
        let per_sample = if comm.rank() == 1 {
            Duration::from_millis(slow_rank_ms)
        } else {
            Duration::ZERO
        };
        let model = Slow {
            inner: Model::from_spec(SPEC, [3, 32, 32], 5)?,
            per_sample,
        };
        let mut t = Trainer::new(&comm, ComputePool::new(1)?, model, cfg(balance))?;
        let report = t.train_epoch(&train, &norm, &mut |_| {})?;
        assert_eq!(report.shares.iter().sum::<usize>(), 64);
        let losses = vec![report.train_loss];
        Ok((losses, t.shares().to_vec(), t.weights_hash()))
    })
    .unwrap()
}

#[test]
fn a_slow_rank_gets_a_smaller_share_and_replicas_agree() {
    // Rank 1 sleeps 2 ms per sample: a 32-sample share costs it 64 ms
    // more than rank 0's.
    let out = run(
        2,
        Balance::Auto {
            every_steps: Some(2),
        },
        2,
    );
    assert_eq!(out[0], out[1], "ranks disagree");
    let shares = &out[0].1;
    assert_eq!(shares.iter().sum::<usize>(), 64);
    assert!(shares[1] < 20 && shares[0] > 44, "{shares:?}");
}

#[test]
fn balanced_training_is_the_mean_over_the_global_batch() {
    // One rank computes the whole global batch; two balanced ranks (shares
    // far from equal after the first decision) must follow it: the weights
    // of each rank's gradient make the average the global mean.
    let one = run(1, Balance::Off, 0);
    let two = run(
        2,
        Balance::Auto {
            every_steps: Some(2),
        },
        2,
    );
    assert_ne!(two[0].1, vec![32, 32], "the shares did not move");
    let (a, b) = (one[0].0[0], two[0].0[0]);
    assert!(
        (a - b).abs() < 1e-4 * a.abs(),
        "epoch loss {a} (1 rank) vs {b} (balanced)"
    );
    // Equal shares: balancing off gives the same run as before (bitwise).
    let off = run(2, Balance::Off, 0);
    assert_eq!(off[0].1, vec![32, 32]);
}

#[test]
fn checkpoints_carry_the_shares() {
    let train = synthetic::generate(640, 4);
    let norm = Normalizer::from_dataset(&train).unwrap();
    let got = run_ranks(2, |comm| {
        let slow = |rank: usize| Slow {
            inner: Model::from_spec(SPEC, [3, 32, 32], 5).unwrap(),
            per_sample: Duration::from_millis(if rank == 1 { 2 } else { 0 }),
        };
        let balance = Balance::Auto {
            every_steps: Some(2),
        };
        let mut c = cfg(balance);
        c.max_steps = Some(4);
        let mut t = Trainer::new(&comm, ComputePool::new(1)?, slow(comm.rank()), c.clone())?;
        t.train_epoch(&train, &norm, &mut |_| {})?;
        let ckpt = t.to_checkpoint();
        let mut fresh = Trainer::new(&comm, ComputePool::new(1)?, slow(comm.rank()), c)?;
        fresh.restore_from_root((comm.rank() == 0).then(|| Ok(ckpt.clone())))?;
        Ok((t.shares().to_vec(), fresh.shares().to_vec()))
    })
    .unwrap();
    for (before, after) in got {
        assert_ne!(before, vec![32, 32]);
        assert_eq!(before, after);
    }
}
