//! The layer kinds, one module each: what a kind's spec token means, how it
//! is parsed and printed, which shape it gives, its parameters, FLOPs and
//! buffers, and its forward and backward passes, in one place.
//!
//! Two traits carry a kind through the crate:
//!
//! * [`LayerKind`]: the layer as written in a spec (a [`LayerSpec`] holds
//!   one). It prints its token and builds the executed layer for an input
//!   shape, checking the shape rules; a layer that can be folded into the
//!   one before it (a ReLU) does that instead.
//! * [`Layer`]: the executed layer. It reports its sizes, tensors and
//!   FLOPs, and runs either per image ([`PerImage`], inside the depth-first
//!   stack of [`stack`](super::stack)) or on the whole batch ([`Batched`],
//!   after the stack).
//!
//! The parser ([`spec`](super::spec)), the shape walk
//! ([`ModelSpec::plan`](super::ModelSpec::plan)), the model, the stack and
//! the per-layer reports only iterate over these traits; none of them
//! matches on a kind.
//!
//! # Adding a layer kind
//!
//! 1. Write `layers/NAME.rs` (or `layers/NAME/mod.rs` with the compute in
//!    `layers/NAME/kernel.rs`, as `conv` does) with:
//!    * a config struct implementing [`LayerKind`] (`Display` prints the
//!      canonical token; `build` checks the input shape and returns the
//!      output shape and the executed layer, or `None` for a layer that
//!      moves no data);
//!    * a `pub(crate) const KIND: Kind` whose `parse` recognises the token
//!      (return `None` for a name that is not this kind's);
//!    * a public `LayerSpec` constructor (`ModelBuilder::layer` takes any
//!      `LayerSpec`; only the common kinds have a builder method of their
//!      own, in `nn/builder.rs`);
//!    * the executed layer implementing [`Layer`], and [`PerImage`] (work
//!      on each image on its own: it can run in the depth-first stack) or
//!      [`Batched`] (work across the batch, like a GEMM over it) or both;
//!    * its tests (a gradient check in `nn/tests.rs` style).
//! 2. Register it: its `mod` line here and its `KIND` in [`KINDS`].
//!
//! Nothing else changes: the parser tries every kind in [`KINDS`], and a
//! model with the new kind builds, trains, profiles and plans its memory
//! through the traits. (The grammar table in [`spec`](super::spec) is a
//! summary of the built-in kinds; add a row there for a new one.)

mod conv;
mod flatten;
mod linear;
mod maxpool;
mod relu;

use super::scratch::{Scratch, ScratchSizes, Slots};
use crate::model::TensorInfo;
use crate::parallel::ComputePool;
use rand::RngExt;
use std::fmt;
use std::sync::Arc;

/// The spec parsers, in the order they are tried (the registration of a
/// kind: see the module docs).
pub(crate) const KINDS: &[Kind] = &[
    conv::KIND,
    relu::KIND,
    maxpool::KIND,
    flatten::KIND,
    linear::KIND,
];

/// One layer of a model, as written in a spec or given to the builder.
///
/// Made by [`parse_spec`](super::spec::parse_spec) or by a constructor of its kind
/// ([`conv2d`](Self::conv2d), [`relu`](Self::relu),
/// [`maxpool2d`](Self::maxpool2d), [`flatten`](Self::flatten),
/// [`linear`](Self::linear)); it prints as its canonical token, and two
/// layers are equal when their tokens are.
///
/// ```
/// use ringsgd::nn::LayerSpec;
/// let l = LayerSpec::conv2d(8, [5, 3], 2, 2);
/// assert_eq!(l.to_string(), "conv5x3(8,s2,p2)");
/// assert_eq!(ringsgd::nn::spec::parse_spec("conv5x3(8,s2,p2)")?, [l]);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone)]
pub struct LayerSpec(Arc<dyn LayerKind>);

impl LayerSpec {
    /// Wraps a kind's config (each kind's constructor calls this).
    pub(crate) fn of(kind: impl LayerKind + 'static) -> LayerSpec {
        LayerSpec(Arc::new(kind))
    }

    /// The kind's config.
    pub(crate) fn kind(&self) -> &dyn LayerKind {
        &*self.0
    }
}

impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerSpec({self})")
    }
}

impl PartialEq for LayerSpec {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for LayerSpec {}

/// Shape of one image's activation between two layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationShape {
    /// `[channels, height, width]`.
    Chw([usize; 3]),
    /// Flat features.
    Flat(usize),
}

impl ActivationShape {
    /// Floats per image (saturating).
    pub fn size(self) -> usize {
        match self {
            ActivationShape::Chw([c, h, w]) => c.saturating_mul(h).saturating_mul(w),
            ActivationShape::Flat(f) => f,
        }
    }
}

/// What a kind's parser gives for a token: `None` when the name is not
/// the kind's, else the layer or what is wrong with the token.
pub(crate) type Parsed = Option<Result<LayerSpec, String>>;

