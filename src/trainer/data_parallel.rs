//! The data-parallel training loop.

use log::{debug, info};
use ndarray::ArrayView4;

use super::overlap::Overlap;
use crate::collectives::{ensure_agree, ensure_agree_keyed, Allreducer};
use crate::comm::watch::Phase;
use crate::comm::{Communicator, Transport};
use crate::data::{Augmentation, BatchBuilder, Dataset, EpochShards, Normalizer, Shape, ShardPlan};
use crate::error::{Error, Result};
use crate::health::{HealthProbe, NodeHealth};
use crate::model::{BatchStats, Trainable};
use crate::nn::Model;
use crate::optim::{LrSchedule, Sgd};
use crate::parallel::ComputePool;
use crate::trainer::balance::{balanced_shares, equal_shares, grad_scale, Balance};
use crate::trainer::config::TrainConfig;
use crate::trainer::finite::all_finite;
use crate::trainer::metrics::{EpochReport, EvalReport, RankReport, Straggler};
use crate::trainer::timing::{critical_path, Lap, StepTimes};

/// Progress of one step, handed to the caller's callback (for progress bars).
#[derive(Debug, Clone, Copy)]
pub struct StepProgress {
    /// 1-based epoch being trained.
    pub epoch: u64,
    /// 1-based step within the epoch.
    pub step_in_epoch: u64,
    /// Steps in a full epoch.
    pub steps_per_epoch: u64,
    /// Global optimiser steps done, this one included.
    pub global_step: u64,
    /// Mean loss of this rank's share of the step's batch.
    pub local_loss: f64,
    /// Learning rate applied in this step.
    pub lr: f32,
    /// This rank's time split of the step.
    pub times: StepTimes,
}

/// What one [`Trainer::step`] did on this rank.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    /// Loss and accuracy of this rank's share of the global batch.
    pub stats: BatchStats,
    /// Learning rate applied.
    pub lr: f32,
    /// This rank's time split of the step (batch assembly not included:
    /// [`Trainer::train_epoch`] adds it to `compute`).
    pub times: StepTimes,
    /// Bytes this rank put on the wire for the gradient.
    pub wire_bytes: u64,
}

/// Data-parallel SGD of any [`Trainable`] model over any [`Transport`].
///
/// Every rank holds a full replica of the model. Each step, rank `r` of `p`
/// takes its contiguous `1/p` share of the global batch (the same
/// permutation of the training set is drawn on every rank from the shared
/// seed, so no data moves over the network), computes the gradient of the
/// mean loss over its share, the gradients are averaged with the configured
/// allreduce, and every rank applies the same SGD update: replicas stay
/// bitwise identical, which [`TrainConfig::verify_every`] checks.
///
/// MPI calls happen on the thread that calls the trainer; forward and
/// backward run in the [`ComputePool`].
///
/// The model is the crate's CNN ([`Model`], the default type parameter) or
/// any type implementing [`Trainable`] (see [`crate::model`]). Training is
/// [`train_epoch`](Self::train_epoch) over a [`Dataset`], or
/// [`step`](Self::step) on batches the caller assembles; both run the same
/// step.
///
/// ```
/// use ringsgd::comm::local::run_ranks;
/// use ringsgd::data::synthetic;
/// use ringsgd::data::Normalizer;
/// use ringsgd::nn::Model;
/// use ringsgd::parallel::ComputePool;
/// use ringsgd::trainer::{TrainConfig, Trainer};
///
/// # fn main() -> ringsgd::Result<()> {
/// let data = synthetic::generate(64, 1);
/// let norm = Normalizer::from_dataset(&data)?;
/// let losses = run_ranks(2, |comm| {
///     let model = Model::from_spec("conv3x3(4,p1) relu maxpool2 flatten linear(10)", [3, 32, 32], 1)?;
///     let mut cfg = TrainConfig::pinet_defaults(16, 1);
///     cfg.augment = None;
///     let mut trainer = Trainer::new(&comm, ComputePool::new(1)?, model, cfg)?;
///     let report = trainer.train_epoch(&data, &norm, &mut |_| {})?;
///     Ok(report.train_loss)
/// })?;
/// assert_eq!(losses[0], losses[1]);
/// # Ok(()) }
/// ```
pub struct Trainer<'c, M: Trainable = Model> {
    comm: &'c dyn Transport,
    pool: ComputePool,
    model: M,
    sgd: Sgd,
    allreducer: Allreducer,
    /// Exact (f32) sums of the epoch's and the evaluation's statistics,
    /// whatever the gradients' wire format.
    stats: Allreducer,
    /// The overlapped step's buffers (`TrainConfig::bucket_bytes`, more
    /// than one rank).
    overlap: Option<Overlap>,
    cfg: TrainConfig,
    /// Batch assembly, made for the normaliser of the data being trained on.
    batches: Option<BatchBuilder>,
    /// Completed epochs.
    epoch: u64,
    /// Global optimiser steps done.
    step: u64,
    /// Steps per epoch of the training set last trained on (0: none yet).
    steps_per_epoch: u64,
    /// This rank's shards of the epoch being trained (the epoch's
    /// permutation, computed once per epoch).
    shards: Option<EpochShards>,
    /// This rank's step times in the current epoch.
    times: Vec<StepTimes>,
    /// Per step of the last epoch, the split over all ranks.
    critical: Vec<StepTimes>,
    /// Steps this trainer object has run (the first ones get the warm-up
    /// deadline).
    steps_run: u64,
    /// Reads this node's temperature and clock.
    probe: HealthProbe,
    /// This node over the current epoch.
    health: NodeHealth,
    /// When `health` was last sampled.
    sampled_at: Option<std::time::Instant>,
    /// Every rank's share of the global batch (equal unless
    /// [`TrainConfig::balance`] moved them).
    shares: Vec<usize>,
    /// This rank's compute seconds and samples since the shares were last
    /// decided.
    since_decision: (f64, usize),
    /// Rank 0: every rank's throughput (samples/s), smoothed over the
    /// decisions (empty before the first).
    rates: Vec<f64>,
}

