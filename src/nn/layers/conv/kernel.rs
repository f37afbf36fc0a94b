//! 2-D convolution (NCHW, zero padding) as im2col + packed GEMM, one image at
//! a time. The im2col matrix is never written out: the GEMM packs its
//! micro-panels straight from the image ([`Im2col`], [`Im2colT`]); only the
//! input gradient goes through a column buffer (`dcol`, then col2im).
//!
//! Shapes, per image (`K = Cin*KH*KW`, `P = OH*OW`):
//!
//! ```text
//! forward   col[K, P]  = im2col(x[Cin, H, W])
//!           y[Cout, P] = (col^T[P, K] · W^T[K, Cout])^T + b  (then ReLU if fused)
//! backward  dW^T[K, Cout] += col[K, P] · dy[Cout, P]^T   (transposed at the reduction)
//!           db[Cout]    += sum_p dy[Cout, p]
//!           dcol[K, P]   = W[Cout, K]^T · dy[Cout, P];   dx = col2im(dcol)
//! ```

use crate::kernels::direct::{self, Offsets, MAX_PANEL_PAD, NP};
use crate::kernels::gemm::{gemm, gemm_ct, MatRef, PackA, MAX_PACK_COLS, MAX_PACK_ROWS};
use crate::nn::scratch::{Scratch, ScratchSizes};

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
    /// Whether the forward pass runs as a direct convolution (stride 1).
    pub fn direct_forward(&self) -> bool {
        self.stride == 1
    }
    /// Whether the input gradient runs as a direct convolution of the
    /// output gradient with the flipped kernel (stride 1, pad < kernel).
    pub fn direct_dx(&self) -> bool {
        self.stride == 1 && self.pad < self.kh && self.pad < self.kw
    }
    /// Whether the weight gradient runs as a direct kernel (stride 1,
    /// 3-wide kernel, output width a multiple of 8, channels a multiple of 4).
    pub fn direct_dw(&self) -> bool {
        self.stride == 1 && self.kw == 3 && self.ow % 8 == 0 && self.cout % 4 == 0
    }
    /// Floats of one zero-padded input image (plus slack for the last tile).
    pub fn pad_len(&self) -> usize {
        self.cin * (self.h + 2 * self.pad) * (self.w + 2 * self.pad) + NP
    }
    /// Scratch this layer needs per thread, for backward chunks of up to
    /// `chunk` images. Saturating: a plan may describe a layer far too
    /// large to build (see `ModelPlan::memory`).
    pub fn scratch(&self, chunk: usize) -> ScratchSizes {
        let mul = |a: &[usize]| a.iter().fold(1usize, |p, &d| p.saturating_mul(d));
        let add = |a: usize, b: usize| a.saturating_add(b);
        let pad2 = self.pad.saturating_mul(2);
        let (hp, wp) = (add(self.h, pad2), add(self.w, pad2));
        let k = mul(&[self.cin, self.kh, self.kw]);
        let mut s = ScratchSizes {
            col: if self.is_pointwise() {
                0
            } else {
                mul(&[k, self.oh, self.ow])
            },
            ..ScratchSizes::default()
        };
        let pad_len = add(mul(&[self.cin, hp, wp]), NP);
        if self.direct_forward() {
            s.xpad = pad_len;
            s.apack = mul(&[add(self.cout, MAX_PANEL_PAD), k]);
            s.offs = k;
        }
        if self.direct_dx() {
            let (ph, pw) = (self.kh - 1 - self.pad, self.kw - 1 - self.pad);
            let (hq, wq) = (add(self.oh, 2 * ph), add(self.ow, 2 * pw));
            s.xpad = s.xpad.max(add(mul(&[self.cout, hq, wq]), NP));
            let taps = mul(&[self.cout, self.kh, self.kw]);
            s.apack = s.apack.max(mul(&[add(self.cin, MAX_PANEL_PAD), taps]));
            s.offs = s.offs.max(taps);
        }
        if self.direct_dw() {
            s.xpad = s.xpad.max(mul(&[chunk, pad_len]));
            // The transposed output gradient of the AVX-512 weight gradient.
            let qlen = add(mul(&[self.oh - 1, wp]), self.ow);
            s.col = s.col.max(mul(&[
                chunk,
                qlen,
                self.cout.checked_next_multiple_of(16).unwrap_or(usize::MAX),
            ]));
        }
        s
    }
}

