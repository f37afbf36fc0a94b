//! The executed operations of a model: what the model builds from its
//! spec and what the convolution stack and the fully connected layers run
//! (shared by `model` and `stack`, so neither imports the other's items).

use super::conv::ConvGeom;
use super::pool::PoolGeom;

/// The kind of an executed operation, with its geometry.
#[derive(Clone, Copy, Debug)]
pub(super) enum OpKind {
    Conv(ConvGeom),
    Linear { fin: usize, fout: usize },
    MaxPool(PoolGeom),
    Relu,
}

/// One executed operation (Flatten is not one: it moves no data; a ReLU
/// right after a conv or linear layer is fused into it).
#[derive(Clone, Debug)]
pub(super) struct Op {
    /// Display name, e.g. `conv2+relu`, `maxpool1`, `fc1`.
    pub name: String,
    pub kind: OpKind,
    pub relu: bool,
    pub in_size: usize,
    pub out_size: usize,
    /// Offset of this op's parameters (weight then bias) in the flat buffer.
    pub poff: usize,
    pub wlen: usize,
    pub blen: usize,
}

/// `d = 0` where the ReLU output `y` is 0 (branch-free: the sign pattern of
/// activations is unpredictable).
pub(super) fn relu_mask(d: &mut [f32], y: &[f32]) {
    for (d, &v) in d.iter_mut().zip(y) {
        *d = if v > 0.0 { *d } else { 0.0 };
    }
}
