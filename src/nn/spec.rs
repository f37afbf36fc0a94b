//! Layer descriptions and the short text spec that names an architecture.
//!
//! # Grammar
//!
//! A spec is a whitespace-separated list of layers, each a token of one of
//! the kinds in `nn/layers` (each kind's [`LayerSpec`] constructor
//! documents its token; an unknown token's error lists them all):
//!
//! | token | layer |
//! |---|---|
//! | `conv{KH}x{KW}(OUT[,sS][,pP])` | [`conv2d`](LayerSpec::conv2d): `OUT` channels, stride `S` (default 1), zero padding `P` (default 0) |
//! | `relu` | [`relu`](LayerSpec::relu) |
//! | `maxpool{K}[(sS)]` | [`maxpool2d`](LayerSpec::maxpool2d): `K x K` window, stride `S` (default `K`) |
//! | `flatten` | [`flatten`](LayerSpec::flatten) |
//! | `linear(OUT)` | [`linear`](LayerSpec::linear) with `OUT` features |
//!
//! Input channels and features are inferred from the model's input shape.
//! The last layer's output is the logits (softmax cross-entropy is applied
//! by the model). Example, PiNet ([`PINET_SPEC`](super::PINET_SPEC)):
//! `conv3x3(32,p1) relu conv3x3(32,p1) relu maxpool2 conv3x3(64,p1) relu
//! conv3x3(64,p1) relu maxpool2 flatten linear(256) relu linear(10)`.

pub use super::layers::LayerSpec;
use super::layers::KINDS;
use crate::{Error, Result};

/// The canonical spec string of a list of layers (what [`parse_spec`] reads).
pub fn format_spec(layers: &[LayerSpec]) -> String {
    layers
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses a spec (see the module docs). Errors name the offending token.
pub fn parse_spec(spec: &str) -> Result<Vec<LayerSpec>> {
    let layers = spec
        .split_whitespace()
        .enumerate()
        .map(|(i, tok)| {
            parse_token(tok)
                .map_err(|msg| Error::invalid(format!("model spec token {} `{tok}`: {msg}", i + 1)))
        })
        .collect::<Result<Vec<_>>>()?;
    if layers.is_empty() {
        return Err(Error::invalid("model spec is empty"));
    }
    Ok(layers)
}

/// Splits `name(args)` into `(name, Some(args))`, or `(tok, None)`.
fn split_args(tok: &str) -> std::result::Result<(&str, Option<&str>), String> {
    match tok.find('(') {
        None => Ok((tok, None)),
        Some(open) => {
            let rest = &tok[open + 1..];
            let args = rest
                .strip_suffix(')')
                .ok_or_else(|| "missing closing `)`".to_string())?;
            Ok((&tok[..open], Some(args)))
        }
    }
}

/// The first kind that recognises the token's name parses it.
fn parse_token(tok: &str) -> std::result::Result<LayerSpec, String> {
    let (name, args) = split_args(tok)?;
    KINDS
        .iter()
        .find_map(|k| (k.parse)(name, args))
        .unwrap_or_else(|| {
            let known: Vec<&str> = KINDS.iter().map(|k| k.syntax).collect();
            Err(format!(
                "unknown layer `{name}` (known: {})",
                known.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinet_spec_round_trips() {
        let layers = parse_spec(crate::nn::PINET_SPEC).unwrap();
        assert_eq!(layers.len(), 14);
        assert_eq!(format_spec(&layers), crate::nn::PINET_SPEC);
    }

    #[test]
    fn general_forms() {
        let l = parse_spec("conv5x3(8,s2,p2)  maxpool3(s2) conv1x1(4)").unwrap();
        assert_eq!(l[0], LayerSpec::conv2d(8, [5, 3], 2, 2));
        assert_eq!(l[1], LayerSpec::maxpool2d(3, 2));
        assert_eq!(format_spec(&l), "conv5x3(8,s2,p2) maxpool3(s2) conv1x1(4)");
    }

    #[test]
    fn errors_name_the_token() {
        for bad in [
            "",
            "conv3x3",
            "conv3(4)",
            "linear(x)",
            "relu(1)",
            "foo",
            "conv3x3(4,q1)",
        ] {
            let e = parse_spec(bad).unwrap_err().to_string();
            assert!(e.contains("spec"), "{bad}: {e}");
        }
        let e = parse_spec("relu bogus").unwrap_err().to_string();
        assert!(e.contains("token 2") && e.contains("bogus"), "{e}");
    }
}
