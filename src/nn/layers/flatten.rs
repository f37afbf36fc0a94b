//! `[C, H, W]` to `[C*H*W]`, token `flatten`: only the shape changes (the
//! data is already in that order), so it executes nothing.

use super::{ActivationShape, Built, Kind, LayerKind, LayerSpec, Parsed, Prev};
use std::fmt;

pub(crate) const KIND: Kind = Kind {
    syntax: "flatten",
    parse,
};

impl LayerSpec {
    /// `[C, H, W]` to `[C*H*W]` (no data movement); token `flatten`.
    pub fn flatten() -> Self {
        LayerSpec::of(Flatten)
    }
}

fn parse(name: &str, args: Option<&str>) -> Parsed {
    (name == "flatten").then(|| match args {
        None => Ok(LayerSpec::flatten()),
        Some(_) => Err("`flatten` takes no arguments".into()),
    })
}

/// The layer as written in a spec.
#[derive(Clone, Copy, Debug)]
struct Flatten;

impl fmt::Display for Flatten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("flatten")
    }
}

impl LayerKind for Flatten {
    fn build(&self, input: ActivationShape, _prev: Prev<'_>) -> Result<Built, String> {
        Ok(Built {
            output: ActivationShape::Flat(input.size()),
            layer: None,
            fused: false,
        })
    }
}