/// Smallest predicted shortening of the step (a fraction) for which the
/// shares change.
const MIN_GAIN: f64 = 0.03;

/// Weight of the earlier estimate when a rank's throughput is measured
/// again (exponential smoothing over the decisions).
const RATE_SMOOTHING: f64 = 0.5;

/// Samples per second from `[compute seconds, samples]` (NaN when nothing
/// was measured: [`balanced_shares`] then refuses, and the shares stay).
fn rate(m: [f32; 2]) -> f64 {
    m[1] as f64 / m[0] as f64
}

/// Seconds between two samples of the node's temperature and clock.
const HEALTH_EVERY_S: f64 = 1.0;

/// Steps of a run (or a resumed run) watched with the [`Phase::Warmup`]
/// deadline.
const WARMUP_STEPS: u64 = 3;

impl<'c, M: Trainable> Trainer<'c, M> {
    /// Sets up a trainer on every rank (collective: all ranks must call it).
    ///
    /// Checks that all ranks were given the same configuration and model
    /// (failing on every rank otherwise), then copies rank 0's initial
    /// weights to every rank.
    pub fn new(
        comm: &'c dyn Transport,
        pool: ComputePool,
        mut model: M,
        cfg: TrainConfig,
    ) -> Result<Self> {
        cfg.validate(comm.size())?;
        let sgd = Sgd::new(cfg.sgd, model.num_params())?;
        if let Some(t) = cfg.peer_timeout {
            comm.set_watch(Some(t.watch(Phase::Setup, 0, 0)));
        }
        // Keyed, so that a mismatch names the settings that differ.
        let mut identity = cfg.entries();
        identity.extend([
            ("model".to_string(), Some(model.identity())),
            (
                "input".to_string(),
                Some(format!("{:?}", model.input_shape())),
            ),
            ("classes".to_string(), Some(model.num_classes().to_string())),
            ("params".to_string(), Some(model.num_params().to_string())),
            ("world".to_string(), Some(comm.size().to_string())),
            (
                "peer_timeout".to_string(),
                Some(format!("{:?}", cfg.peer_timeout.map(|t| t.base()))),
            ),
        ]);
        let overlap = match cfg.bucket_bytes {
            Some(b) if comm.size() > 1 => Some(Overlap::new(
                &model.grad_parts(),
                model.num_params(),
                comm.size(),
                b,
                Allreducer::DEFAULT_SEGMENT_BYTES,
                cfg.wire,
            )?),
            _ => None,
        };
        if let Some(ov) = &overlap {
            // The layout decides how the sums are grouped: part of the
            // identity (equal specs give equal layouts, but say so).
            identity.push(("buckets".to_string(), Some(ov.plan().describe())));
        }
        ensure_agree_keyed(comm, "training configuration and model", &identity)?;
        comm.broadcast(0, model.params_mut())?;
        info!(
            "rank {}/{}: trainer ready, {} parameters, per-rank batch {}, allreduce {} ({} on the \
             wire), {} core{}",
            comm.rank(),
            comm.size(),
            model.num_params(),
            cfg.per_rank_batch(comm.size()),
            cfg.algorithm,
            cfg.wire,
            pool.cores(),
            if pool.cores() == 1 { "" } else { "s" }
        );
        let shares = equal_shares(cfg.global_batch, comm.size());
        Ok(Trainer {
            comm,
            pool,
            model,
            sgd,
            // The ranks agreed on everything an allreduce checks (above):
            // no per-call check.
            stats: Allreducer::new(cfg.algorithm),
            allreducer: Allreducer::new(cfg.algorithm)
                .with_wire(cfg.wire)
                .with_check_every_call(false),
            overlap,
            cfg,
            batches: None,
            epoch: 0,
            step: 0,
            steps_per_epoch: 0,
            shards: None,
            times: Vec::new(),
            critical: Vec::new(),
            steps_run: 0,
            probe: HealthProbe::system(),
            health: NodeHealth::default(),
            sampled_at: None,
            shares,
            since_decision: (0.0, 0),
            rates: Vec::new(),
        })
    }

