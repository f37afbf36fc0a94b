//! 2-D convolution over NCHW with zero padding, token
//! `conv{KH}x{KW}(OUT[,sS][,pP])`: the layer (shape rules, tensors, FLOPs,
//! the stack's per-chunk passes); the compute is in [`kernel`].
//!
//! Per chunk of `n` images: forward image by image; backward the weight
//! gradient of the whole chunk into the chunk's partial (transposed,
//! `[K, Cout]`, then the bias), then the input gradient image by image. The
//! partials of all chunks are summed in chunk order and transposed into the
//! gradient by [`PerImage::reduce_partial`].

pub(crate) mod kernel;

use super::{
    num, relu_mask, weight_and_bias, ActivationShape, Built, ChunkBackward, ChunkForward, Kind,
    Layer, LayerKind, LayerSpec, Parsed, PerImage, Prev,
};
use crate::model::TensorInfo;
use crate::nn::scratch::ScratchSizes;
use crate::parallel::ComputePool;
use kernel::ConvGeom;
use std::fmt;

pub(crate) const KIND: Kind = Kind {
    syntax: "conv{KH}x{KW}(OUT[,sS][,pP])",
    parse,
};

const USAGE: &str = "expected conv{KH}x{KW}(OUT[,sS][,pP])";

impl LayerSpec {
    /// 2-D convolution with `out_channels` outputs, a `[height, width]`
    /// kernel, `stride` in both dimensions and `padding` zeros on every
    /// side; token `conv{KH}x{KW}(OUT[,sS][,pP])` (stride 1 and padding 0
    /// are left out).
    pub fn conv2d(out_channels: usize, kernel: [usize; 2], stride: usize, padding: usize) -> Self {
        LayerSpec::of(Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
        })
    }
}

fn parse(name: &str, args: Option<&str>) -> Parsed {
    let dims = name.strip_prefix("conv")?;
    Some((|| {
        let (kh, kw) = dims.split_once('x').ok_or(USAGE)?;
        let kernel = [num(kh, "kernel height")?, num(kw, "kernel width")?];
        let mut parts = args.ok_or(USAGE)?.split(',');
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
        Ok(LayerSpec::conv2d(out_channels, kernel, stride, padding))
    })())
}

/// The layer as written in a spec.
#[derive(Clone, Copy, Debug)]
struct Conv2d {
    out_channels: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: usize,
}

impl fmt::Display for Conv2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [kh, kw] = self.kernel;
        write!(f, "conv{kh}x{kw}({}", self.out_channels)?;
        if self.stride != 1 {
            write!(f, ",s{}", self.stride)?;
        }
        if self.padding != 0 {
            write!(f, ",p{}", self.padding)?;
        }
        write!(f, ")")
    }
}

impl LayerKind for Conv2d {
    fn build(&self, input: ActivationShape, _prev: Prev<'_>) -> Result<Built, String> {
        let ActivationShape::Chw([c, h, w]) = input else {
            return Err("conv needs a [C, H, W] input, got a flat one".into());
        };
        let Conv2d {
            out_channels,
            kernel: [kh, kw],
            stride,
            padding,
        } = *self;
        if out_channels == 0 || kh == 0 || kw == 0 || stride == 0 {
            return Err("channels, kernel and stride must be >= 1".into());
        }
        let pad2 = padding.saturating_mul(2);
        let (hp, wp) = (h.saturating_add(pad2), w.saturating_add(pad2));
        if hp < kh || wp < kw {
            return Err(format!(
                "kernel {kh}x{kw} is larger than the padded input {hp}x{wp}"
            ));
        }
        let g = ConvGeom {
            cin: c,
            h,
            w,
            cout: out_channels,
            kh,
            kw,
            stride,
            pad: padding,
            oh: (hp - kh) / stride + 1,
            ow: (wp - kw) / stride + 1,
        };
        let layer = Conv {
            g,
            wlen: out_channels.saturating_mul(c).saturating_mul(kh * kw),
            relu: false,
        };
        Ok(Built {
            output: ActivationShape::Chw([out_channels, g.oh, g.ow]),
            layer: Some(Box::new(layer)),
            fused: false,
        })
    }
}

