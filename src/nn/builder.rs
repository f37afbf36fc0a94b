//! Building a model in code, layer by layer.

use super::model::Model;
use super::plan::ModelSpec;
use super::spec::LayerSpec;
use crate::Result;

/// Builds a [`Model`] layer by layer: [`layer`](Self::layer) appends any
/// [`LayerSpec`], and the common kinds have their own method.
///
/// ```
/// use ringsgd::nn::ModelBuilder;
/// let model = ModelBuilder::new([1, 8, 8])
///     .conv(4, 3, 1, 1)
///     .relu()
///     .maxpool(2, 2)
///     .flatten()
///     .linear(3)
///     .build(42)?;
/// assert_eq!(model.spec(), "conv3x3(4,p1) relu maxpool2 flatten linear(3)");
/// assert_eq!(model.num_params(), 4 * 9 + 4 + 64 * 3 + 3);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ModelBuilder {
    input_chw: [usize; 3],
    layers: Vec<LayerSpec>,
}

impl ModelBuilder {
    /// A builder for images of shape `[channels, height, width]`.
    pub fn new(input_chw: [usize; 3]) -> Self {
        ModelBuilder {
            input_chw,
            layers: Vec::new(),
        }
    }

    /// Appends any layer.
    pub fn layer(mut self, layer: LayerSpec) -> Self {
        self.layers.push(layer);
        self
    }

    /// Appends a square `kernel x kernel` convolution.
    pub fn conv(self, out_channels: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        self.layer(LayerSpec::conv2d(
            out_channels,
            [kernel, kernel],
            stride,
            padding,
        ))
    }

    /// Appends a ReLU.
    pub fn relu(self) -> Self {
        self.layer(LayerSpec::relu())
    }

    /// Appends a max pooling layer.
    pub fn maxpool(self, kernel: usize, stride: usize) -> Self {
        self.layer(LayerSpec::maxpool2d(kernel, stride))
    }

    /// Appends a flatten.
    pub fn flatten(self) -> Self {
        self.layer(LayerSpec::flatten())
    }

    /// Appends a linear layer.
    pub fn linear(self, out_features: usize) -> Self {
        self.layer(LayerSpec::linear(out_features))
    }

    /// Checks the shapes and builds the model with PyTorch's default
    /// initialisation of `nn.Conv2d` and `nn.Linear`: weights and biases
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` (`fan_in` = inputs x kernel
    /// area), drawn in tensor order from `ChaCha8Rng::seed_from_u64(seed)`.
    /// See [`Model::init_bound`].
    pub fn build(self, seed: u64) -> Result<Model> {
        Model::from_plan(self.into_spec().plan()?, seed)
    }

    /// The architecture collected so far (to [`plan`](ModelSpec::plan) it).
    pub fn into_spec(self) -> ModelSpec {
        ModelSpec::new(self.input_chw, self.layers)
    }
}