    /// Sets the communicator's deadline for `phase` at the current epoch
    /// and step (nothing without [`TrainConfig::peer_timeout`]). The
    /// trainer does this itself for training steps and evaluation; callers
    /// mark their own phases (writing files on rank 0, the end of the run)
    /// so that the ranks waiting for them get that phase's allowance.
    pub fn enter_phase(&self, phase: Phase) {
        if let Some(t) = self.cfg.peer_timeout {
            self.comm
                .set_watch(Some(t.watch(phase, self.epoch + 1, self.step)));
        }
    }

    /// Runs `write` on rank 0 (checkpoints, metrics, exports) while the
    /// other ranks wait under the [`Phase::Checkpoint`] deadline
    /// (collective). Rank 0's outcome is shared: if `write` fails there,
    /// every rank returns an error (rank 0 its own).
    pub fn on_root(&mut self, write: impl FnOnce(&Self) -> Result<()>) -> Result<()> {
        self.enter_phase(Phase::Checkpoint);
        let result = if self.comm.rank() == 0 {
            Some(write(self))
        } else {
            None
        };
        let mut ok = [u8::from(result.as_ref().is_none_or(|r| r.is_ok()))];
        self.comm.broadcast(0, &mut ok)?;
        match result {
            Some(r) => r,
            None if ok[0] == 1 => Ok(()),
            None => Err(Error::Comm {
                rank: self.comm.rank(),
                msg: "rank 0 failed to write its files (see rank 0's error)".to_string(),
            }),
        }
    }

    /// Where this rank reads its node's temperature and clock (default: the
    /// machine's `/sys`; see [`crate::health`]).
    pub fn set_health_probe(&mut self, probe: HealthProbe) {
        self.probe = probe;
    }

    /// The model replica of this rank.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The trainer's model, given back (to keep training it elsewhere, or
    /// to export it).
    pub fn into_model(self) -> M {
        self.model
    }

    /// The optimiser (its momentum buffer is part of checkpoints).
    pub fn optimizer(&self) -> &Sgd {
        &self.sgd
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Completed epochs.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Global optimiser steps done.
    pub fn global_step(&self) -> u64 {
        self.step
    }

    /// This rank's step times of the last (or current) epoch.
    pub fn step_times(&self) -> &[StepTimes] {
        &self.times
    }

    /// For every step of the last [`Trainer::train_epoch`] call, the split
    /// of the step over all ranks (see [`critical_path`]; the same on every
    /// rank).
    pub fn last_epoch_step_times(&self) -> &[StepTimes] {
        &self.critical
    }

    /// Cores of this rank's compute pool.
    pub fn cores(&self) -> usize {
        self.pool.cores()
    }

    /// The communicator.
    pub fn comm(&self) -> &'c dyn Transport {
        self.comm
    }

    /// Steps done in the current epoch (0 before the first epoch).
    pub fn step_in_epoch(&self) -> u64 {
        self.step.saturating_sub(self.epoch * self.steps_per_epoch)
    }

    /// Whether the run is over: all epochs done or `max_steps` reached.
    pub fn finished(&self) -> bool {
        self.epoch >= self.cfg.epochs || self.cfg.max_steps.is_some_and(|m| self.step >= m)
    }

    /// Optimiser steps in one epoch of a training set of `n` images (the last
    /// partial global batch is dropped).
    pub fn steps_per_epoch(&self, n: usize) -> u64 {
        (n / self.cfg.global_batch) as u64
    }

    /// The schedule with a cosine length of 0 resolved to the whole run.
    fn schedule(&self, steps_per_epoch: u64) -> LrSchedule {
        match self.cfg.schedule {
            LrSchedule::Cosine {
                warmup_steps,
                total_steps: 0,
            } => LrSchedule::Cosine {
                warmup_steps,
                total_steps: steps_per_epoch.saturating_mul(self.cfg.epochs),
            },
            s => s,
        }
    }

