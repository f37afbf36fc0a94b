//! A hand-written CNN on `ndarray`: convolution, ReLU, max pooling, flatten,
//! linear layers and softmax cross-entropy, forward and backward on NCHW
//! `f32` batches, parallel in a [`ComputePool`](crate::parallel::ComputePool).
//!
//! * Build a [`Model`] from a text spec ([`spec`] documents the grammar) or
//!   with a [`ModelBuilder`]; [`Model::pinet`] is the reference network.
//! * [`ModelSpec::plan`] walks a spec's shapes without building it: each
//!   layer's output shape, parameters and FLOPs, and the model's buffers
//!   for a batch ([`ModelPlan::memory`]). The model is built from the same
//!   plan.
//! * Each layer kind lives in one module of `src/nn/layers/` (token,
//!   shape rules, tensors, FLOPs, forward and backward); the parser, the
//!   plan, the model and the depth-first stack reach it only through a
//!   crate-internal trait. `src/nn/layers/mod.rs` says how to add a kind:
//!   its module plus one entry in the list of kinds.
//! * Parameters and gradients are two flat `f32` buffers;
//!   [`Model::tensors`] maps them to PyTorch-named tensors.
//! * [`Model::train_step`] overwrites the gradients with those of the mean
//!   loss over the batch. Results are bitwise identical for any core count:
//!   per-image work is independent, and every reduction over the batch
//!   happens in chunks fixed by the batch size, summed in a fixed order.
//! * A warm step allocates nothing: activations, gradients, im2col columns
//!   and GEMM packing buffers are reused (they grow to the largest batch).

mod builder;
mod layers;
mod loss;
mod model;
mod op;
mod plan;
mod scratch;
pub mod spec;
mod stack;
mod trainable;
mod workspace;

pub use builder::ModelBuilder;
pub use layers::{ActivationShape, LayerSpec};
pub use loss::{softmax_cross_entropy, BatchStats};
pub use model::{GradSink, Model, OpProfile, TensorInfo};
pub use plan::{LayerPlan, MemoryPlan, ModelPlan, ModelSpec};

/// The reference network "PiNet" for CIFAR-10 (`[3, 32, 32]` in, 10 classes
/// out, 1,116,970 parameters, about 51 MFLOP per image forward).
pub const PINET_SPEC: &str = "conv3x3(32,p1) relu conv3x3(32,p1) relu maxpool2 \
conv3x3(64,p1) relu conv3x3(64,p1) relu maxpool2 flatten linear(256) relu linear(10)";

#[cfg(test)]
mod tests;
