//! Export of trained weights as safetensors, loadable into PyTorch.

use std::path::Path;

use crate::checkpoint::safetensors;
use crate::error::Result;
use crate::nn::Model;

/// Writes the model's parameters to `path` in the safetensors format.
///
/// One F32 tensor per parameter tensor, named and laid out as
/// [`Model::tensors`] describes (PyTorch's conventions: conv weights
/// `[out, in, kh, kw]`, linear weights `[out, in]`). The header metadata holds
/// the model spec (`ringsgd.spec`) and the input shape (`ringsgd.input_chw`).
/// For PiNet the names match the `state_dict` of the PyTorch module shown in
/// the README, so `model.load_state_dict(safetensors.torch.load_file(path))`
/// works.
pub fn export_safetensors(model: &Model, path: &Path) -> Result<()> {
    let params = model.params();
    let tensors: Vec<(String, Vec<usize>, &[f32])> = model
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                &params[t.offset..t.offset + t.len],
            )
        })
        .collect();
    let [c, h, w] = model.input_chw();
    let metadata = vec![
        ("ringsgd.spec".to_string(), model.spec().to_string()),
        ("ringsgd.input_chw".to_string(), format!("{c},{h},{w}")),
    ];
    safetensors::write(path, &tensors, &metadata)
}