/// `col[(c*KH + ky)*KW + kx][oy*OW + ox] = x[c][oy*s+ky-pad][ox*s+kx-pad]`,
/// zero outside the image. (The reference for the implicit im2col.)
#[cfg(test)]
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

/// Direct stride-1 convolution of a zero-padded input `xp` (`cin` channels
/// of `hp x wp`) into `out` (`n_out` channels of `oh x ow`), with weights
/// given by `wt(o, c, ky, kx)`, and `store(o, p0, vals)` receiving each
/// output row segment.
#[allow(clippy::too_many_arguments)]
fn direct_conv(
    (cin, hp, wp): (usize, usize, usize),
    (kh, kw): (usize, usize),
    (n_out, oh, ow): (usize, usize, usize),
    xp: &[f32],
    wt: impl Fn(usize, usize, usize, usize) -> f32,
    apack: &mut [f32],
    offs: &mut [u32],
    mut store: impl FnMut(usize, usize, &[f32]),
) {
    let k = cin * kh * kw;
    let simd = crate::kernels::active_simd();
    let panel_rows = |rem| direct::panel_rows(simd, rem);
    let offs = &mut offs[..k];
    for c in 0..cin {
        for ky in 0..kh {
            for kx in 0..kw {
                offs[(c * kh + ky) * kw + kx] = ((c * hp + ky) * wp + kx) as u32;
            }
        }
    }
    // Weight panels: [panel][k][i], rows past n_out zero.
    let mut off = 0;
    let mut start = 0;
    while start < n_out {
        let mr = panel_rows(n_out - start);
        let mut kk = 0;
        for c in 0..cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    for i in 0..mr {
                        let o = start + i;
                        apack[off + kk * mr + i] = if o < n_out { wt(o, c, ky, kx) } else { 0.0 };
                    }
                    kk += 1;
                }
            }
        }
        off += k * mr;
        start += mr;
    }
    let offs = Offsets::new(offs);
    let mut tile = [0f32; crate::kernels::microkernel::MAX_TILE];
    for oy in 0..oh {
        for ox0 in (0..ow).step_by(NP) {
            let n = NP.min(ow - ox0);
            let base = oy * wp + ox0;
            let (mut start, mut off) = (0, 0);
            while start < n_out {
                let mr = panel_rows(n_out - start);
                let a = &apack[off..off + k * mr];
                direct::tile(simd, mr, a, xp, base, offs, &mut tile);
                for i in 0..mr.min(n_out - start) {
                    store(start + i, oy * ow + ox0, &tile[i * NP..i * NP + n]);
                }
                off += k * mr;
                start += mr;
            }
        }
    }
}

/// Copies `x` (`c` channels of `h x w`) into `xp` with `ph`/`pw` zeros around.
fn pad_into(x: &[f32], (c, h, w): (usize, usize, usize), (ph, pw): (usize, usize), xp: &mut [f32]) {
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    let xp = &mut xp[..c * hp * wp + NP];
    xp.fill(0.0);
    for ci in 0..c {
        for y in 0..h {
            let d = (ci * hp + y + ph) * wp + pw;
            xp[d..d + w].copy_from_slice(&x[(ci * h + y) * w..(ci * h + y + 1) * w]);
        }
    }
}

