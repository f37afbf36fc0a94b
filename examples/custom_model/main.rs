//! A model that is not in `ringsgd::nn`, trained data-parallel with the
//! library's trainer: the two-layer perceptron of [`mlp`], written in this
//! example, implements [`ringsgd::model::Trainable`]; everything else
//! (sharding, ring allreduce overlapped with backward, synchronised SGD,
//! replica checks, evaluation, checkpoint, safetensors export) is the
//! library's.
//!
//! ```text
//! # in-process ranks (threads), no MPI needed
//! cargo run --release --example custom_model -- --local-ranks 2
//! # MPI ranks, on one machine or a cluster
//! cargo build --release --example custom_model
//! mpirun -np 2 --bind-to none target/release/examples/custom_model
//! ```
//!
//! It trains on tabular data, `f32` feature vectors (a dataset of shape
//! `features x 1 x 1`, normalised per feature by the library): synthetic
//! Gaussian blobs, one per class, drawn from the seed. It checks itself (replicas bitwise identical every `--verify-every` steps,
//! test accuracy at least `--min-accuracy`, a checkpoint written and
//! restored into a fresh trainer giving the same weights) and ends with
//! `test_accuracy=<fraction>`; exit code 1 on any failure.

mod mlp;

use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringsgd::comm::Transport;
use ringsgd::data::{Dataset, Normalizer, Shape};
use ringsgd::model::Trainable;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{export_safetensors, TrainConfig, Trainer};
use ringsgd::{Error, Result};

#[derive(Parser, Debug)]
#[command(about = "Train a perceptron written outside the library with its data-parallel trainer")]
struct Args {
    /// Run N ranks as threads of this process instead of the MPI world.
    #[arg(long)]
    local_ranks: Option<usize>,
    /// Training samples (synthetic).
    #[arg(long, default_value_t = 4096)]
    train: usize,
    /// Test samples.
    #[arg(long, default_value_t = 1024)]
    test: usize,
    /// Features per sample.
    #[arg(long, default_value_t = 32)]
    features: usize,
    /// Classes.
    #[arg(long, default_value_t = 8)]
    classes: usize,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Global batch (divisible by the number of ranks).
    #[arg(long, default_value_t = 128)]
    global_batch: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Cores per rank.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Seed of the data, the weights and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fail unless the test accuracy reaches this fraction.
    #[arg(long, default_value_t = 0.9)]
    min_accuracy: f64,
    /// Compare the replicas' weights every this many steps (0: never).
    #[arg(long, default_value_t = 10)]
    verify_every: u64,
    /// Also write the trained weights as safetensors here (rank 0).
    #[arg(long)]
    export: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    let result = match args.local_ranks {
        Some(n) => ringsgd::comm::local::run_ranks(n, |comm| train(&comm, &args)).map(|r| r[0]),
        None => run_world(&args),
    };
    match result {
        Ok(Some(acc)) => println!("test_accuracy={acc:.4}"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("custom_model: error: {e}");
            std::process::exit(1);
        }
    }
}

/// The MPI world (one rank without mpirun); the accuracy on rank 0 only.
#[cfg(feature = "mpi")]
fn run_world(args: &Args) -> Result<Option<f64>> {
    let comm = ringsgd::comm::mpi::init()?;
    let result = train(&comm, args).map(|a| a.filter(|_| comm.rank() == 0));
    if let Err(e) = &result {
        if comm.size() > 1 {
            // A peer may wait for this rank: end the job, do not hang.
            eprintln!("custom_model: rank {}: error: {e}", comm.rank());
            comm.abort(1);
        }
    }
    result
}

#[cfg(not(feature = "mpi"))]
fn run_world(args: &Args) -> Result<Option<f64>> {
    ringsgd::comm::local::run_ranks(1, |comm| train(&comm, args)).map(|r| r[0])
}

