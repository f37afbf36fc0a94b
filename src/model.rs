//! What the trainer needs from a model: the [`Trainable`] trait.
//!
//! [`Trainer`](crate::trainer::Trainer) runs data-parallel SGD over any type
//! that implements [`Trainable`]: the crate's CNN ([`nn::Model`](crate::nn::Model))
//! is one implementation, and a downstream project implements it for its own
//! network (an MLP on tabular data, a model from another crate, ...). The
//! trainer then gives that model everything around the gradient: sharding of
//! the global batch, the averaged gradient (ring allreduce, overlapped with
//! backward when the model hands its gradient over in parts), the
//! synchronised optimiser, the cross-rank checks, replica verification,
//! checkpoints, resume and reports.
//!
//! A model is two flat `f32` buffers of the same length, parameters and
//! gradients, plus the gradient of the mean loss over a batch. A minimal
//! implementation (softmax regression, written from scratch):
//!
//! ```
//! use ndarray::ArrayView4;
//! use ringsgd::model::{BatchStats, Trainable};
//! use ringsgd::nn::softmax_cross_entropy;
//! use ringsgd::parallel::ComputePool;
//!
//! /// `classes x features` weights, then `classes` biases.
//! struct Softmax {
//!     features: usize,
//!     classes: usize,
//!     params: Vec<f32>,
//!     grads: Vec<f32>,
//!     logits: Vec<f32>,
//!     dlogits: Vec<f32>,
//! }
//!
//! impl Softmax {
//!     fn new(features: usize, classes: usize) -> Self {
//!         let n = classes * features + classes;
//!         Softmax { features, classes, params: vec![0.0; n], grads: vec![0.0; n],
//!                   logits: Vec::new(), dlogits: Vec::new() }
//!     }
//!     fn forward(&mut self, x: &[f32], batch: usize) {
//!         let (f, k) = (self.features, self.classes);
//!         self.logits.resize(batch * k, 0.0);
//!         for (xi, zi) in x.chunks_exact(f).zip(self.logits.chunks_exact_mut(k)) {
//!             for (j, z) in zi.iter_mut().enumerate() {
//!                 let w = &self.params[j * f..(j + 1) * f];
//!                 *z = self.params[k * f + j] + w.iter().zip(xi).map(|(a, b)| a * b).sum::<f32>();
//!             }
//!         }
//!     }
//! }
//!
//! impl Trainable for Softmax {
//!     fn identity(&self) -> String {
//!         format!("softmax({}->{})", self.features, self.classes)
//!     }
//!     fn input_shape(&self) -> [usize; 3] {
//!         [self.features, 1, 1]
//!     }
//!     fn num_classes(&self) -> usize {
//!         self.classes
//!     }
//!     fn params(&self) -> &[f32] {
//!         &self.params
//!     }
//!     fn grads(&self) -> &[f32] {
//!         &self.grads
//!     }
//!     fn params_and_grads_mut(&mut self) -> (&mut [f32], &mut [f32]) {
//!         (&mut self.params, &mut self.grads)
//!     }
//!     fn train_step(&mut self, _pool: &ComputePool, input: ArrayView4<'_, f32>,
//!                   labels: &[u8]) -> ringsgd::Result<BatchStats> {
//!         let (b, f, k) = (labels.len(), self.features, self.classes);
//!         let x = input.as_slice().expect("standard layout");
//!         self.forward(x, b);
//!         self.dlogits.resize(b * k, 0.0);
//!         let stats = softmax_cross_entropy(&self.logits, labels, k, Some(&mut self.dlogits))?;
//!         self.grads.fill(0.0);
//!         for (xi, di) in x.chunks_exact(f).zip(self.dlogits.chunks_exact(k)) {
//!             for (j, &d) in di.iter().enumerate() {
//!                 for (g, &xv) in self.grads[j * f..(j + 1) * f].iter_mut().zip(xi) {
//!                     *g += d * xv;
//!                 }
//!                 self.grads[k * f + j] += d;
//!             }
//!         }
//!         Ok(stats)
//!     }
//!     fn evaluate(&mut self, _pool: &ComputePool, input: ArrayView4<'_, f32>,
//!                 labels: &[u8]) -> ringsgd::Result<BatchStats> {
//!         self.forward(input.as_slice().expect("standard layout"), labels.len());
//!         softmax_cross_entropy(&self.logits, labels, self.classes, None)
//!     }
//! }
//!
//! # fn main() -> ringsgd::Result<()> {
//! let pool = ComputePool::new(1)?;
//! let mut m = Softmax::new(2, 2);
//! let x = ndarray::Array4::from_shape_vec((2, 2, 1, 1), vec![1.0, 0.0, 0.0, 1.0]).unwrap();
//! let s = m.train_step(&pool, x.view(), &[0, 1])?;
//! assert!((s.mean_loss() - 2f64.ln()).abs() < 1e-6);
//! assert_eq!(m.num_params(), 6);
//! # Ok(()) }
//! ```
//!
//! The trainer checks the data against [`Trainable::input_shape`] and the
//! labels against [`Trainable::num_classes`], agrees on
//! [`Trainable::identity`] across ranks, and stores it in checkpoints (a
//! resume with another identity is refused).