    /// Trains the rest of the current epoch (collective) and returns its
    /// report, identical on every rank. `on_step` is called after every step
    /// on every rank (rank 0 typically drives a progress bar with it).
    ///
    /// Stops early when [`TrainConfig::max_steps`] is reached; the epoch then
    /// stays open and a later call (or a resumed run) continues it.
    pub fn train_epoch(
        &mut self,
        train: &Dataset,
        norm: &Normalizer,
        on_step: &mut dyn FnMut(&StepProgress),
    ) -> Result<EpochReport> {
        let (rank, size) = (self.comm.rank(), self.comm.size());
        let gb = self.cfg.global_batch;
        let spe = self.steps_per_epoch(train.len());
        if spe == 0 {
            return Err(Error::invalid(format!(
                "the training set has {} images, fewer than one global batch of {gb}",
                train.len()
            )));
        }
        if self.finished() {
            return Err(Error::invalid(format!(
                "training is finished (epoch {}, step {}); raise --epochs or --max-steps",
                self.epoch, self.step
            )));
        }
        self.steps_per_epoch = spe;
        let schedule = self.schedule(spe);
        // A cosine warm-up as long as the run would never decay.
        schedule.validate()?;
        let first = self.step - self.epoch * spe;
        if first >= spe {
            return Err(Error::invalid(format!(
                "step {} is past epoch {} of {spe} steps; the global batch or the training set \
                 differ from the run that wrote the checkpoint",
                self.step,
                self.epoch + 1
            )));
        }
        // The data set's one sharding rule (`data::shard`): the same
        // permutation on every rank, equal contiguous shares of each global
        // batch (the configuration has checked that the ranks divide it),
        // the last partial global batch dropped.
        let plan = ShardPlan::new(train.len(), gb, true, self.cfg.seed, rank, size)?;
        check_input_shape(train, self.model.input_shape())?;
        check_classes(train, self.model.num_classes())?;
        check_augmentation(train, self.cfg.augment.as_ref())?;
        let shards = match self.shards.take() {
            Some(e) if e.epoch() == self.epoch && *e.plan() == plan => e,
            _ => plan.epoch(self.epoch),
        };
        self.times.clear();
        self.health = NodeHealth::default();
        self.sampled_at = None;
        let (mut loss_sum, mut correct, mut images) = (0.0f64, 0usize, 0usize);
        let mut lr = 0.0;
        let epoch_start = std::time::Instant::now();
        let mut steps = 0u64;
        let mut wire_bytes = 0u64;
        for s in first..spe {
            if self.cfg.max_steps.is_some_and(|m| self.step >= m) {
                break;
            }
            // Equal shares (no allocation per step): the plan's own rule.
            let shard = if self.shares.iter().all(|&n| n * size == gb) {
                shards.step(s as usize)?
            } else {
                shards.step_with_shares(s as usize, &self.shares)?
            };
            let started = std::time::Instant::now();
            // The builder leaves `self` while its batch is borrowed by the
            // step (and comes back whatever the step's outcome).
            let mut builder = batch_builder(self.batches.take(), norm, self.cfg.augment)?;
            let outcome = builder.fill_shard(train, &shard).and_then(|batch| {
                let fill = started.elapsed().as_secs_f64();
                let mut out = self.step(batch.images, batch.labels)?;
                out.times.compute += fill;
                out.times.step += fill;
                Ok(out)
            });
            self.batches = Some(builder);
            let out = outcome?;
            self.times.push(out.times);
            self.since_decision.0 += out.times.compute;
            self.since_decision.1 += out.stats.count;
            // Right after computing: the node's clock under load.
            if self
                .sampled_at
                .is_none_or(|t| t.elapsed().as_secs_f64() >= HEALTH_EVERY_S)
            {
                self.health.add(&self.probe.sample());
                self.sampled_at = Some(std::time::Instant::now());
            }
            loss_sum += out.stats.loss_sum;
            correct += out.stats.correct;
            images += out.stats.count;
            wire_bytes += out.wire_bytes;
            lr = out.lr;
            steps += 1;
            if let Balance::Auto {
                every_steps: Some(k),
            } = self.cfg.balance
            {
                if self.step % k == 0 {
                    self.rebalance()?;
                }
            }
            on_step(&StepProgress {
                epoch: self.epoch + 1,
                step_in_epoch: s + 1,
                steps_per_epoch: spe,
                global_step: self.step,
                local_loss: out.stats.mean_loss(),
                lr,
                times: out.times,
            });
        }
        // The epoch's permutation is kept for the rest of the epoch (a
        // `max_steps` stop, or the next call).
        self.shards = Some(shards);
        let shares_used = self.shares.clone();
        if self.cfg.balance == (Balance::Auto { every_steps: None }) && steps > 0 {
            self.rebalance()?;
        }
        // Rank 0's wall clock, so that the report is the same on every rank.
        let mut seconds = [epoch_start.elapsed().as_secs_f64() as f32];
        self.comm.broadcast(0, &mut seconds)?;
        let seconds = seconds[0] as f64;
        // Rank 0's count too (chunks of unequal length send a few bytes
        // more or less).
        let mut wire = wire_bytes.to_le_bytes();
        self.comm.broadcast(0, &mut wire)?;
        let wire_bytes = u64::from_le_bytes(wire);
        let epoch_number = self.epoch + 1;
        if self.step - self.epoch * spe == spe {
            self.epoch += 1;
        }
        let mut sums = [loss_sum as f32, correct as f32, images as f32];
        self.stats.allreduce_sum(self.comm, &mut sums)?;
        let (slowest, ranks);
        (self.critical, slowest, ranks) = self.critical_path_times()?;
        let total = self
            .critical
            .iter()
            .fold(StepTimes::default(), |acc, t| acc.add(t));
        let n = sums[2].max(1.0) as f64;
        let report = EpochReport {
            epoch: epoch_number,
            step: self.step,
            steps,
            train_loss: sums[0] as f64 / n,
            train_accuracy: sums[1] as f64 / n,
            lr,
            images_per_sec: (steps as f64 * gb as f64) / seconds.max(1e-12),
            seconds,
            times: total,
            test: None,
            slowest,
            ranks,
            shares: shares_used,
            wire_bytes,
            eval_seconds: None,
            checkpoint_seconds: None,
        };
        debug!("rank {rank}: epoch {epoch_number} done: {report:?}");
        Ok(report)
    }

