//! The trainer over models that are not the crate's CNN: the example's MLP
//! (`examples/custom_model/mlp.rs`, compiled in here) and a bare softmax
//! regression that implements only the required methods of `Trainable`.

#[path = "../examples/custom_model/mlp.rs"]
mod mlp;

use ndarray::{Array4, ArrayView4};
use ringsgd::comm::local::run_ranks;
use ringsgd::data::{synthetic, Dataset, Normalizer};
use ringsgd::model::{BatchStats, GradSink, Trainable};
use ringsgd::nn::softmax_cross_entropy;
use ringsgd::optim::LrSchedule;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{export_safetensors, TrainConfig, Trainer};

fn data() -> (Dataset, Dataset, Normalizer) {
    let train = synthetic::generate_split(1024, 5, 0);
    let test = synthetic::generate_split(256, 5, 1);
    let norm = Normalizer::from_dataset(&train).unwrap();
    (train, test, norm)
}

fn cfg(global_batch: usize, epochs: u64) -> TrainConfig {
    let mut c = TrainConfig::pinet_defaults(global_batch, epochs);
    c.seed = 3;
    c.verify_every = Some(1);
    c
}

/// Softmax regression with only the required methods: the trait's defaults
/// (one gradient part, one `params` tensor) are what the trainer uses.
struct Softmax {
    features: usize,
    params: Vec<f32>,
    grads: Vec<f32>,
    logits: Vec<f32>,
    /// When set, `train_step_with` hands over nothing (a broken model).
    silent: bool,
}

const CLASSES: usize = 10;

impl Softmax {
    fn new(features: usize) -> Softmax {
        let n = CLASSES * features + CLASSES;
        Softmax {
            features,
            params: (0..n).map(|i| ((i * 7919) % 13) as f32 * 1e-3).collect(),
            grads: vec![0.0; n],
            logits: Vec::new(),
            silent: false,
        }
    }