/// `n` samples of `args.features` features in `args.classes` classes: class
/// `k` is a Gaussian blob (standard deviation 1) around a centre drawn
/// uniformly in `[-1.5, 1.5]` per feature from the seed; `stream` keeps the
/// training and test draws apart. Labels are `i % classes`.
fn blobs(args: &Args, n: usize, stream: u64) -> Result<Dataset> {
    use rand::RngExt;
    let (f, k) = (args.features, args.classes);
    let mut centres = ChaCha8Rng::seed_from_u64(args.seed);
    let centre: Vec<f32> = (0..f * k)
        .map(|_| centres.random_range(-1.5f32..1.5))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ (stream << 32));
    let mut x = Vec::with_capacity(n * f);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % k;
        for j in 0..f {
            // Box-Muller: a standard normal from two uniforms.
            let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random_range(0.0..1.0));
            let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            x.push(centre[c * f + j] + z);
        }
        labels.push(c as u8);
    }
    Dataset::new(Shape::new(f, 1, 1), x, labels, k)
}

/// Trains, evaluates and checks; the test accuracy (the same on every rank).
fn train(comm: &dyn Transport, args: &Args) -> Result<Option<f64>> {
    let root = comm.rank() == 0;
    // Every rank makes the same data from the seed (a real job loads its
    // files on each rank the same way).
    let train = blobs(args, args.train, 1)?;
    let test = blobs(args, args.test, 2)?;
    let norm = Normalizer::from_dataset(&train)?;
    let input = [args.features, 1, 1];
    let model = mlp::Mlp::new(input, args.hidden, args.classes, args.seed)?;
    let mut cfg = TrainConfig::pinet_defaults(args.global_batch, args.epochs);
    cfg.seed = args.seed;
    // Crops and flips are for images, not feature vectors.
    cfg.augment = None;
    cfg.verify_every = (args.verify_every > 0).then_some(args.verify_every);
    let pool = ComputePool::new(args.cores)?;
    let mut trainer = Trainer::new(comm, pool, model, cfg.clone())?;
    if root {
        println!(
            "custom_model: {} on {} rank(s), {} parameters, {} train / {} test samples, global \
             batch {}",
            trainer.model().identity(),
            comm.size(),
            trainer.model().num_params(),
            train.len(),
            test.len(),
            args.global_batch
        );
    }
    let mut accuracy = 0.0;
    while !trainer.finished() {
        let mut report = trainer.train_epoch(&train, &norm, &mut |_| {})?;
        let eval = trainer.evaluate(&test, &norm)?;
        accuracy = eval.accuracy;
        report.test = Some(eval);
        if root {
            println!(
                "epoch {} train_loss {:.4} train_acc {:.4} test_acc {:.4} img/s {:.0} \
                 (compute {:.2}s, allreduce {:.2}s of which hidden {:.2}s)",
                report.epoch,
                report.train_loss,
                report.train_accuracy,
                accuracy,
                report.images_per_sec,
                report.times.compute,
                report.times.allreduce,
                report.times.hidden
            );
        }
    }
    trainer.verify_replicas()?;
    // A checkpoint restored into a fresh trainer gives the same weights.
    let ckpt = trainer.to_checkpoint();
    let fresh = mlp::Mlp::new(input, args.hidden, args.classes, args.seed + 1)?;
    let mut restored = Trainer::new(comm, ComputePool::new(1)?, fresh, cfg)?;
    restored.restore_from_root(root.then(|| Ok(ckpt.clone())))?;
    if restored.weights_hash() != trainer.weights_hash() {
        return Err(Error::invalid(
            "the restored trainer's weights differ from the checkpoint's",
        ));
    }
    if let Some(path) = &args.export {
        trainer.on_root(|t| export_safetensors(t.model(), path))?;
    }
    if accuracy < args.min_accuracy {
        return Err(Error::invalid(format!(
            "test accuracy {accuracy:.4} is below --min-accuracy {}",
            args.min_accuracy
        )));
    }
    Ok(Some(accuracy))
}