    /// One synchronous data-parallel step (collective): forward and
    /// backward on this rank's share of the global batch (`input` is
    /// `[global_batch / ranks, C, H, W]`, `labels` one class per sample),
    /// the gradients averaged over all ranks, the same SGD update applied
    /// on every rank. [`train_epoch`](Self::train_epoch) calls this for
    /// each step; call it directly to train on batches assembled elsewhere
    /// (the learning rate follows the schedule at
    /// [`global_step`](Self::global_step); a cosine schedule with
    /// `total_steps: 0` needs an epoch length, so give it one).
    ///
    /// Errors (before any communication) if the batch does not match the
    /// configuration or the model; with a non-finite averaged gradient the
    /// update is not applied and the error is [`Error::NonFinite`] on every
    /// rank.
    pub fn step(&mut self, input: ArrayView4<'_, f32>, labels: &[u8]) -> Result<StepOutcome> {
        self.check_batch(&input, labels)?;
        let schedule = self.schedule(self.steps_per_epoch);
        if matches!(schedule, LrSchedule::Cosine { total_steps: 0, .. }) {
            return Err(Error::invalid(
                "the cosine schedule has no length: set its total_steps (or train with \
                 train_epoch, which takes it from the epochs and the training set)",
            ));
        }
        schedule.validate()?;
        let phase = if self.steps_run < WARMUP_STEPS {
            Phase::Warmup
        } else {
            Phase::Train
        };
        self.enter_phase(phase);
        let mut lap = Lap::start();
        // Each rank's mean gradient weighted by its share: the average over
        // the ranks is the mean over the global batch (1 with equal shares).
        let (rank, size) = (self.comm.rank(), self.comm.size());
        let scale = grad_scale(self.shares[rank], size, self.cfg.global_batch);
        let (stats, mut t, wire_bytes) = if let Some(ov) = self.overlap.as_mut() {
            let (stats, o) =
                ov.step(self.comm, &mut self.model, &self.pool, input, labels, scale)?;
            lap.lap();
            // A non-finite loss comes from non-finite logits, whose gradient
            // is non-finite too: it reaches every rank in the averaged
            // gradient (checked below).
            let t = StepTimes {
                compute: o.compute,
                allreduce: (o.end - o.compute).max(0.0),
                hidden: o.hidden,
                ..Default::default()
            };
            (stats, t, ov.bytes_sent() as u64)
        } else {
            let stats = self.model.train_step(&self.pool, input, labels)?;
            if scale != 1.0 {
                self.model.grads_mut().iter_mut().for_each(|g| *g *= scale);
            }
            if !stats.loss_sum.is_finite() {
                // Reaches every rank through the allreduce (see `finite`).
                if let Some(g) = self.model.grads_mut().first_mut() {
                    *g = f32::NAN;
                }
            }
            let mut t = StepTimes {
                compute: lap.lap(),
                ..Default::default()
            };
            self.comm.barrier()?;
            t.wait = lap.lap();
            self.allreducer
                .allreduce_mean(self.comm, self.model.grads_mut())?;
            t.allreduce = lap.lap();
            (stats, t, self.allreducer.last_bytes_sent() as u64)
        };
        let averaged: &[f32] = match &self.overlap {
            Some(ov) => ov.reduced(),
            None => self.model.grads(),
        };
        if !all_finite(averaged) {
            return Err(self.non_finite(stats.mean_loss()));
        }
        let lr = schedule.lr(self.cfg.base_lr, self.step);
        // Elementwise, split over the pool: bitwise the same for any core
        // count.
        match &self.overlap {
            Some(ov) => self
                .sgd
                .step_in(&self.pool, self.model.params_mut(), ov.reduced(), lr)?,
            None => {
                let (params, grads) = self.model.params_and_grads_mut();
                self.sgd.step_in(&self.pool, params, grads, lr)?;
            }
        }
        t.compute += lap.lap();
        t.step = t.compute + t.wait + t.allreduce;
        self.step += 1;
        self.steps_run += 1;
        if let Some(k) = self.cfg.verify_every {
            if self.step % k == 0 {
                self.verify_replicas()?;
            }
        }
        Ok(StepOutcome {
            stats,
            lr,
            times: t,
            wire_bytes,
        })
    }

