//! Fully connected layer `y = W x + b` on flat inputs, token
//! `linear(OUT)`: the layer; the batched GEMMs are in [`kernel`]. It works
//! across the batch, so it ends the per-image stack.

pub(crate) mod kernel;

use super::{
    num, relu_mask, weight_and_bias, ActivationShape, BatchBackward, BatchForward, Batched, Built,
    Kind, Layer, LayerKind, LayerSpec, Parsed, Prev,
};
use crate::model::TensorInfo;
use std::fmt;

pub(crate) const KIND: Kind = Kind {
    syntax: "linear(OUT)",
    parse,
};

impl LayerSpec {
    /// Fully connected layer `y = W x + b` with `out_features` outputs
    /// (its input must be flat); token `linear(OUT)`.
    pub fn linear(out_features: usize) -> Self {
        LayerSpec::of(Linear { out_features })
    }
}

fn parse(name: &str, args: Option<&str>) -> Parsed {
    (name == "linear").then(|| {
        let a = args.ok_or("expected linear(OUT)")?;
        Ok(LayerSpec::linear(num(a, "output features")?))
    })
}

/// The layer as written in a spec.
#[derive(Clone, Copy, Debug)]
struct Linear {
    out_features: usize,
}

impl fmt::Display for Linear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linear({})", self.out_features)
    }
}

impl LayerKind for Linear {
    fn build(&self, input: ActivationShape, _prev: Prev<'_>) -> Result<Built, String> {
        let ActivationShape::Flat(fin) = input else {
            return Err("linear needs a flat input: add `flatten` before it".into());
        };
        let fout = self.out_features;
        if fout == 0 {
            return Err("output features must be >= 1".into());
        }
        Ok(Built {
            output: ActivationShape::Flat(fout),
            layer: Some(Box::new(Fc {
                fin,
                fout,
                relu: false,
            })),
            fused: false,
        })
    }
}

/// The executed linear layer.
#[derive(Debug)]
struct Fc {
    fin: usize,
    fout: usize,
    /// A ReLU fused into the output.
    relu: bool,
}

impl Fc {
    fn wlen(&self) -> usize {
        self.fout.saturating_mul(self.fin)
    }
}

impl Layer for Fc {
    fn stem(&self) -> &'static str {
        "fc"
    }
    fn in_size(&self) -> usize {
        self.fin
    }
    fn out_size(&self) -> usize {
        self.fout
    }
    fn tensors(&self, name: &str, offset: usize) -> Vec<TensorInfo> {
        weight_and_bias(name, vec![self.fout, self.fin], offset)
    }
    fn forward_flops(&self) -> u64 {
        2u64.saturating_mul(self.wlen() as u64)
    }
    fn fuse_relu(&mut self) -> bool {
        !std::mem::replace(&mut self.relu, true)
    }
    fn batched(&self) -> Option<&dyn Batched> {
        Some(self)
    }
}

impl Batched for Fc {
    /// The transposed products.
    fn tmp_len(&self) -> usize {
        self.fin.max(self.fout)
    }
    fn forward(&self, b: BatchForward<'_>) {
        let (w, bias) = b.params.split_at(self.wlen());
        let dims = (b.batch, self.fin, self.fout);
        kernel::forward(b.pool, b.slots, w, bias, b.x, b.y, b.tmp, dims, self.relu);
    }
    fn backward(&self, b: BatchBackward<'_>) {
        if self.relu {
            let y = b.y;
            b.pool
                .for_work(b.dy.len())
                .for_each_chunk_mut(b.dy, 4096, |i, d| relu_mask(d, &y[i * 4096..]));
        }
        let wlen = self.wlen();
        let (gw, gb) = b.grads.split_at_mut(wlen);
        let dims = (b.batch, self.fin, self.fout);
        let w = &b.params[..wlen];
        kernel::backward(b.pool, b.slots, w, b.x, b.dy, gw, gb, b.dx, b.tmp, dims);
    }
}
