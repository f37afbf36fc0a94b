//! Epoch permutations and communication-free sharding of global batches.
//!
//! Every rank computes the same permutation of the training set for each
//! epoch from the shared seed ([`epoch_permutation`]), cuts it into global
//! batches of `global_batch` positions, and takes its own contiguous part of
//! each global batch ([`shard_range`]). No messages are needed, and the
//! global batches do not depend on the world size: a run resumed with a
//! different number of ranks follows the same sequence of global batches.
//!
//! # Splitting rule
//!
//! A global batch of `len` samples is split over `size` ranks as evenly as
//! possible: with `q = len / size` and `r = len % size`, ranks `0..r` take
//! `q + 1` samples and ranks `r..size` take `q`, in rank order. Shards are
//! therefore uneven when `size` does not divide `len`; [`StepShard::counts`]
//! gives every rank's count so that gradients can be weighted by
//! `count / len` (the average over the global batch is then exact).
//!
//! # The last partial batch
//!
//! When `global_batch` does not divide the dataset length, the last `n %
//! global_batch` positions of the permutation either form one smaller final
//! global batch (`drop_last = false`; it is split by the same rule, so a
//! rank may get zero samples when fewer than `size` remain) or are skipped
//! for that epoch (`drop_last = true`). Since the permutation changes every
//! epoch, dropped samples differ from epoch to epoch.

use std::ops::Range;

use super::rng::{below, stream_rng, PERMUTATION};
use crate::{Error, Result};

/// The permutation of `0..n` used in `epoch` (0-based) for `seed`.
///
/// Fisher-Yates from the last position down, with `j` drawn uniformly in
/// `0..=i` from a [`ChaCha8Rng`](rand_chacha::ChaCha8Rng) keyed by
/// `(seed, "permute", epoch)` (see the crate's `data::rng` notes in the
/// [`data`](crate::data) docs). The same on every rank and platform.
///
/// ```
/// use ringsgd::data::epoch_permutation;
/// let p = epoch_permutation(10, 42, 0);
/// let mut sorted = p.clone();
/// sorted.sort();
/// assert_eq!(sorted, (0..10).collect::<Vec<_>>());
/// assert_eq!(p, epoch_permutation(10, 42, 0));
/// assert_ne!(p, epoch_permutation(10, 42, 1));
/// ```
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng = stream_rng(seed, PERMUTATION, epoch, 0);
    for i in (1..n).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

/// Number of optimiser steps in one epoch of `n` samples with global batches
/// of `global_batch`: `n / global_batch` with `drop_last`, otherwise
/// `ceil(n / global_batch)`. Returns 0 when `global_batch` is 0.
pub fn steps_per_epoch(n: usize, global_batch: usize, drop_last: bool) -> usize {
    if global_batch == 0 {
        0
    } else if drop_last {
        n / global_batch
    } else {
        n.div_ceil(global_batch)
    }
}

/// The part of a global batch of `global_batch_len` samples that `rank` (of
/// `size`) takes, as a range of positions within the global batch.
///
/// Ranks `0..r` (with `r = len % size`) get one sample more than the others;
/// the ranges of all ranks are disjoint, in rank order, and cover `0..len`.
/// A range is empty when `len < size` and `rank >= len`.
///
/// Errors when `size == 0` or `rank >= size`.
///
/// ```
/// use ringsgd::data::shard_range;
/// assert_eq!(shard_range(10, 0, 4)?, 0..3);
/// assert_eq!(shard_range(10, 1, 4)?, 3..6);
/// assert_eq!(shard_range(10, 2, 4)?, 6..8);
/// assert_eq!(shard_range(10, 3, 4)?, 8..10);
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn shard_range(global_batch_len: usize, rank: usize, size: usize) -> Result<Range<usize>> {
    if size == 0 {
        return Err(Error::invalid("world size must be at least 1, got 0"));
    }
    if rank >= size {
        return Err(Error::invalid(format!(
            "rank {rank} out of range for world size {size}"
        )));
    }
    let q = global_batch_len / size;
    let r = global_batch_len % size;
    let start = rank * q + rank.min(r);
    let len = q + usize::from(rank < r);
    Ok(start..start + len)
}

/// How many samples each of `size` ranks takes from a global batch of `len`
/// (the lengths of the [`shard_range`]s).
pub fn shard_counts(len: usize, size: usize) -> Vec<usize> {
    if size == 0 {
        return Vec::new();
    }
    (0..size)
        .map(|rank| len / size + usize::from(rank < len % size))
        .collect()
}

