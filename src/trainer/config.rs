//! What a training run is asked to do, validated at the boundary.

use crate::collectives::{Algorithm, Wire};
use crate::comm::watch::PeerTimeout;
use crate::data::Augmentation;
use crate::error::{Error, Result};
use crate::optim::{LrSchedule, SgdConfig};
use crate::trainer::balance::Balance;

/// Settings of a data-parallel training run.
///
/// Every rank must be given the same configuration; [`Trainer::new`]
/// (crate::trainer::Trainer::new) checks that they agree and fails on every
/// rank otherwise.
///
/// The global batch is fixed independently of the number of ranks: each of
/// `p` ranks computes the gradient of `global_batch / p` images, so runs on
/// 1, 2, 3 or 4 nodes follow the same optimisation. `global_batch` must
/// therefore be a multiple of the world size. The last partial global batch of
/// an epoch is dropped (at most `global_batch - 1` images an epoch), so every
/// step sees a full global batch.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Images per optimiser step, summed over all ranks.
    pub global_batch: usize,
    /// Number of passes over the training set.
    pub epochs: u64,
    /// Stop after this many optimiser steps in total (for quick runs), even
    /// in the middle of an epoch.
    pub max_steps: Option<u64>,
    /// Learning rate at the top of the schedule.
    pub base_lr: f32,
    /// Learning-rate schedule over global steps.
    pub schedule: LrSchedule,
    /// Momentum, weight decay, Nesterov (the learning rate is `base_lr`
    /// and the schedule).
    pub sgd: SgdConfig,
    /// Gradient-averaging algorithm.
    pub algorithm: Algorithm,
    /// Number format of gradient values on the wire (ring only; partial
    /// sums are always `f32`). 16 bits halve the bytes each step moves.
    pub wire: Wire,
    /// Overlap of the gradient allreduce with backward: `Some(b)` cuts the
    /// gradient into buckets of at least `b` bytes, in the order backward
    /// produces them (last layer first), and reduces each while backward
    /// goes on with the earlier layers; `None` reduces the whole gradient
    /// after backward. Ring only. The bucket layout is part of what makes a
    /// run bitwise reproducible (it decides how the sums are grouped).
    pub bucket_bytes: Option<usize>,
    /// Seed of the initial weights, the data order and the augmentation.
    pub seed: u64,
    /// Augmentation of training samples (`None`: none). The data set
    /// decides what suits it: [`Augmentation::standard`] (random crop with
    /// 4-pixel padding and horizontal flip) for CIFAR, a crop without flip
    /// ([`Augmentation::crop`]) for digits. It works for any sample shape.
    pub augment: Option<Augmentation>,
    /// Hash the weights on every rank every this many steps and fail on
    /// drift (`None`: never).
    pub verify_every: Option<u64>,
    /// Images per forward pass when evaluating (per rank). The model's
    /// workspaces grow to the largest batch they see, so a value no larger
    /// than the per-rank training batch keeps memory at its training peak.
    pub eval_batch: usize,
    /// Deadline for waiting on peers (see [`crate::comm::watch`]): a rank
    /// that stops answering ends the job, named, within seconds. `None`:
    /// wait as long as it takes. Not part of [`TrainConfig::canonical`]
    /// (it does not change the optimisation: a run may resume with another
    /// timeout), but all ranks must still agree on it.
    pub peer_timeout: Option<PeerTimeout>,
    /// How the global batch is split over the ranks: equal shares, or
    /// shares that follow each rank's measured speed (see
    /// [`Balance`]).
    pub balance: Balance,
}

impl TrainConfig {
    /// Default bucket size of the overlapped allreduce: 1 MiB, which puts
    /// PiNet's two fully connected layers (4.2 MB, ready first) in one
    /// bucket and its convolutions (262 KB, ready last) in another. PiNet
    /// training, 1 core per rank, virtual 1 Gbit cluster: 2 ranks 920 vs
    /// 797 images/s without overlap; 4 ranks sharing 2 cores 629 vs 634
    /// (README, "Gradients reduced while backward runs").
    pub const DEFAULT_BUCKET_BYTES: usize = 1 << 20;