use std::ops::Range;

use ndarray::ArrayView4;

use crate::parallel::ComputePool;
use crate::Result;

/// Loss and accuracy of one batch (or of several, merged).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Sum over samples of the per-sample loss.
    pub loss_sum: f64,
    /// Samples whose largest output is the label (first maximum on ties).
    pub correct: usize,
    /// Samples counted.
    pub count: usize,
}

impl BatchStats {
    /// Mean loss per sample (0 for an empty count).
    pub fn mean_loss(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f64
        }
    }

    /// Fraction of samples classified correctly (0 for an empty count).
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }

    /// Adds another batch's statistics to these.
    pub fn merge(&mut self, other: &BatchStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.count += other.count;
    }
}

/// Receives each finished part of the gradient during backward: its offset
/// in the flat gradient and its values (see [`Trainable::train_step_with`]).
pub type GradSink<'a> = dyn FnMut(usize, &[f32]) + Send + 'a;

/// Where one parameter tensor lives in the flat buffers (for exports: one
/// safetensors tensor each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name, e.g. `conv1.weight`, `fc2.bias`.
    pub name: String,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Offset of the first element in the flat parameters / gradients.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

/// A model the data-parallel [`Trainer`](crate::trainer::Trainer) can train:
/// flat parameters and gradients, and the gradient of the mean loss over a
/// batch. See the [module documentation](self) for a complete example.
///
/// Contract:
/// * [`params`](Self::params) and [`grads`](Self::grads) have the same,
///   fixed length;
/// * [`train_step`](Self::train_step) OVERWRITES the gradients with those
///   of the mean loss over the batch and returns the batch's statistics;
///   for bitwise reproducible runs it must be a deterministic function of
///   the parameters and the batch (whatever the pool's core count);
/// * `input` is `[batch, C, H, W]` with `[C, H, W]` = [`input_shape`](Self::input_shape),
///   in standard (C-contiguous) layout, and `labels` has one class index
///   `< num_classes` per sample (the trainer checks both before calling).
///
/// `Send` because the overlapped step runs backward on a thread of its own
/// while the calling thread drives the network.
pub trait Trainable: Send {
    /// A string naming the architecture (e.g. a layer spec): equal on every
    /// rank, stored in checkpoints and checked on resume.
    fn identity(&self) -> String;

    /// The shape `[C, H, W]` of one input sample.
    fn input_shape(&self) -> [usize; 3];

    /// Number of classes (labels are `0..num_classes`).
    fn num_classes(&self) -> usize;

    /// All parameters, flat.
    fn params(&self) -> &[f32];

    /// The gradients of the last [`train_step`](Self::train_step), same
    /// layout as [`params`](Self::params).
    fn grads(&self) -> &[f32];

    /// Parameters and gradients at once, mutable (the optimiser updates the
    /// one from the other; the allreduce averages the gradients in place).
    fn params_and_grads_mut(&mut self) -> (&mut [f32], &mut [f32]);

    /// Forward and backward on one batch: overwrites the gradients with
    /// those of the mean loss over the batch.
    fn train_step(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats>;

    /// Forward only: the statistics of a batch (gradients untouched).
    fn evaluate(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats>;

    /// Number of parameters.
    fn num_params(&self) -> usize {
        self.params().len()
    }

    /// All parameters, mutable.
    fn params_mut(&mut self) -> &mut [f32] {
        self.params_and_grads_mut().0
    }

    /// All gradients, mutable.
    fn grads_mut(&mut self) -> &mut [f32] {
        self.params_and_grads_mut().1
    }

    /// [`train_step`](Self::train_step) that hands each part of the
    /// gradient to `on_grads(offset, values)` as soon as backward has
    /// finished it, in the order of [`grad_parts`](Self::grad_parts): this
    /// is what lets the trainer reduce the last layers' gradients while
    /// backward still works on the first ones. Called on a thread of its
    /// own. The default runs `train_step` and then hands over the whole
    /// gradient (no overlap, still correct).
    fn train_step_with(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
        on_grads: &mut GradSink<'_>,
    ) -> Result<BatchStats> {
        let stats = self.train_step(pool, input, labels)?;
        on_grads(0, self.grads());
        Ok(stats)
    }

    /// The parts of the flat gradient in the order
    /// [`train_step_with`](Self::train_step_with) hands them over; they must
    /// tile `0..num_params`. Default: the whole gradient as one part.
    fn grad_parts(&self) -> Vec<Range<usize>> {
        let whole = 0..self.num_params();
        vec![whole]
    }

    /// The named tensors of the flat parameters, for exports. Default: one
    /// tensor `params` of shape `[num_params]`.
    fn tensors(&self) -> Vec<TensorInfo> {
        vec![TensorInfo {
            name: "params".to_string(),
            shape: vec![self.num_params()],
            offset: 0,
            len: self.num_params(),
        }]
    }
}