/// Forward for one image as a direct convolution (needs `direct_forward`),
/// with bias and (when `relu`) ReLU applied as each tile is stored.
pub(crate) fn forward_image_direct(
    g: &ConvGeom,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    s: &mut Scratch,
    relu: bool,
) {
    debug_assert!(g.direct_forward());
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    pad_into(x, (g.cin, g.h, g.w), (g.pad, g.pad), &mut s.xpad);
    let (k, p) = (g.k(), g.p());
    direct_conv(
        (g.cin, hp, wp),
        (g.kh, g.kw),
        (g.cout, g.oh, g.ow),
        &s.xpad,
        |o, c, ky, kx| w[o * k + (c * g.kh + ky) * g.kw + kx],
        &mut s.apack,
        &mut s.offs,
        |o, p0, vals| {
            let dst = &mut y[o * p + p0..o * p + p0 + vals.len()];
            let bias = b[o];
            if relu {
                for (d, v) in dst.iter_mut().zip(vals) {
                    *d = (v + bias).max(0.0);
                }
            } else {
                for (d, v) in dst.iter_mut().zip(vals) {
                    *d = v + bias;
                }
            }
        },
    );
}

/// Weight gradient (transposed, `dwt[K, Cout]`, assigned) of `n` images
/// straight from the zero-padded images (needs `direct_dw`): 4 output
/// channels x the 3 taps of one input row per tile, reduced over all pixels
/// of all `n` images (so the tile overhead is paid once per chunk).
fn backward_dw_direct(
    g: &ConvGeom,
    xs: &[f32],
    dys: &[f32],
    n: usize,
    dwt: &mut [f32],
    s: &mut Scratch,
) {
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let plen = g.pad_len();
    let ins = g.cin * g.h * g.w;
    for j in 0..n {
        pad_into(
            &xs[j * ins..(j + 1) * ins],
            (g.cin, g.h, g.w),
            (g.pad, g.pad),
            &mut s.xpad[j * plen..(j + 1) * plen],
        );
    }
    let p = g.p();
    let d = direct::DwDims {
        nimg: n,
        dys: p,
        dy_img: g.cout * p,
        x_img: plen,
        oh: g.oh,
        ow: g.ow,
        wp,
    };
    let simd = crate::kernels::active_simd();
    // With few taps (a first layer's 27) transposing dy costs more than
    // the horizontal sums it saves.
    #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
    if let crate::kernels::Simd::Avx512(k) = simd {
        if g.k() >= 64 {
            return backward_dw_taps(k, g, dys, n, dwt, s);
        }
    }
    let mut t = [0f32; 12];
    // Channel panels outermost: the panel's dy (4 channels x n images) stays
    // in L1 while the padded images stream past it once per panel.
    for co in (0..g.cout).step_by(4) {
        for c in 0..g.cin {
            for ky in 0..g.kh {
                let xoff = (c * hp + ky) * wp;
                let k0 = (c * g.kh + ky) * 3;
                direct::dw_tile_4x3(simd, &dys[co * p..], &s.xpad[..n * plen], xoff, d, &mut t);
                for i in 0..4 {
                    for kx in 0..3 {
                        dwt[(k0 + kx) * g.cout + co + i] = t[i * 3 + kx];
                    }
                }
            }
        }
    }
}

