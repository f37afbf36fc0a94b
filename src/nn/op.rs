//! The executed operations of a model: the layers its spec builds, with
//! their names and places in the flat buffers (shared by `model`, `plan`
//! and `stack`, so none imports another's items).

use super::layers::Layer;
use std::ops::Range;

/// One executed operation (a flatten is not one: it moves no data; a ReLU
/// right after a conv or linear layer is fused into it).
#[derive(Debug)]
pub(crate) struct Op {
    /// Display name, e.g. `conv2+relu`, `maxpool1`, `fc1`.
    pub name: String,
    pub layer: Box<dyn Layer>,
    /// Floats per image in and out.
    pub in_size: usize,
    pub out_size: usize,
    /// Offset of this op's parameters in the flat buffer.
    pub poff: usize,
    /// Number of its parameters.
    pub plen: usize,
}

impl Op {
    /// Where this op's parameters are in the flat buffers.
    pub fn params(&self) -> Range<usize> {
        self.poff..self.poff + self.plen
    }
}
