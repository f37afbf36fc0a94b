//! A model written outside the crate: a two-layer perceptron (flatten,
//! linear, ReLU, linear) implementing [`Trainable`], so that the library's
//! data-parallel trainer trains it like its own CNN.
//!
//! Everything the trainer needs is here: flat parameters and gradients, the
//! gradient of the mean loss over a batch, an identity for the cross-rank
//! check, and (optional) the gradient handed over in two parts during
//! backward, last layer first, so that the trainer reduces the second
//! layer's gradient while the first layer's is still being computed.
//!
//! The matrix products are `ndarray`'s `dot` (single-threaded and
//! deterministic: the same batch gives bitwise the same gradient), so the
//! compute pool the trainer passes is not used; a model that wants the
//! pool's cores runs its per-sample work in `pool.install(..)`.

use ndarray::{Array2, ArrayView2, ArrayView4, Axis};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringsgd::model::{BatchStats, GradSink, TensorInfo, Trainable};
use ringsgd::nn::softmax_cross_entropy;
use ringsgd::parallel::ComputePool;
use ringsgd::{Error, Result};

/// `input -> hidden (ReLU) -> classes`.
///
/// Flat layout: `fc1.weight [hidden, features]`, `fc1.bias [hidden]`,
/// `fc2.weight [classes, hidden]`, `fc2.bias [classes]` (PyTorch's
/// `nn.Linear` conventions, so the safetensors export loads into a PyTorch
/// module with `fc1` and `fc2`).
pub struct Mlp {
    input: [usize; 3],
    features: usize,
    hidden: usize,
    classes: usize,
    params: Vec<f32>,
    grads: Vec<f32>,
    /// Hidden activations after ReLU, `[batch, hidden]` (kept for backward).
    h: Array2<f32>,
    /// Logits, `[batch, classes]`.
    z: Array2<f32>,
    /// Gradient of the mean loss w.r.t. the logits.
    dz: Array2<f32>,
}

impl Mlp {
    /// A perceptron for samples of shape `input` with `hidden` units and
    /// `classes` outputs; weights uniform in `±1/sqrt(fan_in)` from `seed`
    /// (PyTorch's default scale), biases 0.
    pub fn new(input: [usize; 3], hidden: usize, classes: usize, seed: u64) -> Result<Mlp> {
        let features: usize = input.iter().product();
        if features == 0 || hidden == 0 || !(2..=256).contains(&classes) {
            return Err(Error::invalid(format!(
                "an MLP needs features, hidden units > 0 and 2..=256 classes \
                 (got input {input:?}, hidden {hidden}, classes {classes})"
            )));
        }
        let n = hidden * features + hidden + classes * hidden + classes;
        let mut params = vec![0.0f32; n];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let b1 = 1.0 / (features as f32).sqrt();
        let b2 = 1.0 / (hidden as f32).sqrt();
        let fc2 = hidden * features + hidden;
        for w in &mut params[..hidden * features] {
            *w = rng.random_range(-b1..b1);
        }
        for w in &mut params[fc2..fc2 + classes * hidden] {
            *w = rng.random_range(-b2..b2);
        }
        Ok(Mlp {
            input,
            features,
            hidden,
            classes,
            grads: vec![0.0; n],
            params,
            h: Array2::zeros((0, hidden)),
            z: Array2::zeros((0, classes)),
            dz: Array2::zeros((0, classes)),
        })
    }

    /// Offset of `fc2.weight` in the flat buffers.
    fn fc2(&self) -> usize {
        self.hidden * self.features + self.hidden
    }

