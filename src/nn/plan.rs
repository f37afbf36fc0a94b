//! The shape walk: a model spec on an input shape, layer by layer, with
//! each layer's output shape, parameters and FLOPs and the model's buffers
//! for a batch, computed without allocating the model.
//! [`Model::from_plan`](super::Model::from_plan) builds from it, and a program can check sizes and memory with it before any
//! work (the `cifar10` example refuses a model too large for the node).
//!
//! ```
//! use ringsgd::nn::{ActivationShape, ModelSpec};
//! let plan = ModelSpec::parse("conv3x3(4,p1) relu maxpool2 flatten linear(3)", [1, 8, 8])?.plan()?;
//! let shapes: Vec<_> = plan.layers().iter().map(|l| l.output).collect();
//! assert_eq!(shapes[2], ActivationShape::Chw([4, 4, 4]));
//! assert_eq!(shapes[3], ActivationShape::Flat(64));
//! assert_eq!(plan.layers()[1].op.as_deref(), Some("conv1+relu"));
//! assert_eq!(plan.num_params(), 4 * 9 + 4 + 64 * 3 + 3);
//! assert!(plan.memory(32, 2).total() > 32 * 4 * (256 + 64 + 3));
//! # Ok::<(), ringsgd::Error>(())
//! ```

pub use super::layers::ActivationShape;
use super::layers::{Built, Layer};
use super::op::Op;
use super::spec::{format_spec, parse_spec, LayerSpec};
use super::stack::StackLayout;
use super::workspace::Workspace;
use crate::model::TensorInfo;
use crate::{Error, Result};
use std::fmt;

/// A model's architecture: its input shape and layers (what
/// [`ModelBuilder`](super::ModelBuilder) collects and a spec string names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    input_chw: [usize; 3],
    layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// The layers `layers` on inputs of shape `[channels, height, width]`.
    pub fn new(input_chw: [usize; 3], layers: Vec<LayerSpec>) -> ModelSpec {
        ModelSpec { input_chw, layers }
    }

    /// Parses `spec` (see [`spec`](super::spec)).
    pub fn parse(spec: &str, input_chw: [usize; 3]) -> Result<ModelSpec> {
        Ok(ModelSpec::new(input_chw, parse_spec(spec)?))
    }

    /// Input shape `[channels, height, width]`.
    pub fn input_chw(&self) -> [usize; 3] {
        self.input_chw
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[LayerSpec] {
        &self.layers
    }

    /// Walks the layers' shapes: errors name the first layer whose input
    /// does not fit it. Sizes saturate instead of overflowing, so an absurd
    /// spec gives a plan with absurd figures (which
    /// [`Model::from_plan`](super::Model::from_plan) refuses to build)
    /// rather than an error.
    pub fn plan(&self) -> Result<ModelPlan> {
        let input_chw = self.input_chw;
        if input_chw.contains(&0) {
            return Err(Error::shape(
                "input",
                format!("input shape {input_chw:?} has a zero dimension"),
            ));
        }
        if self.layers.is_empty() {
            return Err(Error::invalid("a model needs at least one layer"));
        }
        let mut shape = ActivationShape::Chw(input_chw);
        let mut ops: Vec<Op> = Vec::new();
        let mut creators = Vec::new();
        let mut tensors = Vec::new();
        let mut layers = Vec::new();
        let mut op_of = Vec::new();
        let mut nparams = 0usize;
        let mut stems = Vec::new();
        let mut in_stack = true;
        for (li, spec) in self.layers.iter().enumerate() {
            let lname = || format!("layer {} ({spec})", li + 1);
            let in_size = shape.size();
            let Built {
                output,
                layer,
                fused,
            } = spec
                .kind()
                .build(shape, ops.last_mut().map(|op| &mut *op.layer))
                .map_err(|m| Error::shape(lname(), m))?;
            if let (true, Some(op)) = (fused, ops.last_mut()) {
                op.name.push('+');
                op.name.push_str(&spec.to_string());
            }
            shape = output;
            let (mut params, mut flops) = (0, 0);
            let in_an_op = fused || layer.is_some();
            if let Some(layer) = layer {
                in_stack &= layer.per_image().is_some();
                if !in_stack && layer.batched().is_none() {
                    return Err(Error::shape(
                        lname(),
                        "has no whole-batch passes, so it cannot follow a layer that works \
                         across the batch",
                    ));
                }
                let name = op_name(&mut stems, &*layer);
                let ts = layer.tensors(&name, nparams);
                params = ts.iter().fold(0usize, |a, t| a.saturating_add(t.len));
                flops = layer.forward_flops();
                tensors.extend(ts);
                ops.push(Op {
                    name,
                    in_size,
                    out_size: layer.out_size(),
                    poff: nparams,
                    plen: params,
                    layer,
                });
                creators.push(li);
                nparams = nparams.saturating_add(params);
            }
            op_of.push(in_an_op.then(|| ops.len().checked_sub(1)).flatten());
            layers.push(LayerPlan {
                layer: spec.clone(),
                output,
                op: None,
                params,
                forward_flops: flops,
            });
        }
        let ActivationShape::Flat(num_classes) = shape else {
            return Err(Error::shape(
                "model output",
                "the last layer must give flat logits: end with `flatten` or `linear`",
            ));
        };
        if ops.is_empty() {
            return Err(Error::invalid(
                "a model needs at least one layer that computes something",
            ));
        }
        for (l, op) in layers.iter_mut().zip(op_of) {
            l.op = op.map(|k| ops[k].name.clone());
        }
        Ok(ModelPlan {
            spec: self.clone(),
            layers,
            layout: StackLayout::new(&ops),
            ops,
            creators,
            tensors,
            num_params: nparams,
            num_classes,
        })
    }
}