    /// PiNet's reference settings for a global batch `global_batch`:
    /// SGD momentum 0.9, weight decay 5e-4, lr = 0.05 x batch / 128, cosine
    /// schedule over `epochs`, [`Augmentation::standard`], ring allreduce overlapped
    /// with backward in buckets of [`DEFAULT_BUCKET_BYTES`](Self::DEFAULT_BUCKET_BYTES).
    ///
    /// ```
    /// # use ringsgd::trainer::TrainConfig;
    /// let cfg = TrainConfig::pinet_defaults(128, 30);
    /// assert_eq!(cfg.base_lr, 0.05);
    /// ```
    pub fn pinet_defaults(global_batch: usize, epochs: u64) -> Self {
        TrainConfig {
            global_batch,
            epochs,
            max_steps: None,
            base_lr: 0.05 * global_batch as f32 / 128.0,
            schedule: LrSchedule::Cosine {
                warmup_steps: 0,
                total_steps: 0,
            },
            sgd: SgdConfig {
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: false,
            },
            algorithm: Algorithm::Ring,
            wire: Wire::F32,
            bucket_bytes: Some(TrainConfig::DEFAULT_BUCKET_BYTES),
            seed: 0,
            augment: Some(Augmentation::standard()),
            verify_every: None,
            eval_batch: global_batch.clamp(1, 128),
            peer_timeout: Some(PeerTimeout::default()),
            balance: Balance::Off,
        }
    }