/// [`backward_dw_direct`] on AVX-512, after the padded images are in
/// `s.xpad`: the output gradient transposed to `[image][oy*wp + ox][Cout]`
/// (zero at the padding columns) in `s.col`, then tiles of 8 taps x 32 (or
/// 16) output channels, each element reduced over all pixels of all `n`
/// images in order, with no horizontal sums.
#[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
fn backward_dw_taps(
    k: crate::kernels::microkernel::Avx512,
    g: &ConvGeom,
    dys: &[f32],
    n: usize,
    dwt: &mut [f32],
    s: &mut Scratch,
) {
    use crate::kernels::direct::{dw_taps_tile, DwTaps, DW_TAPS};
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let (p, cout, ow) = (g.p(), g.cout, g.ow);
    let qlen = (g.oh - 1) * wp + ow;
    let ldd = cout.next_multiple_of(16);
    let dyt = &mut s.col[..n * qlen * ldd];
    dyt.fill(0.0);
    for j in 0..n {
        let dyj = &dys[j * cout * p..(j + 1) * cout * p];
        let dtj = &mut dyt[j * qlen * ldd..(j + 1) * qlen * ldd];
        for oy in 0..g.oh {
            for ox in 0..ow {
                let row = &mut dtj[(oy * wp + ox) * ldd..][..cout];
                for (co, v) in row.iter_mut().enumerate() {
                    *v = dyj[co * p + oy * ow + ox];
                }
            }
        }
    }
    let op = DwTaps {
        xp: &s.xpad[..n * g.pad_len()],
        x_img: g.pad_len(),
        dyt: &s.col[..n * qlen * ldd],
        ldd,
        nimg: n,
        qlen,
    };
    let kk = g.k();
    let tap_off = |t: usize| {
        let (c, ky, kx) = (t / (g.kh * g.kw), (t / g.kw) % g.kh, t % g.kw);
        (c * hp + ky) * wp + kx
    };
    let mut tile = [0f32; crate::kernels::microkernel::MAX_TILE];
    for t0 in (0..kk).step_by(DW_TAPS) {
        let taps = DW_TAPS.min(kk - t0);
        let offs: [usize; DW_TAPS] =
            std::array::from_fn(|i| if i < taps { tap_off(t0 + i) } else { 0 });
        let mut j0 = 0;
        while j0 < cout {
            let nv = if j0 + 32 <= ldd { 2 } else { 1 };
            dw_taps_tile(k, op, &offs, j0, nv, &mut tile);
            let cols = (16 * nv).min(cout - j0);
            for i in 0..taps {
                let dst = &mut dwt[(t0 + i) * cout + j0..][..cols];
                dst.copy_from_slice(&tile[i * 32..i * 32 + cols]);
            }
            j0 += 16 * nv;
        }
    }
}

/// Input gradient of one image as a direct convolution of `dy` (padded by
/// `k - 1 - pad`) with the flipped, transposed kernel (needs `direct_dx`).
pub(crate) fn backward_dx_direct(
    g: &ConvGeom,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    s: &mut Scratch,
) {
    debug_assert!(g.direct_dx());
    let (ph, pw) = (g.kh - 1 - g.pad, g.kw - 1 - g.pad);
    let (hq, wq) = (g.oh + 2 * ph, g.ow + 2 * pw);
    pad_into(dy, (g.cout, g.oh, g.ow), (ph, pw), &mut s.xpad);
    let (kh, kw, cin) = (g.kh, g.kw, g.cin);
    let hw = g.h * g.w;
    direct_conv(
        (g.cout, hq, wq),
        (kh, kw),
        (cin, g.h, g.w),
        &s.xpad,
        // tap (co, ky, kx) of output channel c: W[co][c][kh-1-ky][kw-1-kx]
        |c, co, ky, kx| w[((co * cin + c) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)],
        &mut s.apack,
        &mut s.offs,
        |c, p0, vals| dx[c * hw + p0..c * hw + p0 + vals.len()].copy_from_slice(vals),
    );
}

/// `out[j] = col[k][p0 + j]` for `j < out.len()`: a run of one im2col row,
/// generated from the image (runs may span several output rows).
fn im2col_run(g: &ConvGeom, x: &[f32], k: usize, p0: usize, out: &mut [f32]) {
    let kx = k % g.kw;
    let ky = (k / g.kw) % g.kh;
    let c = k / (g.kw * g.kh);
    let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
    let (lo, hi) = g.valid_ox(kx);
    let mut p = p0;
    let end = p0 + out.len();
    while p < end {
        let (oy, ox0) = (p / g.ow, p % g.ow);
        let ox1 = g.ow.min(ox0 + (end - p));
        let seg = &mut out[p - p0..p - p0 + (ox1 - ox0)];
        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
        let (a, b) = (lo.max(ox0), hi.min(ox1));
        if iy < 0 || iy >= g.h as isize || a >= b {
            seg.fill(0.0);
        } else {
            let xrow = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
            seg[..a - ox0].fill(0.0);
            seg[b - ox0..].fill(0.0);
            let ix0 = a * g.stride + kx - g.pad;
            let dst = &mut seg[a - ox0..b - ox0];
            if g.stride == 1 {
                dst.copy_from_slice(&xrow[ix0..ix0 + (b - a)]);
            } else {
                for (o, v) in dst.iter_mut().zip(xrow[ix0..].iter().step_by(g.stride)) {
                    *o = *v;
                }
            }
        }
        p += ox1 - ox0;
    }
}