/// The sharding of a training set for one rank: which dataset indices it
/// processes at every step of every epoch.
///
/// ```
/// use ringsgd::data::ShardPlan;
/// // 10 samples, global batch 4, keep the partial last batch, rank 1 of 2.
/// let plan = ShardPlan::new(10, 4, false, 7, 1, 2)?;
/// assert_eq!(plan.steps_per_epoch(), 3);
/// let epoch = plan.epoch(0);
/// let step = epoch.step(2)?;            // last, partial global batch: 2 samples
/// assert_eq!(step.global_len, 2);
/// assert_eq!(step.counts(), vec![1, 1]);
/// assert_eq!(step.positions, 9..10);    // positions in the epoch permutation
/// assert_eq!(step.indices, &epoch.permutation()[9..10]);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    len: usize,
    global_batch: usize,
    drop_last: bool,
    seed: u64,
    rank: usize,
    world_size: usize,
}

impl ShardPlan {
    /// A plan for a dataset of `dataset_len` samples, global batches of
    /// `global_batch` samples, the given last-batch policy and seed, seen
    /// from `rank` of `world_size`.
    ///
    /// Errors (naming the value) when `world_size` is 0, `rank >=
    /// world_size`, `global_batch` is 0 or smaller than `world_size` (every
    /// rank must get at least one sample of a full batch), or the epoch
    /// would have no step (`dataset_len` is 0, or smaller than
    /// `global_batch` with `drop_last`).
    pub fn new(
        dataset_len: usize,
        global_batch: usize,
        drop_last: bool,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<Self> {
        shard_range(0, rank, world_size)?;
        if global_batch == 0 {
            return Err(Error::invalid(
                "global batch size must be at least 1, got 0",
            ));
        }
        if global_batch < world_size {
            return Err(Error::invalid(format!(
                "global batch size {global_batch} is smaller than the world size {world_size}: \
                 every rank needs at least one sample per batch"
            )));
        }
        if steps_per_epoch(dataset_len, global_batch, drop_last) == 0 {
            return Err(Error::invalid(format!(
                "an epoch of {dataset_len} samples has no step with global batch {global_batch} \
                 (drop_last = {drop_last})"
            )));
        }
        Ok(ShardPlan {
            len: dataset_len,
            global_batch,
            drop_last,
            seed,
            rank,
            world_size,
        })
    }

    /// The dataset length.
    pub fn dataset_len(&self) -> usize {
        self.len
    }

    /// The global batch size.
    pub fn global_batch(&self) -> usize {
        self.global_batch
    }

    /// Whether the partial last global batch of an epoch is skipped.
    pub fn drop_last(&self) -> bool {
        self.drop_last
    }

    /// The shared seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Steps (global batches) per epoch; see [`steps_per_epoch`].
    pub fn steps_per_epoch(&self) -> usize {
        steps_per_epoch(self.len, self.global_batch, self.drop_last)
    }

    /// The same plan seen from another rank or world size (for resuming
    /// with a different number of ranks).
    pub fn with_rank(&self, rank: usize, world_size: usize) -> Result<Self> {
        ShardPlan::new(
            self.len,
            self.global_batch,
            self.drop_last,
            self.seed,
            rank,
            world_size,
        )
    }

    /// The shards of `epoch` (computes the epoch permutation once: O(n)).
    pub fn epoch(&self, epoch: u64) -> EpochShards {
        EpochShards {
            plan: *self,
            epoch,
            perm: epoch_permutation(self.len, self.seed, epoch),
        }
    }
}

/// One epoch of a [`ShardPlan`]: the epoch permutation and its global
/// batches.
#[derive(Clone, Debug)]
pub struct EpochShards {
    plan: ShardPlan,
    epoch: u64,
    perm: Vec<usize>,
}

impl EpochShards {
    /// The epoch number (0-based).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The plan this epoch belongs to.
    pub fn plan(&self) -> &ShardPlan {
        &self.plan
    }

    /// The permutation of dataset indices for this epoch.
    pub fn permutation(&self) -> &[usize] {
        &self.perm
    }

    /// Steps in this epoch.
    pub fn steps(&self) -> usize {
        self.plan.steps_per_epoch()
    }

