//! Data sets of any shape: loading, normalisation, augmentation and
//! sharding.
//!
//! A [`Dataset`] holds labelled samples of one [`Shape`] (channels x height
//! x width), as `u8` pixels or `f32` values ([`Samples`]), with its class
//! count. Loaders, each validating its files and naming the file and record
//! of any error:
//!
//! * [`cifar::load`]: CIFAR-10, binary version (folder or `.tar.gz`);
//!   [`download::fetch_archive`] fetches the archive first when asked
//!   (opt-in);
//! * [`cifar100::load`]: CIFAR-100, binary version (fine or coarse labels);
//! * [`mnist::load`]: MNIST or Fashion-MNIST IDX files, each optionally
//!   gzipped ([`idx`] reads and writes the format).
//!
//! Each returns a [`DataSplits`] (training set, test set, class names).
//! [`synthetic`] makes learnable stand-in data of any shape.
//!
//! The pipeline, as the trainer uses it:
//!
//! 1. A loader (or your own code, through [`Dataset::new`]) gives the data.
//! 2. [`Normalizer::from_dataset`] computes per-channel statistics of the
//!    training set.
//! 3. A [`ShardPlan`] gives, for every epoch and step, the dataset indices
//!    this rank processes: all ranks draw the same [`epoch_permutation`] from
//!    the shared seed and take disjoint contiguous parts ([`shard_range`]) of
//!    each global batch, without communicating.
//! 4. A [`BatchBuilder`] turns a [`StepShard`] into a normalised `f32` NCHW
//!    batch in reused buffers, applying the seeded [`Augmentation`] (random
//!    crop with padding, optional horizontal flip, for any shape).
//!
//! # Determinism
//!
//! All randomness here is counter-based: the epoch permutation is a function
//! of `(seed, epoch)` and a sample's crop and flip a function of `(seed,
//! epoch, position in the permutation)`, each drawn from a ChaCha8 stream
//! keyed by those values (little-endian `seed`, a purpose tag, the epoch,
//! and the constant `b"RINGSGD1"`, with the position as the ChaCha stream
//! number). So `(seed, epoch, step)` is the complete state of the data
//! pipeline: a run resumed at a step boundary, with any world size, sees
//! the same global batches with the same augmentation as an uninterrupted
//! run, and rank `r` augments its shard exactly as a 1-rank run would.
//!
//! ```
//! use ringsgd::data::{synthetic, Augmentation, BatchBuilder, Normalizer, ShardPlan};
//! # fn main() -> ringsgd::Result<()> {
//! let train = synthetic::generate(100, 7);
//! let norm = Normalizer::from_dataset(&train)?;
//! let mut builder = BatchBuilder::new(norm, Some(Augmentation::standard()))?;
//! // Rank 0 of 2, global batch 32, keep the last partial batch.
//! let plan = ShardPlan::new(train.len(), 32, false, 7, 0, 2)?;
//! for epoch in 0..2 {
//!     let shards = plan.epoch(epoch);
//!     for step in 0..shards.steps() {
//!         let shard = shards.step(step)?;
//!         let batch = builder.fill_shard(&train, &shard)?;
//!         assert_eq!(batch.images.shape()[0], shard.len());
//!         // forward/backward on batch.images, weight gradients by shard.weight() ...
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod augment;
mod batch;
pub mod cifar;
pub mod cifar100;
mod dataset;
pub mod download;
mod identity;
pub mod idx;
pub mod mnist;
mod normalize;
mod rng;
mod shard;
pub mod synthetic;

pub use augment::{Augmentation, SampleAugment, MAX_PAD};
pub use batch::{Batch, BatchBuilder};
pub use dataset::{
    CifarData, DataSplits, Dataset, SampleRef, Samples, Shape, CHANNELS, CLASS_NAMES, HEIGHT,
    IMAGE_BYTES, NUM_CLASSES, WIDTH,
};
pub use identity::DataIdentity;
pub use normalize::Normalizer;
pub use shard::{
    epoch_permutation, shard_counts, shard_range, steps_per_epoch, EpochShards, ShardPlan,
    StepShard,
};