/// The im2col matrix `col[K, P]` of one image as a GEMM operand, packed
/// straight from the image (never materialised).
#[derive(Clone, Copy)]
pub(crate) struct Im2col<'a> {
    pub g: &'a ConvGeom,
    pub x: &'a [f32],
}

impl PackA for Im2col<'_> {
    fn rows(&self) -> usize {
        self.g.k()
    }
    fn cols(&self) -> usize {
        self.g.p()
    }
    fn pack(&self, dst: &mut [f32], r0: usize, rn: usize, k0: usize, kc: usize, w: usize) {
        let mut run = [0f32; MAX_PACK_COLS];
        for pnl in 0..rn.div_ceil(w) {
            let panel = &mut dst[pnl * kc * w..(pnl + 1) * kc * w];
            for i in 0..w {
                let r = pnl * w + i;
                if r < rn {
                    im2col_run(self.g, self.x, r0 + r, k0, &mut run[..kc]);
                    for (o, v) in panel.chunks_exact_mut(w).zip(&run[..kc]) {
                        o[i] = *v;
                    }
                } else {
                    panel.chunks_exact_mut(w).for_each(|o| o[i] = 0.0);
                }
            }
        }
    }
}

/// The transposed im2col matrix `col^T[P, K]` of one image, packed straight
/// from the image: a panel row is a run of pixels, contiguous in the input.
#[derive(Clone, Copy)]
pub(crate) struct Im2colT<'a> {
    pub g: &'a ConvGeom,
    pub x: &'a [f32],
}

impl PackA for Im2colT<'_> {
    fn rows(&self) -> usize {
        self.g.p()
    }
    fn cols(&self) -> usize {
        self.g.k()
    }
    fn pack(&self, dst: &mut [f32], r0: usize, rn: usize, k0: usize, kc: usize, w: usize) {
        match w {
            6 => pack_t::<6>(self, dst, r0, rn, k0, kc),
            8 => pack_t::<8>(self, dst, r0, rn, k0, kc),
            16 => pack_t::<16>(self, dst, r0, rn, k0, kc),
            _ => unreachable!("no kernel has panels of width {w}"),
        }
    }
}