/// A kind's entry in the parser.
pub(crate) struct Kind {
    /// How the token is written, for the "unknown layer" error.
    pub syntax: &'static str,
    /// `parse(name, args)` for a token `name` or `name(args)`: `None` when
    /// `name` is not this kind's, else the layer or what is wrong with it.
    pub parse: fn(&str, Option<&str>) -> Parsed,
}

/// What [`LayerKind::build`] gives: the output shape and the executed
/// layer (`None` for a layer that executes nothing of its own: a flatten,
/// or a ReLU fused into the layer before it).
pub(crate) struct Built {
    pub output: ActivationShape,
    pub layer: Option<Box<dyn Layer>>,
    /// The layer became part of the op before it (which `build` changed).
    pub fused: bool,
}

/// The executed layer before the one being built, if any.
pub(crate) type Prev<'a> = Option<&'a mut (dyn Layer + 'static)>;

/// A layer as written in a spec.
pub(crate) trait LayerKind: fmt::Display + fmt::Debug + Send + Sync {
    /// Checks the shape rules for inputs of shape `input` and builds the
    /// layer; `prev` is the executed layer before it, if any (a ReLU fuses
    /// into it: then the op's name gets `+` and this layer's token). Sizes saturate rather than overflow (the plan of an absurd
    /// spec gives absurd figures; [`Layer::check_limits`] refuses to build
    /// it). The error says what is wrong; the caller names the layer.
    fn build(&self, input: ActivationShape, prev: Prev<'_>) -> Result<Built, String>;
}

/// An executed layer. Sizes are floats per image.
pub(crate) trait Layer: fmt::Debug + Send + Sync {
    /// Stem of the layer's name in profiles and tensor names (`conv`, `fc`).
    fn stem(&self) -> &'static str;
    /// Whether the name is numbered among the layers of its stem (`conv2`)
    /// or is the stem alone (`relu`).
    fn numbered(&self) -> bool {
        true
    }
    fn in_size(&self) -> usize;
    fn out_size(&self) -> usize;
    /// The layer's tensors, named `{name}.*`, placed from `offset` on.
    fn tensors(&self, _name: &str, _offset: usize) -> Vec<TensorInfo> {
        Vec::new()
    }
    /// Draws the initial values of the layer's `tensors` (offsets into
    /// `params`, the whole flat buffer): PyTorch's default for a weight
    /// followed by its bias, see [`init_weight_and_bias`].
    fn init(&self, tensors: &[TensorInfo], params: &mut [f32], rng: &mut rand_chacha::ChaCha8Rng) {
        init_weight_and_bias(tensors, params, rng);
    }
    /// Forward FLOPs per image.
    fn forward_flops(&self) -> u64 {
        0
    }
    /// Implementation limits beyond the shape rules (a plan may describe
    /// a layer this crate cannot run).
    fn check_limits(&self) -> Result<(), String> {
        Ok(())
    }
    /// Applies a following ReLU inside this layer; `false` when it cannot
    /// (or already does).
    fn fuse_relu(&mut self) -> bool {
        false
    }
    /// The per-image passes, if the layer works on each image on its own.
    fn per_image(&self) -> Option<&dyn PerImage> {
        None
    }
    /// The whole-batch passes, if the layer has them.
    fn batched(&self) -> Option<&dyn Batched> {
        None
    }
}

/// A chunk of images through a per-image layer, forward.
pub(crate) struct ChunkForward<'a> {
    /// This layer's parameters.
    pub params: &'a [f32],
    pub x: &'a [f32],
    pub y: &'a mut [f32],
    /// This layer's indices for the chunk ([`PerImage::index_len`] per image).
    pub index: &'a mut [u32],
    pub scratch: &'a mut Scratch,
}

/// A chunk of `n` images through a per-image layer, backward.
pub(crate) struct ChunkBackward<'a> {
    pub n: usize,
    pub params: &'a [f32],
    pub x: &'a [f32],
    pub y: &'a [f32],
    /// d(loss)/d(y); the layer may overwrite it (a fused ReLU masks it).
    pub dy: &'a mut [f32],
    /// d(loss)/d(x), to be written, when wanted.
    pub dx: Option<&'a mut [f32]>,
    pub index: &'a [u32],
    /// This layer's share of the chunk's weight-gradient partials
    /// ([`PerImage::partial_len`] floats), to be assigned.
    pub partial: &'a mut [f32],
    pub scratch: &'a mut Scratch,
}

