//! 2-D convolution (NCHW, zero padding) as im2col + packed GEMM, one image at
//! a time so the column buffer of one image (not of a batch) is all the
//! scratch a thread needs.
//!
//! Shapes, per image (`K = Cin*KH*KW`, `P = OH*OW`):
//!
//! ```text
//! forward   col[K, P]  = im2col(x[Cin, H, W])
//!           y[Cout, P] = W[Cout, K] · col[K, P] + b          (then ReLU if fused)
//! backward  dW^T[K, Cout] += col[K, P] · dy[Cout, P]^T   (transposed at the reduction)
//!           db[Cout]    += sum_p dy[Cout, p]
//!           dcol[K, P]   = W[Cout, K]^T · dy[Cout, P];   dx = col2im(dcol)
//! ```

use crate::kernels::gemm::{gemm, GemmWorkspace, MatRef};

/// Geometry of one convolution layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeom {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Rows of the column matrix (`Cin*KH*KW`).
    pub fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    /// Output pixels per channel.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    #[cfg(test)]
    pub fn in_size(&self) -> usize {
        self.cin * self.h * self.w
    }
    /// Column matrix floats per image (0 when the input is used directly).
    pub fn col_size(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.k() * self.p()
        }
    }
    /// 1x1, stride 1, no padding: the input already is the column matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Output columns `ox` whose input column `ox*s + kx - pad` is in range.
    fn valid_ox(&self, kx: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        // ox*s + kx >= p  <=>  ox >= ceil((p - kx) / s)
        let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
        // ox*s + kx - p <= w - 1  <=>  ox <= (w - 1 + p - kx) / s
        let hi = if self.w + p > kx {
            ((self.w - 1 + p - kx) / s + 1).min(self.ow)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// `col[(c*KH + ky)*KW + kx][oy*OW + ox] = x[c][oy*s+ky-pad][ox*s+kx-pad]`,
/// zero outside the image.
pub(crate) fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let p = g.p();
    for c in 0..g.cin {
        let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = ((c * g.kh + ky) * g.kw + kx) * p;
                let row = &mut col[row..row + p];
                let (lo, hi) = g.valid_ox(kx);
                for oy in 0..g.oh {
                    let out = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize || lo >= hi {
                        out.fill(0.0);
                        continue;
                    }
                    let xrow = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    let ix0 = lo * g.stride + kx - g.pad;
                    if g.stride == 1 {
                        out[lo..hi].copy_from_slice(&xrow[ix0..ix0 + (hi - lo)]);
                    } else {
                        for (o, v) in out[lo..hi]
                            .iter_mut()
                            .zip(xrow[ix0..].iter().step_by(g.stride))
                        {
                            *o = *v;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: `dx = 0; dx[...] += dcol[...]`, in a fixed order.
pub(crate) fn col2im(g: &ConvGeom, col: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    let p = g.p();
    for c in 0..g.cin {
        let dxc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = ((c * g.kh + ky) * g.kw + kx) * p;
                let row = &col[row..row + p];
                let (lo, hi) = g.valid_ox(kx);
                if lo >= hi {
                    continue;
                }
                for oy in 0..g.oh {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let src = &row[oy * g.ow + lo..oy * g.ow + hi];
                    let ix0 = lo * g.stride + kx - g.pad;
                    let drow = &mut dxc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    if g.stride == 1 {
                        for (d, s) in drow[ix0..ix0 + (hi - lo)].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (d, s) in drow[ix0..].iter_mut().step_by(g.stride).zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

/// Forward for one image: `y = W·im2col(x) + b`, ReLU'd when `relu`.
pub(crate) fn forward_image(
    g: &ConvGeom,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    col: &mut [f32],
    ws: &mut GemmWorkspace,
    relu: bool,
) {
    let (k, p) = (g.k(), g.p());
    let colm = if g.is_pointwise() {
        MatRef::row_major(x, k, p)
    } else {
        im2col(g, x, col);
        MatRef::row_major(col, k, p)
    };
    gemm(ws, MatRef::row_major(w, g.cout, k), colm, y, p, false);
    for (row, &bias) in y.chunks_exact_mut(p).zip(b) {
        if relu {
            row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
        } else {
            row.iter_mut().for_each(|v| *v += bias);
        }
    }
}

/// Backward for one image. Adds this image's weight gradient, TRANSPOSED
/// (`dwt[K, Cout]`, so that the GEMM packs the 4 KiB-strided column matrix
/// along its rows), and bias gradient to `dwt`/`db` (or assigns them when
/// `first`), and writes the input gradient into `dx` when given. `dy` must
/// already be masked by a fused ReLU.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_image(
    g: &ConvGeom,
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    dwt: &mut [f32],
    db: &mut [f32],
    first: bool,
    dx: Option<&mut [f32]>,
    col: &mut [f32],
    ws: &mut GemmWorkspace,
) {
    let (k, p) = (g.k(), g.p());
    let dym = MatRef::row_major(dy, g.cout, p);
    {
        let colm = if g.is_pointwise() {
            MatRef::row_major(x, k, p)
        } else {
            im2col(g, x, col);
            MatRef::row_major(col, k, p)
        };
        // dW^T[K, Cout] = col[K, P] · dy^T[P, Cout]
        gemm(ws, colm, dym.t(), dwt, g.cout, !first);
    }
    for (d, row) in db.iter_mut().zip(dy.chunks_exact(p)) {
        let s: f32 = row.iter().sum();
        if first {
            *d = s;
        } else {
            *d += s;
        }
    }
    if let Some(dx) = dx {
        let wt = MatRef::row_major(w, g.cout, k).t();
        if g.is_pointwise() {
            gemm(ws, wt, dym, dx, p, false);
        } else {
            gemm(ws, wt, dym, col, p, false);
            col2im(g, col, dx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(cin: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> ConvGeom {
        ConvGeom {
            cin,
            h,
            w,
            cout: 1,
            kh: k,
            kw: k,
            stride: s,
            pad: p,
            oh: (h + 2 * p - k) / s + 1,
            ow: (w + 2 * p - k) / s + 1,
        }
    }

    /// im2col against the definition, and col2im as its exact adjoint:
    /// <im2col(x), c> == <x, col2im(c)>.
    #[test]
    fn im2col_matches_definition_and_col2im_is_adjoint() {
        for &(cin, h, w, k, s, p) in &[
            (1, 5, 5, 3, 1, 1),
            (2, 6, 7, 3, 2, 1),
            (3, 4, 4, 5, 1, 2),
            (1, 7, 5, 2, 3, 0),
            (2, 3, 3, 3, 1, 3),
        ] {
            let g = geom(cin, h, w, k, s, p);
            let x: Vec<f32> = (0..g.in_size()).map(|i| i as f32 + 1.0).collect();
            let mut col = vec![f32::NAN; g.k() * g.p()];
            im2col(&g, &x, &mut col);
            for c in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                let want =
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        0.0
                                    } else {
                                        x[(c * h + iy as usize) * w + ix as usize]
                                    };
                                let r = (c * k + ky) * k + kx;
                                assert_eq!(col[r * g.p() + oy * g.ow + ox], want);
                            }
                        }
                    }
                }
            }
            let cvec: Vec<f32> = (0..col.len()).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
            let mut dx = vec![f32::NAN; x.len()];
            col2im(&g, &cvec, &mut dx);
            let lhs: f64 = col
                .iter()
                .zip(&cvec)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            let rhs: f64 = x
                .iter()
                .zip(&dx)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum();
            assert_eq!(lhs, rhs);
        }
    }
}

/// Speed probe: `cargo test --release --lib conv_speed -- --ignored --nocapture`.
#[cfg(test)]
mod speed {
    use super::*;
    use std::time::Instant;

    fn best(mut f: impl FnMut()) -> f64 {
        let mut s = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            for _ in 0..10 {
                f();
            }
            s = s.min(t.elapsed().as_secs_f64() / 10.0);
        }
        s * 1e6
    }

    #[test]
    #[ignore]
    fn conv_speed() {
        for &(cin, hw, cout) in &[
            (3usize, 32usize, 32usize),
            (32, 32, 32),
            (32, 16, 64),
            (64, 16, 64),
        ] {
            let g = ConvGeom {
                cin,
                h: hw,
                w: hw,
                cout,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
                oh: hw,
                ow: hw,
            };
            let x = vec![0.5f32; g.in_size()];
            let w = vec![0.1f32; cout * g.k()];
            let b = vec![0.0f32; cout];
            let mut y = vec![0f32; cout * g.p()];
            let mut col = vec![0f32; g.col_size()];
            let mut ws = GemmWorkspace::default();
            let dy = vec![0.3f32; cout * g.p()];
            let mut dwt = vec![0f32; cout * g.k()];
            let mut db = vec![0f32; cout];
            let mut dx = vec![0f32; g.in_size()];
            let t_im2col = best(|| im2col(&g, &x, &mut col));
            let t_fwd = best(|| forward_image(&g, &w, &b, &x, &mut y, &mut col, &mut ws, true));
            let t_dw = best(|| {
                backward_image(
                    &g, &w, &x, &dy, &mut dwt, &mut db, true, None, &mut col, &mut ws,
                )
            });
            let t_bwd = best(|| {
                backward_image(
                    &g,
                    &w,
                    &x,
                    &dy,
                    &mut dwt,
                    &mut db,
                    true,
                    Some(&mut dx),
                    &mut col,
                    &mut ws,
                )
            });
            let t_col2im = best(|| col2im(&g, &col, &mut dx));
            let fl = 2.0 * (cout * g.k() * g.p()) as f64;
            eprintln!(
                "cin{cin} hw{hw} cout{cout}: im2col {t_im2col:.0}us fwd {t_fwd:.0}us ({:.1} GF/s) dw-only {t_dw:.0}us ({:.1}) bwd {t_bwd:.0}us ({:.1}) col2im {t_col2im:.0}us",
                fl / t_fwd / 1e3,
                fl / t_dw / 1e3,
                2.0 * fl / t_bwd / 1e3
            );
        }
    }
}