    /// The four tensors as views of `buf` (the parameters or the gradients).
    fn views<'a>(&self, buf: &'a [f32]) -> [ArrayView2<'a, f32>; 4] {
        let (f, h, k, o) = (self.features, self.hidden, self.classes, self.fc2());
        let v = |off: usize, rows: usize, cols: usize| {
            ArrayView2::from_shape((rows, cols), &buf[off..off + rows * cols]).expect("in range")
        };
        [v(0, h, f), v(h * f, 1, h), v(o, k, h), v(o + k * h, 1, k)]
    }

    /// Forward: fills `h` and `z` for the batch `x` (`[batch, features]`).
    fn forward(&mut self, x: ArrayView2<'_, f32>) {
        let [w1, b1, w2, b2] = self.views(&self.params);
        let mut h = x.dot(&w1.t()) + b1;
        h.mapv_inplace(|v| v.max(0.0));
        self.z = h.dot(&w2.t()) + b2;
        self.h = h;
    }

    /// The batch as `[batch, features]` (the trainer hands over standard
    /// layout, so this is a view, not a copy).
    fn flat<'a>(&self, input: &'a ArrayView4<'a, f32>) -> Result<ArrayView2<'a, f32>> {
        let b = input.dim().0;
        let x = input
            .as_slice()
            .ok_or_else(|| Error::invalid("the MLP takes batches in standard (C) layout"))?;
        ArrayView2::from_shape((b, self.features), x).map_err(|e| Error::invalid(e.to_string()))
    }

    fn logits_stats(&mut self, labels: &[u8], grad: bool) -> Result<BatchStats> {
        let z = self.z.as_slice().expect("owned, standard layout");
        if grad {
            self.dz = Array2::zeros(self.z.dim());
            let dz = self.dz.as_slice_mut().expect("owned, standard layout");
            softmax_cross_entropy(z, labels, self.classes, Some(dz))
        } else {
            softmax_cross_entropy(z, labels, self.classes, None)
        }
    }
}

impl Trainable for Mlp {
    fn identity(&self) -> String {
        format!(
            "mlp({}x{}x{} -> {} relu -> {})",
            self.input[0], self.input[1], self.input[2], self.hidden, self.classes
        )
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input
    }

    fn num_classes(&self) -> usize {
        self.classes
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
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats> {
        self.train_step_with(pool, input, labels, &mut |_, _| {})
    }

    fn train_step_with(
        &mut self,
        _pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
        on_grads: &mut GradSink<'_>,
    ) -> Result<BatchStats> {
        let x = self.flat(&input)?;
        self.forward(x);
        let stats = self.logits_stats(labels, true)?;
        let (f, h, o) = (self.features, self.hidden, self.fc2());
        // Second layer: dW2 = dz^T h, db2 = sum over the batch of dz.
        let dw2 = self.dz.t().dot(&self.h);
        let db2 = self.dz.sum_axis(Axis(0));
        let g2 = &mut self.grads[o..];
        g2[..dw2.len()].copy_from_slice(dw2.as_slice().expect("owned"));
        g2[dw2.len()..].copy_from_slice(db2.as_slice().expect("owned"));
        // Handed over now: the trainer's ring reduces it while the first
        // layer's gradient is computed below.
        on_grads(o, &self.grads[o..]);
        // Back through ReLU: dh = (dz W2) * [h > 0].
        let w2 = ArrayView2::from_shape((self.classes, h), &self.params[o..o + self.classes * h])
            .expect("in range");
        let mut dh = self.dz.dot(&w2);
        dh.zip_mut_with(&self.h, |d, &a| {
            if a <= 0.0 {
                *d = 0.0
            }
        });
        let dw1 = dh.t().dot(&x);
        let db1 = dh.sum_axis(Axis(0));
        self.grads[..h * f].copy_from_slice(dw1.as_slice().expect("owned"));
        self.grads[h * f..o].copy_from_slice(db1.as_slice().expect("owned"));
        on_grads(0, &self.grads[..o]);
        Ok(stats)
    }

    fn grad_parts(&self) -> Vec<std::ops::Range<usize>> {
        vec![self.fc2()..self.params.len(), 0..self.fc2()]
    }

    fn evaluate(
        &mut self,
        _pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats> {
        let x = self.flat(&input)?;
        self.forward(x);
        self.logits_stats(labels, false)
    }

    fn tensors(&self) -> Vec<TensorInfo> {
        let (f, h, k, o) = (self.features, self.hidden, self.classes, self.fc2());
        let t = |name: &str, shape: Vec<usize>, offset: usize| TensorInfo {
            name: name.to_string(),
            len: shape.iter().product(),
            shape,
            offset,
        };
        vec![
            t("fc1.weight", vec![h, f], 0),
            t("fc1.bias", vec![h], h * f),
            t("fc2.weight", vec![k, h], o),
            t("fc2.bias", vec![k], o + k * h),
        ]
    }
}
