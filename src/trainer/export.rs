//! Export of trained weights as safetensors, loadable into PyTorch.

use std::path::Path;

use crate::checkpoint::safetensors;
use crate::error::{Error, Result};
use crate::model::Trainable;

/// Writes the model's parameters to `path` in the safetensors format.
///
/// One F32 tensor per parameter tensor, named and laid out as
/// [`Trainable::tensors`] describes (for the crate's
/// [`Model`](crate::nn::Model), PyTorch's conventions: conv weights
/// `[out, in, kh, kw]`, linear weights `[out, in]`). The header metadata holds
/// the model's identity (`ringsgd.spec`) and the input shape
/// (`ringsgd.input_chw`). A tensor outside the parameters is an error.
/// For PiNet the names match the `state_dict` of the PyTorch module shown in
/// the README, so `model.load_state_dict(safetensors.torch.load_file(path))`
/// works.
pub fn export_safetensors<M: Trainable + ?Sized>(model: &M, path: &Path) -> Result<()> {
    let params = model.params();
    let tensors: Vec<(String, Vec<usize>, &[f32])> = model
        .tensors()
        .into_iter()
        .map(|t| {
            let values = params.get(t.offset..t.offset + t.len).ok_or_else(|| {
                Error::invalid(format!(
                    "tensor {} ({} values at offset {}) lies outside the model's {} parameters",
                    t.name,
                    t.len,
                    t.offset,
                    params.len()
                ))
            })?;
            Ok((t.name, t.shape, values))
        })
        .collect::<Result<_>>()?;
    let [c, h, w] = model.input_shape();
    let metadata = vec![
        ("ringsgd.spec".to_string(), model.identity()),
        ("ringsgd.input_chw".to_string(), format!("{c},{h},{w}")),
    ];
    safetensors::write(path, &tensors, &metadata)
}
