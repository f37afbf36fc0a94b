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

#[cfg(test)]
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
    if g.k == 2 && g.stride == 2 {
        return forward_2x2(g, x, y, arg);
    }
    forward_general(g, x, y, arg)
}

fn forward_general(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
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

/// The common 2x2 stride-2 case without data-dependent branches (the
/// winner of each comparison is unpredictable); same tie rule (first in
/// raster order).
fn forward_2x2(g: &PoolGeom, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    #[inline(always)]
    fn pick(a: (f32, u32), b: (f32, u32)) -> (f32, u32) {
        if b.0 > a.0 {
            b
        } else {
            a
        }
    }
    let mut o = 0;
    for c in 0..g.c {
        let base = c * g.h * g.w;
        for oy in 0..g.oh {
            let r0 = base + 2 * oy * g.w;
            let r1 = r0 + g.w;
            let (top, bot) = (&x[r0..r0 + 2 * g.ow], &x[r1..r1 + 2 * g.ow]);
            let (yr, ar) = (&mut y[o..o + g.ow], &mut arg[o..o + g.ow]);
            for ox in 0..g.ow {
                let i = (2 * ox) as u32;
                let a = pick(
                    (top[2 * ox], r0 as u32 + i),
                    (top[2 * ox + 1], r0 as u32 + i + 1),
                );
                let b = pick(
                    (bot[2 * ox], r1 as u32 + i),
                    (bot[2 * ox + 1], r1 as u32 + i + 1),
                );
                let m = pick(a, b);
                yr[ox] = m.0;
                ar[ox] = m.1;
            }
            o += g.ow;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_2x2_matches_general_including_ties() {
        let g = PoolGeom {
            c: 3,
            h: 6,
            w: 8,
            k: 2,
            stride: 2,
            oh: 3,
            ow: 4,
        };
        // Few distinct values: many ties.
        let x: Vec<f32> = (0..g.in_size()).map(|i| ((i * 7) % 3) as f32).collect();
        let (mut y1, mut a1) = (vec![0f32; g.out_size()], vec![0u32; g.out_size()]);
        let (mut y2, mut a2) = (vec![0f32; g.out_size()], vec![0u32; g.out_size()]);
        forward_2x2(&g, &x, &mut y1, &mut a1);
        forward_general(&g, &x, &mut y2, &mut a2);
        assert_eq!((y1, a1), (y2, a2));
    }
}