fn pack_t<const W: usize>(
    s: &Im2colT<'_>,
    dst: &mut [f32],
    r0: usize,
    rn: usize,
    k0: usize,
    kc: usize,
) {
    let mut run = [0f32; MAX_PACK_ROWS + 16];
    let panels = rn.div_ceil(W);
    run[rn..panels * W].fill(0.0);
    for kk in 0..kc {
        im2col_run(s.g, s.x, k0 + kk, r0, &mut run[..rn]);
        for pnl in 0..panels {
            let o: &mut [f32; W] = (&mut dst[pnl * kc * W + kk * W..][..W]).try_into().unwrap();
            *o = run[pnl * W..pnl * W + W].try_into().unwrap();
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
/// Stride 1 runs as a direct convolution; other strides as an implicit-im2col
/// GEMM.
pub(crate) fn forward_image(
    g: &ConvGeom,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    s: &mut Scratch,
    relu: bool,
) {
    if g.direct_forward() {
        return forward_image_direct(g, w, b, x, y, s, relu);
    }
    let (k, p) = (g.k(), g.p());
    // y^T[P, Cout] = col^T[P, K] · W^T[K, Cout], stored transposed as
    // y[Cout, P]: the long pixel dimension is the GEMM's M, the short
    // channel dimension its N. The im2col matrix is generated straight into
    // the GEMM's panels.
    let wt = MatRef::row_major(w, g.cout, k).t();
    if g.is_pointwise() {
        gemm_ct(&mut s.gemm, MatRef::row_major(x, k, p).t(), wt, y, p, false);
    } else {
        gemm_ct(&mut s.gemm, Im2colT { g, x }, wt, y, p, false);
    }
    for (row, &bias) in y.chunks_exact_mut(p).zip(b) {
        if relu {
            row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
        } else {
            row.iter_mut().for_each(|v| *v += bias);
        }
    }
}

/// Weight and bias gradients of a chunk of `n` images (`xs`, `dys`
/// concatenated), ASSIGNED to `dwt` (TRANSPOSED, `[K, Cout]`, so that the
/// GEMM path packs the column matrix along its rows) and `db`, summed over
/// the chunk in a fixed order. `dys` must already be masked by a fused ReLU.
pub(crate) fn backward_weights_chunk(
    g: &ConvGeom,
    xs: &[f32],
    dys: &[f32],
    n: usize,
    dwt: &mut [f32],
    db: &mut [f32],
    s: &mut Scratch,
) {
    let (k, p) = (g.k(), g.p());
    let (ins, outs) = (g.cin * g.h * g.w, g.cout * p);
    if g.direct_dw() {
        backward_dw_direct(g, xs, dys, n, dwt, s);
    } else {
        // dW^T[K, Cout] += col[K, P] · dy^T[P, Cout], col packed from the image.
        for j in 0..n {
            let x = &xs[j * ins..(j + 1) * ins];
            let dym = MatRef::row_major(&dys[j * outs..(j + 1) * outs], g.cout, p);
            if g.is_pointwise() {
                gemm(
                    &mut s.gemm,
                    MatRef::row_major(x, k, p),
                    dym.t(),
                    dwt,
                    g.cout,
                    j > 0,
                );
            } else {
                gemm(&mut s.gemm, Im2col { g, x }, dym.t(), dwt, g.cout, j > 0);
            }
        }
    }
    for j in 0..n {
        for (d, row) in db
            .iter_mut()
            .zip(dys[j * outs..(j + 1) * outs].chunks_exact(p))
        {
            let s = sum8(row);
            *d = if j == 0 { s } else { *d + s };
        }
    }
}

/// Sum in 8 interleaved lanes, then the lanes pairwise: a fixed order that
/// vectorises (a plain `iter().sum()` is one dependent add per element).
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let a = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (a[0] + a[2]) + (a[1] + a[3]) + tail
}

/// Input gradient of one image: a direct convolution with the flipped
/// kernel for stride 1, else `dcol = W^T · dy` and col2im.
pub(crate) fn backward_input_image(
    g: &ConvGeom,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    s: &mut Scratch,
) {
    let (k, p) = (g.k(), g.p());
    let dym = MatRef::row_major(dy, g.cout, p);
    let wt = MatRef::row_major(w, g.cout, k).t();
    if g.direct_dx() {
        backward_dx_direct(g, w, dy, dx, s);
    } else if g.is_pointwise() {
        gemm(&mut s.gemm, wt, dym, dx, p, false);
    } else {
        gemm(&mut s.gemm, wt, dym, &mut s.col, p, false);
        col2im(g, &s.col, dx);
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
            let mut col = vec![0f32; g.k() * g.p()];
            let mut sc = Scratch::default();
            let sz = g.scratch(1);
            sc.col.resize(sz.col, 0.0);
            sc.xpad.resize(sz.xpad, 0.0);
            sc.apack.resize(sz.apack, 0.0);
            sc.offs.resize(sz.offs, 0);
            let dy = vec![0.3f32; cout * g.p()];
            let mut dwt = vec![0f32; cout * g.k()];
            let mut db = vec![0f32; cout];
            let mut dx = vec![0f32; g.in_size()];
            let t_im2col = best(|| im2col(&g, &x, &mut col));
            let t_fwd = best(|| forward_image(&g, &w, &b, &x, &mut y, &mut sc, true));
            let t_dw = best(|| backward_weights_chunk(&g, &x, &dy, 1, &mut dwt, &mut db, &mut sc));
            let t_bwd = best(|| {
                backward_weights_chunk(&g, &x, &dy, 1, &mut dwt, &mut db, &mut sc);
                backward_input_image(&g, &w, &dy, &mut dx, &mut sc)
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