/// The executed convolution.
#[derive(Debug)]
struct Conv {
    g: ConvGeom,
    /// Weight floats (`Cout*Cin*KH*KW`); the `Cout` biases follow.
    wlen: usize,
    /// A ReLU fused into the output.
    relu: bool,
}

impl Layer for Conv {
    fn stem(&self) -> &'static str {
        "conv"
    }
    fn in_size(&self) -> usize {
        ActivationShape::Chw([self.g.cin, self.g.h, self.g.w]).size()
    }
    fn out_size(&self) -> usize {
        ActivationShape::Chw([self.g.cout, self.g.oh, self.g.ow]).size()
    }
    fn tensors(&self, name: &str, offset: usize) -> Vec<TensorInfo> {
        let g = &self.g;
        weight_and_bias(name, vec![g.cout, g.cin, g.kh, g.kw], offset)
    }
    fn forward_flops(&self) -> u64 {
        let g = &self.g;
        [g.cout, g.cin, g.kh, g.kw, g.oh, g.ow]
            .iter()
            .fold(2u64, |a, &d| a.saturating_mul(d as u64))
    }
    fn check_limits(&self) -> Result<(), String> {
        let g = &self.g;
        let side = |n: usize| n.saturating_add(g.pad.saturating_mul(2)).saturating_add(1);
        if g.cin.saturating_mul(side(g.h)).saturating_mul(side(g.w)) > u32::MAX as usize / 2 {
            return Err("input too large (offsets are 32-bit)".into());
        }
        Ok(())
    }
    fn fuse_relu(&mut self) -> bool {
        !std::mem::replace(&mut self.relu, true)
    }
    fn per_image(&self) -> Option<&dyn PerImage> {
        Some(self)
    }
}

impl PerImage for Conv {
    fn partial_len(&self) -> usize {
        self.wlen.saturating_add(self.g.cout)
    }
    fn scratch(&self, chunk: usize) -> ScratchSizes {
        self.g.scratch(chunk)
    }
    fn forward(&self, c: ChunkForward<'_>) {
        let (w, bias) = c.params.split_at(self.wlen);
        let (ins, outs) = (self.in_size(), self.out_size());
        for (xi, yi) in c.x.chunks_exact(ins).zip(c.y.chunks_exact_mut(outs)) {
            kernel::forward_image(&self.g, w, bias, xi, yi, c.scratch, self.relu);
        }
    }
    fn backward(&self, c: ChunkBackward<'_>) {
        if self.relu {
            relu_mask(c.dy, c.y);
        }
        let (pw, pb) = c.partial.split_at_mut(self.wlen);
        kernel::backward_weights_chunk(&self.g, c.x, c.dy, c.n, pw, pb, c.scratch);
        if let Some(dx) = c.dx {
            let w = &c.params[..self.wlen];
            let (ins, outs) = (self.in_size(), self.out_size());
            for (dyi, dxi) in c.dy.chunks_exact(outs).zip(dx.chunks_exact_mut(ins)) {
                kernel::backward_input_image(&self.g, w, dyi, dxi, c.scratch);
            }
        }
    }
    /// The weight gradient transposed from `[K, Cout]` to `[Cout, K]`, then
    /// the bias gradient.
    fn reduce_partial(&self, pool: &ComputePool, part: &[f32], grads: &mut [f32]) {
        let g = &self.g;
        let (gw, gb) = grads.split_at_mut(self.wlen);
        pool.for_work(gw.len())
            .for_each_chunk_mut(gw, g.k(), |co, row| {
                for (kk, v) in row.iter_mut().enumerate() {
                    *v = part[kk * g.cout + co];
                }
            });
        gb.copy_from_slice(&part[self.wlen..]);
    }
}