    /// Positions (in the epoch permutation) of global batch `step`.
    ///
    /// Errors when `step >= self.steps()`.
    pub fn global_positions(&self, step: usize) -> Result<Range<usize>> {
        if step >= self.steps() {
            return Err(Error::invalid(format!(
                "step {step} out of range: epoch {} has {} steps",
                self.epoch,
                self.steps()
            )));
        }
        let gb = self.plan.global_batch;
        let start = step * gb;
        Ok(start..(start + gb).min(self.plan.len))
    }

    /// This rank's share of global batch `step` (0-based within the epoch).
    ///
    /// Errors when `step >= self.steps()`.
    pub fn step(&self, step: usize) -> Result<StepShard<'_>> {
        let global = self.global_positions(step)?;
        let local = shard_range(global.len(), self.plan.rank, self.plan.world_size)?;
        let positions = global.start + local.start..global.start + local.end;
        Ok(StepShard {
            seed: self.plan.seed,
            epoch: self.epoch,
            step,
            rank: self.plan.rank,
            world_size: self.plan.world_size,
            global_len: global.len(),
            indices: &self.perm[positions.clone()],
            positions,
            shares: None,
        })
    }
}

impl EpochShards {
    /// This rank's part of global batch `step` when the ranks take the
    /// given `shares` of it (in rank order, contiguous; they must sum to
    /// the global batch's length). With equal shares this is
    /// [`step`](Self::step); unequal ones let fast ranks take more
    /// (`trainer::Balance`).
    ///
    /// Errors when `step` is out of range, or `shares` has not one entry
    /// per rank or does not sum to the global batch.
    pub fn step_with_shares(&self, step: usize, shares: &[usize]) -> Result<StepShard<'_>> {
        let global = self.global_positions(step)?;
        let p = self.plan.world_size;
        if shares.len() != p || shares.iter().sum::<usize>() != global.len() {
            return Err(Error::invalid(format!(
                "shares {shares:?} do not split a global batch of {} over {p} ranks",
                global.len()
            )));
        }
        let before: usize = shares[..self.plan.rank].iter().sum();
        let start = global.start + before;
        let positions = start..start + shares[self.plan.rank];
        Ok(StepShard {
            seed: self.plan.seed,
            epoch: self.epoch,
            step,
            rank: self.plan.rank,
            world_size: p,
            global_len: global.len(),
            indices: &self.perm[positions.clone()],
            positions,
            shares: Some(shares.to_vec()),
        })
    }
}

/// What one rank processes at one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepShard<'a> {
    /// The shared seed (also keys the augmentation).
    pub seed: u64,
    /// The epoch (0-based).
    pub epoch: u64,
    /// The step within the epoch (0-based).
    pub step: usize,
    /// This rank.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    /// Samples in the whole global batch (all ranks).
    pub global_len: usize,
    /// Positions of this rank's samples in the epoch permutation (contiguous);
    /// sample `k` of the shard has position `positions.start + k`, which keys
    /// its augmentation.
    pub positions: Range<usize>,
    /// Dataset indices of this rank's samples, in order.
    pub indices: &'a [usize],
    /// Every rank's samples when the split is not the equal rule
    /// ([`EpochShards::step_with_shares`]); `None`: [`shard_counts`].
    pub shares: Option<Vec<usize>>,
}

impl StepShard<'_> {
    /// Number of samples this rank processes.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True when this rank has no sample at this step (only possible in a
    /// final partial batch smaller than the world size).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Samples of every rank at this step (sums to `global_len`).
    pub fn counts(&self) -> Vec<usize> {
        match &self.shares {
            Some(s) => s.clone(),
            None => shard_counts(self.global_len, self.world_size),
        }
    }

    /// Samples of `rank` at this step (0 for a rank outside the world).
    pub fn count_of(&self, rank: usize) -> usize {
        if let Some(s) = &self.shares {
            return s.get(rank).copied().unwrap_or(0);
        }
        shard_range(self.global_len, rank, self.world_size)
            .map(|r| r.len())
            .unwrap_or(0)
    }

    /// This rank's weight in the global-batch average: `len / global_len`.
    /// Scaling each rank's mean gradient by its weight and summing over
    /// ranks gives the mean gradient over the global batch.
    pub fn weight(&self) -> f64 {
        if self.global_len == 0 {
            0.0
        } else {
            self.len() as f64 / self.global_len as f64
        }
    }
}
