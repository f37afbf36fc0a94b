//! Max pooling over `k x k` windows with stride `s` (no padding), per image.
//!
//! The forward pass records, for every output, the index (within the image)
//! of the input it took (the first maximum on ties); the backward pass routes
//! each output gradient there.

/// Geometry of one max-pooling layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    pub fn in_size(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn out_size(&self) -> usize {
        self.c * self.oh * self.ow
    }
}

/// `y = max over each window of x`, `arg` = flat input index of the max.
pub(crate) fn forward_image(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    let mut o = 0;
    for c in 0..g.c {
        let base = c * g.h * g.w;
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (iy0, ix0) = (oy * g.stride, ox * g.stride);
                let mut best = base + iy0 * g.w + ix0;
                let mut bv = x[best];
                for ky in 0..g.k {
                    let row = base + (iy0 + ky) * g.w + ix0;
                    for (kx, &v) in x[row..row + g.k].iter().enumerate() {
                        if v > bv {
                            bv = v;
                            best = row + kx;
                        }
                    }
                }
                y[o] = bv;
                arg[o] = best as u32;
                o += 1;
            }
        }
    }
}

/// `dx = 0; dx[arg[o]] += dy[o]` in output order.
pub(crate) fn backward_image(dy: &[f32], arg: &[u32], dx: &mut [f32]) {
    dx.fill(0.0);
    for (&d, &a) in dy.iter().zip(arg) {
        dx[a as usize] += d;
    }
}