    fn forward(&mut self, x: &[f32]) {
        let f = self.features;
        let b = x.len() / f;
        self.logits.resize(b * CLASSES, 0.0);
        for (xi, zi) in x.chunks_exact(f).zip(self.logits.chunks_exact_mut(CLASSES)) {
            for (j, z) in zi.iter_mut().enumerate() {
                let w = &self.params[j * f..(j + 1) * f];
                *z = self.params[CLASSES * f + j]
                    + w.iter().zip(xi).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }
}

impl Trainable for Softmax {
    fn identity(&self) -> String {
        format!("softmax({})", self.features)
    }
    fn input_shape(&self) -> [usize; 3] {
        [3, 32, 32]
    }
    fn num_classes(&self) -> usize {
        CLASSES
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn grads(&self) -> &[f32] {
        &self.grads
    }
    fn params_and_grads_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.params, &mut self.grads)
    }
    fn train_step(
        &mut self,
        _pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> ringsgd::Result<BatchStats> {
        let x = input.as_slice().unwrap();
        let f = self.features;
        self.forward(x);
        let mut dz = vec![0.0; self.logits.len()];
        let stats = softmax_cross_entropy(&self.logits, labels, CLASSES, Some(&mut dz))?;
        self.grads.fill(0.0);
        for (xi, di) in x.chunks_exact(f).zip(dz.chunks_exact(CLASSES)) {
            for (j, &d) in di.iter().enumerate() {
                for (g, &v) in self.grads[j * f..(j + 1) * f].iter_mut().zip(xi) {
                    *g += d * v;
                }
                self.grads[CLASSES * f + j] += d;
            }
        }
        Ok(stats)
    }
    fn train_step_with(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
        on_grads: &mut GradSink<'_>,
    ) -> ringsgd::Result<BatchStats> {
        let stats = self.train_step(pool, input, labels)?;
        if !self.silent {
            on_grads(0, &self.grads);
        }
        Ok(stats)
    }
    fn evaluate(
        &mut self,
        _pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> ringsgd::Result<BatchStats> {
        self.forward(input.as_slice().unwrap());
        softmax_cross_entropy(&self.logits, labels, CLASSES, None)
    }
}

/// (weights hash, final train loss, test accuracy) of each rank.
fn train_mlp(ranks: usize, cfg: TrainConfig, cores: usize) -> Vec<(u64, f64, f64)> {
    let (train, test, norm) = data();
    run_ranks(ranks, |comm| {
        let model = mlp::Mlp::new([3, 32, 32], 32, 10, 1)?;
        let mut t = Trainer::new(&comm, ComputePool::new(cores)?, model, cfg.clone())?;
        let mut loss = 0.0;
        while !t.finished() {
            loss = t.train_epoch(&train, &norm, &mut |_| {})?.train_loss;
        }
        let acc = t.evaluate(&test, &norm)?.accuracy;
        Ok((t.weights_hash(), loss, acc))
    })
    .unwrap()
}

#[test]
fn a_custom_model_trains_data_parallel() {
    let runs = train_mlp(2, cfg(64, 2), 1);
    assert_eq!(runs[0], runs[1], "ranks disagree");
    let (_, loss, acc) = runs[0];
    assert!(loss < 0.5, "train loss {loss}");
    assert!(acc > 0.85, "test accuracy {acc}");
}

#[test]
fn overlapped_and_whole_gradient_reduce_agree_bitwise_on_two_ranks() {
    // Two ranks: each sum has two terms, so the bucket layout cannot change
    // a bit; the MLP hands its gradient over in two parts.
    let mut whole = cfg(64, 1);
    whole.bucket_bytes = None;
    let mut parts = cfg(64, 1);
    parts.bucket_bytes = Some(4);
    let a = train_mlp(2, whole, 1);
    let b = train_mlp(2, parts, 1);
    assert_eq!(a[0], b[0]);
    // And the core count changes nothing either.
    let mut two_cores = cfg(64, 1);
    two_cores.bucket_bytes = Some(4);
    assert_eq!(train_mlp(2, two_cores, 2)[0], b[0]);
}

#[test]
fn one_rank_and_two_ranks_train_the_same_model() {
    let one = train_mlp(1, cfg(64, 1), 1)[0];
    let two = train_mlp(2, cfg(64, 1), 1)[0];
    // The mean over 64 images is summed in another order: close, not equal.
    assert!(
        (one.1 - two.1).abs() < 1e-3 * one.1.abs().max(1.0),
        "{one:?} vs {two:?}"
    );
}

#[test]
fn a_model_with_only_the_required_methods_trains_and_exports() {
    let (train, _, norm) = data();
    let dir = std::env::temp_dir().join(format!("ringsgd-trainable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("softmax.safetensors");
    let hashes = run_ranks(2, |comm| {
        let mut c = cfg(64, 2);
        c.base_lr = 0.01;
        let mut t = Trainer::new(&comm, ComputePool::new(1)?, Softmax::new(3072), c)?;
        let first = t.train_epoch(&train, &norm, &mut |_| {})?.train_loss;
        let second = t.train_epoch(&train, &norm, &mut |_| {})?.train_loss;
        assert!(second < first, "loss {first} -> {second}");
        t.on_root(|t| export_safetensors(t.model(), &out))?;
        Ok(t.weights_hash())
    })
    .unwrap();
    assert_eq!(hashes[0], hashes[1]);
    let bytes = std::fs::read(&out).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.contains(r#""params""#), "{header}");
    assert!(header.contains("softmax(3072)"), "{header}");
    assert_eq!(bytes.len(), 8 + header_len + 4 * (10 * 3072 + 10));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_that_hands_over_too_little_fails_on_every_rank() {
    let (train, _, norm) = data();
    let errors = run_ranks(2, |comm| {
        let mut m = Softmax::new(3072);
        m.silent = true;
        let mut t = Trainer::new(&comm, ComputePool::new(1)?, m, cfg(64, 1))?;
        Ok(t.train_epoch(&train, &norm, &mut |_| {})
            .unwrap_err()
            .to_string())
    })
    .unwrap();
    for e in errors {
        assert!(e.contains("did not hand over its whole gradient"), "{e}");
    }
}

#[test]
fn step_checks_its_batch_before_communicating() {
    let errors = run_ranks(1, |comm| {
        let model = mlp::Mlp::new([3, 32, 32], 8, 10, 1)?;
        let mut c = cfg(4, 1);
        let mut t = Trainer::new(&comm, ComputePool::new(1)?, model, c.clone())?;
        let x = Array4::<f32>::zeros((4, 3, 32, 32));
        let mut e = vec![];
        // Cosine over "the run" has no length without an epoch.
        e.push(t.step(x.view(), &[0; 4]).unwrap_err().to_string());
        c.schedule = LrSchedule::Constant;
        let mut t = Trainer::new(
            &comm,
            ComputePool::new(1)?,
            mlp::Mlp::new([3, 32, 32], 8, 10, 1)?,
            c,
        )?;
        let three = Array4::<f32>::zeros((3, 3, 32, 32));
        e.push(t.step(three.view(), &[0; 3]).unwrap_err().to_string());
        let other = Array4::<f32>::zeros((4, 1, 32, 32));
        e.push(t.step(other.view(), &[0; 4]).unwrap_err().to_string());
        e.push(t.step(x.view(), &[0, 1, 12, 0]).unwrap_err().to_string());
        e.push(
            t.evaluate_batch(other.view(), &[0; 4])
                .unwrap_err()
                .to_string(),
        );
        let ok = t.step(x.view(), &[0, 1, 2, 3])?;
        assert_eq!((ok.stats.count, t.global_step()), (4, 1));
        Ok(e)
    })
    .unwrap()
    .remove(0);
    assert!(errors[0].contains("total_steps"), "{}", errors[0]);
    assert!(
        errors[1].contains("4 samples") && errors[1].contains("got 3"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("[3, 32, 32]") && errors[2].contains("[1, 32, 32]"),
        "{}",
        errors[2]
    );
    assert!(errors[3].contains("label 12 of sample 2"), "{}", errors[3]);
    assert!(errors[4].contains("[1, 32, 32]"), "{}", errors[4]);
}

#[test]
fn a_checkpoint_of_another_model_is_refused() {
    let (train, _, norm) = data();
    let errors = run_ranks(1, |comm| {
        let mut t = Trainer::new(
            &comm,
            ComputePool::new(1)?,
            mlp::Mlp::new([3, 32, 32], 16, 10, 1)?,
            cfg(64, 1),
        )?;
        t.train_epoch(&train, &norm, &mut |_| {})?;
        let ckpt = t.to_checkpoint();
        // Same architecture: restored exactly.
        let mut same = Trainer::new(
            &comm,
            ComputePool::new(1)?,
            mlp::Mlp::new([3, 32, 32], 16, 10, 9)?,
            cfg(64, 1),
        )?;
        same.restore_from_root(Some(Ok(ckpt.clone())))?;
        assert_eq!(same.weights_hash(), t.weights_hash());
        assert_eq!(same.global_step(), t.global_step());
        let mut other = Trainer::new(
            &comm,
            ComputePool::new(1)?,
            mlp::Mlp::new([3, 32, 32], 8, 10, 1)?,
            cfg(64, 1),
        )?;
        Ok(other
            .restore_from_root(Some(Ok(ckpt)))
            .unwrap_err()
            .to_string())
    })
    .unwrap();
    assert!(
        errors[0].contains("mlp(3x32x32 -> 16 relu -> 10)") && errors[0].contains("-> 8 relu"),
        "{}",
        errors[0]
    );
}

#[test]
fn image_augmentation_on_feature_vectors_is_refused() {
    use ringsgd::data::Shape;
    let x: Vec<f32> = (0..64 * 16).map(|i| (i % 7) as f32).collect();
    let labels: Vec<u8> = (0..64).map(|i| (i % 4) as u8).collect();
    let data = Dataset::new(Shape::new(16, 1, 1), x, labels, 4).unwrap();
    let norm = Normalizer::from_dataset(&data).unwrap();
    let e = run_ranks(1, |comm| {
        let m = mlp::Mlp::new([16, 1, 1], 8, 4, 1)?;
        // pinet_defaults crops with padding 4 and flips: for images.
        let mut t = Trainer::new(&comm, ComputePool::new(1)?, m, cfg(16, 1))?;
        Ok(t.train_epoch(&data, &norm, &mut |_| {})
            .unwrap_err()
            .to_string())
    })
    .unwrap()
    .remove(0);
    assert!(e.contains("16x1x1") && e.contains("augment"), "{e}");
}