/// The op's name: its stem numbered among the ops of that stem so far
/// (`conv2`), or the stem alone for a layer that is not numbered (`relu`).
fn op_name(stems: &mut Vec<(&'static str, usize)>, layer: &dyn Layer) -> String {
    let stem = layer.stem();
    let nth = match stems.iter_mut().find(|(s, _)| *s == stem) {
        Some((_, n)) => {
            *n += 1;
            *n
        }
        None => {
            stems.push((stem, 1));
            1
        }
    };
    if layer.numbered() {
        format!("{stem}{nth}")
    } else {
        stem.to_string()
    }
}

impl fmt::Display for ModelSpec {
    /// The canonical spec string of the layers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_spec(&self.layers))
    }
}

/// One layer of a [`ModelPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    /// The layer.
    pub layer: LayerSpec,
    /// Its output shape per image.
    pub output: ActivationShape,
    /// The executed op it is (part of), as named in
    /// [`Model::last_profile`](super::Model::last_profile): `conv2+relu` for a convolution and the
    /// ReLU fused into it; `None` for a layer that moves no data (flatten).
    pub op: Option<String>,
    /// Its parameters.
    pub params: usize,
    /// Its forward FLOPs per image.
    pub forward_flops: u64,
}

/// The result of [`ModelSpec::plan`]: shapes, parameters and buffers of a
/// model, and what [`Model::from_plan`](super::Model::from_plan) builds.
#[derive(Debug)]
pub struct ModelPlan {
    spec: ModelSpec,
    layers: Vec<LayerPlan>,
    pub(crate) ops: Vec<Op>,
    /// The spec layer that made each op.
    creators: Vec<usize>,
    pub(crate) layout: StackLayout,
    pub(crate) tensors: Vec<TensorInfo>,
    num_params: usize,
    num_classes: usize,
}

impl ModelPlan {
    /// The spec planned.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// One entry per layer of the spec, in order.
    pub fn layers(&self) -> &[LayerPlan] {
        &self.layers
    }

    /// Parameters of the model (saturating).
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// Size of the logits.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Forward FLOPs per image.
    pub fn forward_flops(&self) -> u64 {
        self.ops
            .iter()
            .fold(0u64, |a, op| a.saturating_add(op.layer.forward_flops()))
    }

    /// The parameter tensors (see [`Model::tensors`](super::Model::tensors)).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The bytes the model holds after a training step on `batch` images
    /// in a pool of `cores` threads (see [`MemoryPlan`]).
    pub fn memory(&self, batch: usize, cores: usize) -> MemoryPlan {
        let ws = Workspace::for_batch(&self.ops, &self.layout, batch.max(1));
        let f = |n: usize| n.saturating_mul(4);
        MemoryPlan {
            params: f(self.num_params.saturating_mul(2)),
            partials: f(ws.partials),
            activations: f(ws.activation_floats()),
            scratch: f(ws.scratch.floats()).saturating_mul(cores.max(1)),
        }
    }

    /// Refuses a plan this crate cannot run: sizes that saturated, or a
    /// layer's implementation limit. The error names the layer.
    pub(crate) fn check_buildable(&self) -> Result<()> {
        // Far below where the saturating figures end up; above anything a
        // machine holds.
        const HUGE: usize = 1 << 48;
        if self.num_params >= HUGE {
            return Err(Error::shape(
                "model",
                format!("{} parameters do not fit in memory", self.num_params),
            ));
        }
        for (op, &li) in self.ops.iter().zip(&self.creators) {
            let name = || format!("layer {} ({})", li + 1, self.spec.layers[li]);
            if op.in_size >= HUGE || op.out_size >= HUGE {
                return Err(Error::shape(name(), "activations do not fit in memory"));
            }
            op.layer
                .check_limits()
                .map_err(|m| Error::shape(name(), m))?;
        }
        Ok(())
    }
}

/// Bytes a [`Model`](super::Model) holds (see [`ModelPlan::memory`]; saturating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Parameters and gradients (an optimiser adds its own state, e.g.
    /// momentum: one more parameter-sized buffer).
    pub params: usize,
    /// The convolutions' per-chunk weight-gradient partials.
    pub partials: usize,
    /// Activations kept for backward, max-pooling indices, the gradient
    /// buffers of backward and the linear layers' temporaries (not the
    /// optional input gradient of [`Model::set_input_grad`](super::Model::set_input_grad),
    /// nor the copy of an input array that is not contiguous).
    pub activations: usize,
    /// Per-thread scratch (im2col columns, padded images, packed weights,
    /// chunk gradients), all threads; the GEMM's packing buffers (fixed,
    /// a few hundred KiB per thread) are not included.
    pub scratch: usize,
}

impl MemoryPlan {
    /// All of it.
    pub fn total(&self) -> usize {
        self.params
            .saturating_add(self.partials)
            .saturating_add(self.activations)
            .saturating_add(self.scratch)
    }
}