/// A layer that works on each image on its own (the stack runs it on
/// chunks of images, depth-first).
pub(crate) trait PerImage {
    /// `u32` indices kept per image from forward to backward (max
    /// pooling's argmax).
    fn index_len(&self) -> usize {
        0
    }
    /// Floats of weight-gradient partial per chunk (the chunks' partials
    /// are summed in chunk order, then handed to [`Self::reduce_partial`]).
    fn partial_len(&self) -> usize {
        0
    }
    /// Per-thread scratch for backward chunks of up to `chunk` images.
    fn scratch(&self, _chunk: usize) -> ScratchSizes {
        ScratchSizes::default()
    }
    fn forward(&self, c: ChunkForward<'_>);
    fn backward(&self, c: ChunkBackward<'_>);
    /// Writes the layer's gradient (`grads`, its share of the flat buffer)
    /// from the sum of the chunks' partials.
    fn reduce_partial(&self, _pool: &ComputePool, _partial: &[f32], _grads: &mut [f32]) {}
}

/// The whole batch through a batched layer, forward.
pub(crate) struct BatchForward<'a> {
    pub pool: &'a ComputePool,
    pub slots: &'a Slots,
    pub batch: usize,
    pub params: &'a [f32],
    pub x: &'a [f32],
    pub y: &'a mut [f32],
    /// At least [`Batched::tmp_len`] x batch floats.
    pub tmp: &'a mut [f32],
}

/// The whole batch through a batched layer, backward.
pub(crate) struct BatchBackward<'a> {
    pub pool: &'a ComputePool,
    pub slots: &'a Slots,
    pub batch: usize,
    pub params: &'a [f32],
    /// This layer's gradients, to be written.
    pub grads: &'a mut [f32],
    pub x: &'a [f32],
    pub y: &'a [f32],
    /// d(loss)/d(y); the layer may overwrite it (a fused ReLU masks it).
    pub dy: &'a mut [f32],
    pub dx: Option<&'a mut [f32]>,
    pub tmp: &'a mut [f32],
}

/// A layer that works across the batch (after the stack).
pub(crate) trait Batched {
    /// Floats of shared temporary per image.
    fn tmp_len(&self) -> usize {
        0
    }
    fn forward(&self, b: BatchForward<'_>);
    fn backward(&self, b: BatchBackward<'_>);
}

/// The tensors of layer `layer` (`conv1`, `fc2`, ...) placed at `offset`:
/// `{layer}.weight` of `weight_shape` (outputs first, as in PyTorch), then
/// `{layer}.bias`, one per output. Lengths saturate (see
/// [`LayerKind::build`]).
pub(crate) fn weight_and_bias(
    layer: &str,
    weight_shape: Vec<usize>,
    offset: usize,
) -> Vec<TensorInfo> {
    let outputs = weight_shape[0];
    let len = weight_shape
        .iter()
        .fold(1usize, |a, &d| a.saturating_mul(d));
    vec![
        TensorInfo {
            name: format!("{layer}.weight"),
            shape: weight_shape,
            offset,
            len,
        },
        TensorInfo {
            name: format!("{layer}.bias"),
            shape: vec![outputs],
            offset: offset.saturating_add(len),
            len: outputs,
        },
    ]
}

/// Half-width of PyTorch's default uniform initialisation for a weight of
/// `shape` (`[out, in, ...]`): `1/sqrt(fan_in)`, `fan_in` the product of all
/// but the first dimension.
pub(crate) fn init_bound(shape: &[usize]) -> f32 {
    let fan_in: usize = shape[1..].iter().product();
    (1.0 / (fan_in.max(1) as f64).sqrt()) as f32
}

/// For each (weight, bias) pair of `tensors`, in order: every value from
/// `U(-b, b)`, `b` = [`init_bound`] of the weight's shape.
///
/// This is PyTorch's default (`kaiming_uniform_(a=sqrt(5))` for the weight,
/// the same bound for the bias), the initialisation the reference recipe
/// (lr 0.05 x batch / 128, momentum 0.9, no warm-up) is tuned for. He
/// uniform, `sqrt(6)` times wider and with zero biases, makes PiNet's
/// initial logits ~50x larger (rms 2.2 against 0.04 on a CIFAR-10 batch)
/// and its first gradient larger than the weights of the linear layers;
/// with that recipe the first steps killed almost every ReLU and the
/// network never recovered (see the README, "Initialisation").
pub(crate) fn init_weight_and_bias(
    tensors: &[TensorInfo],
    params: &mut [f32],
    rng: &mut rand_chacha::ChaCha8Rng,
) {
    for pair in tensors.chunks_exact(2) {
        let bound = init_bound(&pair[0].shape);
        for t in pair {
            for p in &mut params[t.offset..t.offset + t.len] {
                *p = rng.random_range(-bound..bound);
            }
        }
    }
}

/// `d = 0` where the ReLU output `y` is 0 (branch-free: the sign pattern of
/// activations is unpredictable).
pub(crate) fn relu_mask(d: &mut [f32], y: &[f32]) {
    for (d, &v) in d.iter_mut().zip(y) {
        *d = if v > 0.0 { *d } else { 0.0 };
    }
}

/// Parses a non-negative integer argument named `what`.
pub(crate) fn num(s: &str, what: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .map_err(|_| format!("{what} `{s}` is not a non-negative integer"))
}