    /// Forward only on one batch of this rank (no communication): its loss
    /// and accuracy, in this trainer's compute pool. What
    /// [`evaluate`](Self::evaluate) runs on each rank's part of a data set.
    pub fn evaluate_batch(
        &mut self,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats> {
        if labels.len() != input.dim().0 || labels.is_empty() {
            return Err(Error::shape(
                "batch",
                format!(
                    "{} samples with {} labels (need one label per sample, at least one)",
                    input.dim().0,
                    labels.len()
                ),
            ));
        }
        self.check_samples(&input, labels)?;
        self.model.evaluate(&self.pool, input, labels)
    }

    /// This rank's share of a step checked against the configuration and
    /// the model.
    fn check_batch(&self, input: &ArrayView4<'_, f32>, labels: &[u8]) -> Result<()> {
        let b = input.dim().0;
        let per_rank = self.shares[self.comm.rank()];
        if b != per_rank || labels.len() != b {
            return Err(Error::shape(
                "batch",
                format!(
                    "a step takes this rank's share of the global batch, {per_rank} samples \
                     (of {} over {} ranks) with one label each; got {b} samples and {} labels",
                    self.cfg.global_batch,
                    self.comm.size(),
                    labels.len()
                ),
            ));
        }
        self.check_samples(input, labels)
    }

    /// Samples checked against the model: their shape and their labels.
    fn check_samples(&self, input: &ArrayView4<'_, f32>, labels: &[u8]) -> Result<()> {
        let (_, c, h, w) = input.dim();
        if [c, h, w] != self.model.input_shape() {
            return Err(Error::shape(
                "input",
                format!(
                    "the model '{}' takes samples of shape {:?}, the batch holds {:?}",
                    self.model.identity(),
                    self.model.input_shape(),
                    [c, h, w]
                ),
            ));
        }
        let classes = self.model.num_classes();
        if let Some(i) = labels.iter().position(|&l| usize::from(l) >= classes) {
            return Err(Error::invalid(format!(
                "label {} of sample {i} of the batch is out of range for the model's {classes} \
                 classes",
                labels[i]
            )));
        }
        Ok(())
    }

    /// Evaluates the model on `data` (collective): each rank takes a
    /// contiguous part of the set, and the sums are reduced over all ranks.
    pub fn evaluate(&mut self, data: &Dataset, norm: &Normalizer) -> Result<EvalReport> {
        let (rank, size) = (self.comm.rank(), self.comm.size());
        self.enter_phase(Phase::Evaluate);
        let n = data.len();
        let (lo, hi) = (n * rank / size, n * (rank + 1) / size);
        let (mut loss_sum, mut correct, mut count) = (0.0f64, 0usize, 0usize);
        check_input_shape(data, self.model.input_shape())?;
        check_classes(data, self.model.num_classes())?;
        let mut builder = batch_builder(self.batches.take(), norm, self.cfg.augment)?;
        let mut start = lo;
        let mut outcome = Ok(());
        while start < hi && outcome.is_ok() {
            let end = (start + self.cfg.eval_batch).min(hi);
            outcome = builder
                .fill_eval_range(data, start..end)
                .and_then(|batch| self.evaluate_batch(batch.images, batch.labels))
                .map(|stats| {
                    loss_sum += stats.loss_sum;
                    correct += stats.correct;
                    count += stats.count;
                });
            start = end;
        }
        self.batches = Some(builder);
        outcome?;
        let mut sums = [loss_sum as f32, correct as f32, count as f32];
        self.stats.allreduce_sum(self.comm, &mut sums)?;
        let images = sums[2] as usize;
        let denom = images.max(1) as f64;
        Ok(EvalReport {
            loss: sums[0] as f64 / denom,
            accuracy: sums[1] as f64 / denom,
            images,
        })
    }

    /// A 64-bit FNV-1a hash of this rank's weights (bit patterns).
    pub fn weights_hash(&self) -> u64 {
        fnv1a(self.model.params())
    }

    /// Compares the weight hashes of all ranks (collective) and fails with
    /// [`Error::ReplicaDrift`] on every rank if any differ.
    pub fn verify_replicas(&self) -> Result<()> {
        let h = self.weights_hash();
        match ensure_agree(self.comm, "model weights", &h.to_le_bytes()) {
            Err(Error::RankMismatch(msg)) => Err(Error::ReplicaDrift {
                step: self.step,
                msg,
            }),
            other => other,
        }
    }

    /// For every step of the current epoch, the split over all ranks, the
    /// slowest rank, and every rank's totals and node health (collective):
    /// rank 0 gathers every rank's times, combines them with
    /// [`critical_path`] and broadcasts the result.
    fn critical_path_times(
        &mut self,
    ) -> Result<(Vec<StepTimes>, Option<Straggler>, Vec<RankReport>)> {
        let (rank, size) = (self.comm.rank(), self.comm.size());
        let total = self
            .times
            .iter()
            .fold(StepTimes::default(), |acc, t| acc.add(t));
        let mut mine: Vec<f32> = self.times.iter().flat_map(|t| t.to_array()).collect();
        let steps = mine.len();
        // After the steps: this rank's compute total, the rest of its steps
        // (waiting for the others and for the network), its node.
        mine.extend([total.compute as f32, (total.wait + total.allreduce) as f32]);
        mine.extend(self.health.to_array());
        const EXTRA: usize = 8;
        // The steps' splits, then the slowest rank, its compute and the
        // mean, then every rank's extras.
        let mut combined = vec![0.0f32; steps + 3 + EXTRA * size];
        if rank == 0 {
            let mut all = vec![mine];
            for src in 1..size {
                let mut other = vec![0.0f32; steps + EXTRA];
                self.comm.recv(src, &mut other)?;
                all.push(other);
            }
            let field = |a: &[f32], s: usize| StepTimes::from_slice(&a[StepTimes::FIELDS * s..]);
            let mut per_rank = Vec::with_capacity(size);
            for (s, out) in combined[..steps]
                .chunks_exact_mut(StepTimes::FIELDS)
                .enumerate()
            {
                per_rank.clear();
                per_rank.extend(all.iter().map(|a| field(a, s)));
                out.copy_from_slice(&critical_path(&per_rank).to_array());
            }
            let compute: Vec<f64> = all
                .iter()
                .map(|a| {
                    a[..steps]
                        .iter()
                        .step_by(StepTimes::FIELDS)
                        .map(|&c| c as f64)
                        .sum()
                })
                .collect();
            let (slow, &most) =
                compute
                    .iter()
                    .enumerate()
                    .fold((0, &compute[0]), |a, b| if b.1 > a.1 { b } else { a });
            let mean = compute.iter().sum::<f64>() / size as f64;
            combined[steps..steps + 3].copy_from_slice(&[slow as f32, most as f32, mean as f32]);
            for (r, a) in all.iter().enumerate() {
                let at = steps + 3 + EXTRA * r;
                combined[at..at + EXTRA].copy_from_slice(&a[steps..]);
            }
        } else {
            self.comm.send(0, &mine)?;
        }
        self.comm.broadcast(0, &mut combined)?;
        let split = combined[..steps]
            .chunks_exact(StepTimes::FIELDS)
            .map(StepTimes::from_slice)
            .collect();
        let slowest = (size > 1).then(|| Straggler {
            rank: combined[steps] as usize,
            compute: combined[steps + 1] as f64,
            mean_compute: combined[steps + 2] as f64,
        });
        let ranks = combined[steps + 3..]
            .chunks_exact(EXTRA)
            .enumerate()
            .map(|(r, e)| RankReport {
                rank: r,
                host: self.comm.host_name(r),
                compute: e[0] as f64,
                wait: e[1] as f64,
                health: NodeHealth::from_array(&e[2..]),
            })
            .collect();
        Ok((split, slowest, ranks))
    }

    /// The error of a step whose averaged gradient is not finite (the same
    /// on every rank but for this rank's loss).
    fn non_finite(&self, local_loss: f64) -> Error {
        Error::NonFinite {
            epoch: self.epoch + 1,
            step_in_epoch: self.step_in_epoch() + 1,
            step: self.step + 1,
            msg: format!(
                "the averaged gradient is not finite (mean loss of this rank's share: \
                 {local_loss}); the step's update was not applied, so the weights and the last \
                 checkpoint are those before it. Lower the learning rate (it was {:?}), add \
                 a warm-up, or check the data",
                self.cfg.base_lr
            ),
        }
    }

    /// Every rank's share of the global batch, in rank order (equal unless
    /// [`TrainConfig::balance`] moved them); [`step`](Self::step) takes
    /// this rank's.
    pub fn shares(&self) -> &[usize] {
        &self.shares
    }

    /// Decides new shares from every rank's compute time per sample since
    /// the last decision (collective): rank 0 computes them
    /// ([`balanced_shares`]) and every rank applies them from the next
    /// step. The shares change only when the predicted step (the slowest
    /// rank's share over its throughput) is at least `MIN_GAIN` shorter,
    /// so that timing noise on equal boards does not move them.
    fn rebalance(&mut self) -> Result<()> {
        let (rank, size) = (self.comm.rank(), self.comm.size());
        let mine = [self.since_decision.0 as f32, self.since_decision.1 as f32];
        self.since_decision = (0.0, 0);
        if size == 1 {
            return Ok(());
        }
        let mut decided: Vec<f32> = self.shares.iter().map(|&s| s as f32).collect();
        if rank == 0 {
            let mut measured = vec![rate(mine)];
            for src in 1..size {
                let mut m = [0.0f32; 2];
                self.comm.recv(src, &mut m)?;
                measured.push(rate(m));
            }
            // Smoothed over the decisions: a few noisy steps (a shared
            // machine, a cgroup quota's periods) do not swing the shares.
            if self.rates.len() == size {
                for (old, new) in self.rates.iter_mut().zip(&measured) {
                    if new.is_finite() && *new > 0.0 {
                        *old = RATE_SMOOTHING * *old + (1.0 - RATE_SMOOTHING) * new;
                    }
                }
            } else {
                self.rates = measured;
            }
            let rates = &self.rates;
            let step_s = |shares: &[usize]| {
                shares
                    .iter()
                    .zip(rates)
                    .map(|(&s, &r)| s as f64 / r)
                    .fold(0.0, f64::max)
            };
            if let Ok(new) = balanced_shares(self.cfg.global_batch, rates) {
                if step_s(&new) < (1.0 - MIN_GAIN) * step_s(&self.shares) {
                    decided = new.iter().map(|&s| s as f32).collect();
                }
            }
        } else {
            self.comm.send(0, &mine)?;
        }
        self.comm.broadcast(0, &mut decided)?;
        let decided: Vec<usize> = decided.iter().map(|&s| s as usize).collect();
        if decided != self.shares {
            info!(
                "rank {rank}: batch shares {} (were {})",
                crate::trainer::balance::format_shares(&decided),
                crate::trainer::balance::format_shares(&self.shares)
            );
            self.shares = decided;
        }
        Ok(())
    }

    /// Sets the shares after a restore (see `resume`).
    pub(crate) fn set_shares(&mut self, shares: Vec<usize>) {
        self.shares = shares;
    }

    /// Sets the counters after a restore (see `resume`).
    pub(crate) fn set_position(&mut self, epoch: u64, step: u64) {
        self.epoch = epoch;
        self.step = step;
    }

    pub(crate) fn parts_mut(&mut self) -> (&'c dyn Transport, &mut M, &mut Sgd) {
        (self.comm, &mut self.model, &mut self.sgd)
    }
}

/// The batch builder for `norm`: `slot`'s when it was made for `norm`, a
/// new one otherwise (first use, or another data set).
fn batch_builder(
    slot: Option<BatchBuilder>,
    norm: &Normalizer,
    augment: Option<Augmentation>,
) -> Result<BatchBuilder> {
    match slot {
        Some(b) if b.normalizer() == norm => Ok(b),
        _ => BatchBuilder::new(norm.clone(), augment),
    }
}

/// Errors unless the samples of `data` have the model's input shape
/// `input`: checked before any batch of the data set is built.
fn check_input_shape(data: &Dataset, input: [usize; 3]) -> Result<()> {
    if data.shape() == Shape::from(input) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the data set's samples are {} but the model takes {} inputs: build the model for the \
         data's shape (e.g. Model::from_spec(spec, {:?}, seed))",
        data.shape(),
        Shape::from(input),
        data.shape().to_array()
    )))
}

