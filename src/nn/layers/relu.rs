//! `max(x, 0)` elementwise, token `relu`. Right after a layer that can
//! apply it to its own output (a convolution or a linear layer) it is fused
//! into that layer and executes nothing of its own; otherwise it runs per
//! image in the stack, or on the whole batch after it.

use super::{
    ActivationShape, BatchBackward, BatchForward, Batched, Built, ChunkBackward, ChunkForward,
    Kind, Layer, LayerKind, LayerSpec, Parsed, PerImage, Prev,
};
use std::fmt;

pub(crate) const KIND: Kind = Kind {
    syntax: "relu",
    parse,
};

impl LayerSpec {
    /// Elementwise `max(x, 0)`; token `relu`.
    pub fn relu() -> Self {
        LayerSpec::of(ReluSpec)
    }
}

fn parse(name: &str, args: Option<&str>) -> Parsed {
    (name == "relu").then(|| match args {
        None => Ok(LayerSpec::relu()),
        Some(_) => Err("`relu` takes no arguments".into()),
    })
}

/// The layer as written in a spec.
#[derive(Clone, Copy, Debug)]
struct ReluSpec;

impl fmt::Display for ReluSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("relu")
    }
}

impl LayerKind for ReluSpec {
    fn build(&self, input: ActivationShape, prev: Prev<'_>) -> Result<Built, String> {
        if let Some(prev) = prev {
            if prev.fuse_relu() {
                return Ok(Built {
                    output: input,
                    layer: None,
                    fused: true,
                });
            }
        }
        Ok(Built {
            output: input,
            layer: Some(Box::new(Relu { size: input.size() })),
            fused: false,
        })
    }
}

/// A ReLU that could not be fused.
#[derive(Debug)]
struct Relu {
    size: usize,
}

impl Layer for Relu {
    fn stem(&self) -> &'static str {
        "relu"
    }
    fn numbered(&self) -> bool {
        false
    }
    fn in_size(&self) -> usize {
        self.size
    }
    fn out_size(&self) -> usize {
        self.size
    }
    fn per_image(&self) -> Option<&dyn PerImage> {
        Some(self)
    }
    fn batched(&self) -> Option<&dyn Batched> {
        Some(self)
    }
}

impl PerImage for Relu {
    fn forward(&self, c: ChunkForward<'_>) {
        for (o, v) in c.y.iter_mut().zip(c.x) {
            *o = v.max(0.0);
        }
    }
    fn backward(&self, c: ChunkBackward<'_>) {
        let Some(dx) = c.dx else { return };
        for ((d, &g), &v) in dx.iter_mut().zip(&*c.dy).zip(c.y) {
            *d = if v > 0.0 { g } else { 0.0 };
        }
    }
}

impl Batched for Relu {
    fn forward(&self, b: BatchForward<'_>) {
        let (x, n) = (b.x, self.size);
        b.pool.for_each_chunk_mut(b.y, n, |i, yi| {
            for (o, v) in yi.iter_mut().zip(&x[i * n..]) {
                *o = v.max(0.0);
            }
        });
    }
    fn backward(&self, b: BatchBackward<'_>) {
        let Some(dx) = b.dx else { return };
        let (dy, y) = (&*b.dy, b.y);
        b.pool.for_each_chunk_mut(dx, 4096, |i, d| {
            let r = i * 4096..i * 4096 + d.len();
            for ((d, &g), &v) in d.iter_mut().zip(&dy[r.clone()]).zip(&y[r]) {
                *d = if v > 0.0 { g } else { 0.0 };
            }
        });
    }
}
