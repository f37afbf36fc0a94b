//! Max pooling over `K x K` windows (no padding), token `maxpool{K}[(sS)]`:
//! the layer; the compute is in [`kernel`]. Forward keeps, per output, the
//! index of the input it took; backward routes the gradient there.

pub(crate) mod kernel;

use super::{
    num, ActivationShape, Built, ChunkBackward, ChunkForward, Kind, Layer, LayerKind, LayerSpec,
    Parsed, PerImage, Prev,
};
use kernel::PoolGeom;
use std::fmt;

pub(crate) const KIND: Kind = Kind {
    syntax: "maxpool{K}[(sS)]",
    parse,
};

impl LayerSpec {
    /// Max pooling over `kernel x kernel` windows with `stride`; token
    /// `maxpool{K}[(sS)]` (the stride is left out when it is `K`).
    pub fn maxpool2d(kernel: usize, stride: usize) -> Self {
        LayerSpec::of(MaxPool2d { kernel, stride })
    }
}

fn parse(name: &str, args: Option<&str>) -> Parsed {
    let size = name.strip_prefix("maxpool")?;
    Some((|| {
        let kernel = num(size, "pool size")?;
        let mut stride = kernel;
        for part in args.into_iter().flat_map(|a| a.split(',')) {
            let part = part.trim();
            match part.strip_prefix('s') {
                Some(s) => stride = num(s, "stride")?,
                None => return Err(format!("unknown maxpool argument `{part}` (use sS)")),
            }
        }
        Ok(LayerSpec::maxpool2d(kernel, stride))
    })())
}

/// The layer as written in a spec.
#[derive(Clone, Copy, Debug)]
struct MaxPool2d {
    kernel: usize,
    stride: usize,
}

impl fmt::Display for MaxPool2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "maxpool{}", self.kernel)?;
        if self.stride != self.kernel {
            write!(f, "(s{})", self.stride)?;
        }
        Ok(())
    }
}

impl LayerKind for MaxPool2d {
    fn build(&self, input: ActivationShape, _prev: Prev<'_>) -> Result<Built, String> {
        let ActivationShape::Chw([c, h, w]) = input else {
            return Err("maxpool needs a [C, H, W] input, got a flat one".into());
        };
        let MaxPool2d { kernel, stride } = *self;
        if kernel == 0 || stride == 0 || kernel > h || kernel > w {
            return Err(format!(
                "window {kernel} stride {stride} does not fit a {h}x{w} input"
            ));
        }
        let g = PoolGeom {
            c,
            h,
            w,
            k: kernel,
            stride,
            oh: (h - kernel) / stride + 1,
            ow: (w - kernel) / stride + 1,
        };
        Ok(Built {
            output: ActivationShape::Chw([c, g.oh, g.ow]),
            layer: Some(Box::new(MaxPool { g })),
            fused: false,
        })
    }
}

/// The executed max pooling.
#[derive(Debug)]
struct MaxPool {
    g: PoolGeom,
}

impl Layer for MaxPool {
    fn stem(&self) -> &'static str {
        "maxpool"
    }
    fn in_size(&self) -> usize {
        ActivationShape::Chw([self.g.c, self.g.h, self.g.w]).size()
    }
    fn out_size(&self) -> usize {
        ActivationShape::Chw([self.g.c, self.g.oh, self.g.ow]).size()
    }
    fn per_image(&self) -> Option<&dyn PerImage> {
        Some(self)
    }
}

impl PerImage for MaxPool {
    /// One argmax per output.
    fn index_len(&self) -> usize {
        self.out_size()
    }
    fn forward(&self, c: ChunkForward<'_>) {
        let (ins, outs) = (self.in_size(), self.out_size());
        let images = c.x.chunks_exact(ins).zip(c.y.chunks_exact_mut(outs));
        for ((xi, yi), ai) in images.zip(c.index.chunks_exact_mut(outs)) {
            kernel::forward_image(&self.g, xi, yi, ai);
        }
    }
    fn backward(&self, c: ChunkBackward<'_>) {
        let Some(dx) = c.dx else { return };
        let (ins, outs) = (self.in_size(), self.out_size());
        let per_img = c.dy.chunks_exact(outs).zip(c.index.chunks_exact(outs));
        for ((dyi, ai), dxi) in per_img.zip(dx.chunks_exact_mut(ins)) {
            kernel::backward_image(dyi, ai, dxi);
        }
    }
}