/// Refuses a data set with more classes than the model has outputs, before
/// any step (a label past the last logit would otherwise stop the run at the
/// first batch that holds one).
fn check_classes(data: &Dataset, model_classes: usize) -> Result<()> {
    if data.num_classes() <= model_classes {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the data set has {} classes but the model gives {model_classes} outputs: its last \
         layer must have at least {} (e.g. linear({}))",
        data.num_classes(),
        data.num_classes(),
        data.num_classes()
    )))
}

/// Refuses crops that would move most of a sample out of view (padding of
/// at least half its height or width: feature vectors `F x 1 x 1`, tiny
/// images), which would train on mostly padding, silently.
fn check_augmentation(data: &Dataset, augment: Option<&Augmentation>) -> Result<()> {
    let Some(a) = augment else { return Ok(()) };
    let s = data.shape();
    if a.pad > 0 && (2 * a.pad >= s.height || 2 * a.pad >= s.width) {
        return Err(Error::invalid(format!(
            "augmentation crops with {} pixels of padding, but the samples are {s}: the crop \
             would leave mostly padding. Crops and flips are for images; train these samples \
             without augmentation (TrainConfig::augment = None) or with a smaller padding",
            a.pad
        )));
    }
    Ok(())
}

/// 64-bit FNV-1a over the bit patterns of `values`.
fn fnv1a(values: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::fnv1a;

    #[test]
    fn hash_sees_single_bit_flips() {
        let a = vec![1.0f32, 2.0, 3.0];
        let mut b = a.clone();
        b[2] = f32::from_bits(b[2].to_bits() ^ 1);
        assert_ne!(fnv1a(&a), fnv1a(&b));
        assert_eq!(fnv1a(&a), fnv1a(&a.clone()));
    }
}