    /// Checks the settings on their own and against the world size.
    pub fn validate(&self, world_size: usize) -> Result<()> {
        if self.global_batch == 0 {
            return Err(Error::invalid("global batch must be at least 1"));
        }
        if self.global_batch % world_size != 0 {
            let lo = self.global_batch / world_size * world_size;
            let hi = lo + world_size;
            let lo = if lo == 0 { hi } else { lo };
            return Err(Error::invalid(format!(
                "global batch {} is not divisible by the {world_size} ranks; use a multiple of \
                 {world_size} such as {lo} or {hi}",
                self.global_batch
            )));
        }
        if self.eval_batch == 0 {
            return Err(Error::invalid("eval batch must be at least 1"));
        }
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return Err(Error::invalid(format!(
                "learning rate must be a positive number, got {}",
                self.base_lr
            )));
        }
        if let LrSchedule::Step { .. } = self.schedule {
            // Checked here rather than at the first decay, epochs later.
            // (A cosine schedule gets its length from the trainer.)
            self.schedule.validate()?;
        }
        if self.wire != Wire::F32 && self.algorithm != Algorithm::Ring {
            return Err(Error::invalid(format!(
                "wire format {} needs the ring allreduce (the {} allreduce moves f32)",
                self.wire, self.algorithm
            )));
        }
        if self.bucket_bytes.is_some() && self.algorithm != Algorithm::Ring {
            return Err(Error::invalid(format!(
                "overlapping the allreduce with backward needs the ring allreduce, not {}",
                self.algorithm
            )));
        }
        if self.bucket_bytes == Some(0) {
            return Err(Error::invalid("bucket size must be at least 1 byte"));
        }
        if let Balance::Auto {
            every_steps: Some(0),
        } = self.balance
        {
            return Err(Error::invalid("balance every 0 steps: give at least 1"));
        }
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        if self.verify_every == Some(0) {
            return Err(Error::invalid("verify-every must be at least 1"));
        }
        // A run of 0 epochs is over before it starts, whatever max_steps
        // says: refused rather than a silent no-op.
        if self.epochs == 0 {
            return Err(Error::invalid("epochs must be at least 1"));
        }
        if self.max_steps == Some(0) {
            return Err(Error::invalid("max_steps must be at least 1"));
        }
        Ok(())
    }

    /// Images each of `world_size` ranks computes per step.
    pub fn per_rank_batch(&self, world_size: usize) -> usize {
        self.global_batch / world_size
    }

    /// Every setting that changes the optimisation as `(name, value)`, for
    /// the cross-rank agreement check (which names the settings that
    /// differ) and for checkpoints. Floats are shown as Rust writes them,
    /// which round-trips exactly, so equal text means equal bits.
    pub fn entries(&self) -> Vec<(String, Option<String>)> {
        let e = |k: &str, v: String| (k.to_string(), Some(v));
        vec![
            e("global_batch", self.global_batch.to_string()),
            e("epochs", self.epochs.to_string()),
            e("max_steps", format!("{:?}", self.max_steps)),
            e("base_lr", format!("{:?}", self.base_lr)),
            e("schedule", self.schedule.to_string()),
            e("momentum", format!("{:?}", self.sgd.momentum)),
            e("weight_decay", format!("{:?}", self.sgd.weight_decay)),
            e("nesterov", self.sgd.nesterov.to_string()),
            e("algorithm", self.algorithm.to_string()),
            e("seed", self.seed.to_string()),
            e("augment", self.augment_label()),
            e("verify_every", format!("{:?}", self.verify_every)),
            e("eval_batch", self.eval_batch.to_string()),
        ]
        .into_iter()
        // Listed only when not the former fixed behaviour, so that the
        // identity of earlier runs (and their checkpoints) is unchanged.
        .chain((self.wire != Wire::F32).then(|| e("wire", self.wire.to_string())))
        .chain(self.bucket_bytes.map(|b| e("bucket_bytes", b.to_string())))
        .chain((self.balance != Balance::Off).then(|| e("balance", self.balance.to_string())))
        .collect()
    }

    /// The augmentation as the identity names it: `true` for
    /// [`Augmentation::standard`] and `false` for none (what runs and
    /// checkpoints said before the policy became a setting), otherwise
    /// `pad=P,hflip=B`.
    ///
    /// ```
    /// use ringsgd::data::Augmentation;
    /// use ringsgd::trainer::TrainConfig;
    /// let mut cfg = TrainConfig::pinet_defaults(128, 1);
    /// assert_eq!(cfg.augment_label(), "true");
    /// cfg.augment = Some(Augmentation::crop(2));
    /// assert_eq!(cfg.augment_label(), "pad=2,hflip=false");
    /// ```
    pub fn augment_label(&self) -> String {
        match self.augment {
            None => "false".to_string(),
            Some(a) if a == Augmentation::standard() => "true".to_string(),
            Some(a) => format!("pad={},hflip={}", a.pad, a.hflip),
        }
    }

    /// [`entries`](Self::entries) as one line of `name=value`.
    pub fn canonical(&self) -> String {
        self.entries()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_must_divide_world() {
        let cfg = TrainConfig::pinet_defaults(128, 1);
        assert!(cfg.validate(4).is_ok());
        let err = cfg.validate(3).unwrap_err().to_string();
        assert!(
            err.contains("128") && err.contains("126") && err.contains("129"),
            "{err}"
        );
    }

    #[test]
    fn zero_batch_rejected() {
        let cfg = TrainConfig::pinet_defaults(0, 1);
        assert!(cfg
            .validate(1)
            .unwrap_err()
            .to_string()
            .contains("global batch"));
    }

    #[test]
    fn step_schedule_checked_up_front() {
        let mut cfg = TrainConfig::pinet_defaults(64, 2);
        for gamma in [f32::NAN, 0.0, -0.5, 2.0, f32::INFINITY] {
            cfg.schedule = LrSchedule::Step {
                every_steps: 10,
                gamma,
            };
            let e = cfg.validate(1).unwrap_err().to_string();
            assert!(e.contains("gamma"), "{gamma}: {e}");
        }
        cfg.schedule = LrSchedule::Step {
            every_steps: 10,
            gamma: 0.1,
        };
        cfg.validate(1).unwrap();
    }

    #[test]
    fn runs_that_would_do_nothing_are_refused() {
        let mut cfg = TrainConfig::pinet_defaults(64, 0);
        cfg.max_steps = Some(2);
        let e = cfg.validate(1).unwrap_err().to_string();
        assert!(e.contains("epochs"), "{e}");
        let mut cfg = TrainConfig::pinet_defaults(64, 1);
        cfg.max_steps = Some(0);
        let e = cfg.validate(1).unwrap_err().to_string();
        assert!(e.contains("max_steps"), "{e}");
    }

    #[test]
    fn canonical_differs_when_settings_differ() {
        let a = TrainConfig::pinet_defaults(64, 2);
        let mut b = a.clone();
        b.seed = 7;
        assert_ne!(a.canonical(), b.canonical());
        let mut c = a.clone();
        c.augment = Some(Augmentation::crop(4));
        assert_ne!(a.canonical(), c.canonical());
        c.augment = None;
        assert!(c.canonical().contains("augment=false"), "{}", c.canonical());
        assert!(a.canonical().contains("augment=true"), "{}", a.canonical());
        assert_eq!(a.canonical(), a.clone().canonical());
    }
}
