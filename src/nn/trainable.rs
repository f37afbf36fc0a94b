//! The crate's CNN as a [`Trainable`] model.

use std::ops::Range;

use ndarray::ArrayView4;

use super::Model;
use crate::model::{BatchStats, GradSink, TensorInfo, Trainable};
use crate::parallel::ComputePool;
use crate::Result;

/// The identity is the canonical spec; the gradient is handed over layer by
/// layer during backward (fc layers last first, then the convolution
/// stack), so the trainer's overlapped step reduces while backward runs.
impl Trainable for Model {
    fn identity(&self) -> String {
        self.spec().to_string()
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_chw()
    }

    fn num_classes(&self) -> usize {
        Model::num_classes(self)
    }

    fn params(&self) -> &[f32] {
        Model::params(self)
    }

    fn grads(&self) -> &[f32] {
        Model::grads(self)
    }

    fn params_and_grads_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        Model::params_and_grads_mut(self)
    }

    fn train_step(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats> {
        Model::train_step(self, pool, input, labels)
    }

    fn evaluate(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
    ) -> Result<BatchStats> {
        Model::evaluate(self, pool, input, labels)
    }

    fn num_params(&self) -> usize {
        Model::num_params(self)
    }

    fn train_step_with(
        &mut self,
        pool: &ComputePool,
        input: ArrayView4<'_, f32>,
        labels: &[u8],
        on_grads: &mut GradSink<'_>,
    ) -> Result<BatchStats> {
        Model::train_step_with(self, pool, input, labels, on_grads)
    }

    fn grad_parts(&self) -> Vec<Range<usize>> {
        Model::grad_parts(self)
    }

    fn tensors(&self) -> Vec<TensorInfo> {
        Model::tensors(self).to_vec()
    }
}
