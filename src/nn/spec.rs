//! Layer descriptions and the short text spec that names an architecture.
//!
//! # Grammar
//!
//! A spec is a whitespace-separated list of layers:
//!
//! | token | layer |
//! |---|---|
//! | `conv{KH}x{KW}(OUT[,sS][,pP])` | [`Conv2d`](LayerSpec::Conv2d): `OUT` channels, stride `S` (default 1), zero padding `P` (default 0) |
//! | `relu` | [`Relu`](LayerSpec::Relu) |
//! | `maxpool{K}[(sS)]` | [`MaxPool2d`](LayerSpec::MaxPool2d): `K x K` window, stride `S` (default `K`) |
//! | `flatten` | [`Flatten`](LayerSpec::Flatten) |
//! | `linear(OUT)` | [`Linear`](LayerSpec::Linear) with `OUT` features |
//!
//! Input channels and features are inferred from the model's input shape.
//! The last layer's output is the logits (softmax cross-entropy is applied
//! by the model). Example, PiNet ([`PINET_SPEC`](super::PINET_SPEC)):
//! `conv3x3(32,p1) relu conv3x3(32,p1) relu maxpool2 conv3x3(64,p1) relu
//! conv3x3(64,p1) relu maxpool2 flatten linear(256) relu linear(10)`.

use crate::{Error, Result};
use std::fmt;

/// One layer of a model, as written in a spec or given to the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerSpec {
    /// 2-D convolution over NCHW with zero padding.
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// Kernel size `[height, width]`.
        kernel: [usize; 2],
        /// Stride (both dimensions).
        stride: usize,
        /// Zero padding on every side.
        padding: usize,
    },
    /// Elementwise `max(x, 0)`.
    Relu,
    /// Max pooling over `kernel x kernel` windows (no padding).
    MaxPool2d {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// `[C, H, W]` to `[C*H*W]` (no data movement).
    Flatten,
    /// Fully connected layer `y = W x + b`.
    Linear {
        /// Output features.
        out_features: usize,
    },
}

impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                write!(f, "conv{}x{}({out_channels}", kernel[0], kernel[1])?;
                if *stride != 1 {
                    write!(f, ",s{stride}")?;
                }
                if *padding != 0 {
                    write!(f, ",p{padding}")?;
                }
                write!(f, ")")
            }
            LayerSpec::Relu => write!(f, "relu"),
            LayerSpec::MaxPool2d { kernel, stride } => {
                write!(f, "maxpool{kernel}")?;
                if stride != kernel {
                    write!(f, "(s{stride})")?;
                }
                Ok(())
            }
            LayerSpec::Flatten => write!(f, "flatten"),
            LayerSpec::Linear { out_features } => write!(f, "linear({out_features})"),
        }
    }
}

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

fn num(s: &str, what: &str) -> std::result::Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .map_err(|_| format!("{what} `{s}` is not a non-negative integer"))
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

fn parse_token(tok: &str) -> std::result::Result<LayerSpec, String> {
    let (name, args) = split_args(tok)?;
    let no_args = |l: LayerSpec| match args {
        None => Ok(l),
        Some(_) => Err(format!("`{name}` takes no arguments")),
    };
    match name {
        "relu" => no_args(LayerSpec::Relu),
        "flatten" => no_args(LayerSpec::Flatten),
        "linear" => {
            let a = args.ok_or("expected linear(OUT)")?;
            Ok(LayerSpec::Linear {
                out_features: num(a, "output features")?,
            })
        }
        _ if name.starts_with("maxpool") => {
            let kernel = num(&name["maxpool".len()..], "pool size")?;
            let mut stride = kernel;
            if let Some(a) = args {
                for part in a.split(',') {
                    let part = part.trim();
                    match part.strip_prefix('s') {
                        Some(s) => stride = num(s, "stride")?,
                        None => return Err(format!("unknown maxpool argument `{part}` (use sS)")),
                    }
                }
            }
            Ok(LayerSpec::MaxPool2d { kernel, stride })
        }
        _ if name.starts_with("conv") => {
            let dims = &name["conv".len()..];
            let (kh, kw) = dims
                .split_once('x')
                .ok_or("expected conv{KH}x{KW}(OUT[,sS][,pP])")?;
            let kernel = [num(kh, "kernel height")?, num(kw, "kernel width")?];
            let a = args.ok_or("expected conv{KH}x{KW}(OUT[,sS][,pP])")?;
            let mut parts = a.split(',');
            let out_channels = num(parts.next().unwrap_or(""), "output channels")?;
            let (mut stride, mut padding) = (1, 0);
            for part in parts {
                let part = part.trim();
                if let Some(s) = part.strip_prefix('s') {
                    stride = num(s, "stride")?;
                } else if let Some(p) = part.strip_prefix('p') {
                    padding = num(p, "padding")?;
                } else {
                    return Err(format!("unknown conv argument `{part}` (use sS or pP)"));
                }
            }
            Ok(LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
            })
        }
        _ => Err(format!(
            "unknown layer `{name}` (known: convKxK, relu, maxpoolK, flatten, linear)"
        )),
    }
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
        assert_eq!(
            l[0],
            LayerSpec::Conv2d {
                out_channels: 8,
                kernel: [5, 3],
                stride: 2,
                padding: 2
            }
        );
        assert_eq!(
            l[1],
            LayerSpec::MaxPool2d {
                kernel: 3,
                stride: 2
            }
        );
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
