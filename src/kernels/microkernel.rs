//! GEMM microkernels: `MR x NR` tile of `A · B` from packed or strided panels.
//!
//! A kernel reads `kc` steps of an `MR`-tall panel of A, element `(i, k)` at
//! `a[i*rsa + k*csa]` (a packed panel has `rsa = 1, csa = MR`; a row-major
//! matrix read in place has `rsa = lda, csa = 1`), and an `NR`-wide panel of
//! B, element `(k, j)` at `b[k*ldb + j]` (packed: `ldb = NR`), and writes the
//! tile `ab[i*NR + j] = sum_k a(i, k) * b(k, j)`, accumulating in `k` order,
//! each element independently. The driver adds the tile to C.
//!
//! Because every element is accumulated on its own in `k` order, the result
//! for one element of C never depends on which tile, which kernel shape or
//! which operand layout computed it: only the `K` dimension's blocking
//! matters (see `gemm`), and whether the multiply-add is fused (it is in
//! both x86 SIMD kernels, so AVX2 and AVX-512 give the same bits).

/// The largest `MR * NR` of any kernel (size of the driver's tile buffer).
pub(crate) const MAX_TILE: usize = 256;

/// A microkernel with its tile shape.
pub(crate) trait Kernel: Copy {
    /// Rows of the tile (rows of A per packed panel).
    const MR: usize;
    /// Columns of the tile (columns of B per packed panel).
    const NR: usize;
    /// `ab = a · b` over `kc` steps; see the module docs for the layouts.
    /// Panics if a read would leave `a` or `b`.
    fn tile(
        self,
        kc: usize,
        a: &[f32],
        rsa_csa: (usize, usize),
        b: &[f32],
        ldb: usize,
        ab: &mut [f32; MAX_TILE],
    );
}

/// Panics unless every read of a `mr x nr` tile over `kc` steps is inside
/// `a` and `b` (`kc > 0`).
#[inline(always)]
fn check_reads(
    kc: usize,
    mr: usize,
    nr: usize,
    a: usize,
    (rsa, csa): (usize, usize),
    b: usize,
    ldb: usize,
) {
    assert!(kc > 0 && ldb >= nr, "microkernel: bad panel shape");
    assert!(
        (mr - 1) * rsa + (kc - 1) * csa < a && (kc - 1) * ldb + nr <= b,
        "microkernel: panel out of bounds"
    );
}

/// Portable kernel, 8x8. On aarch64 LLVM turns the inner loops into NEON
/// `fmla` (fused multiply-add, always available there); on other targets it
/// uses separate multiply and add (fused `mul_add` would be a libm call).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_arch = "aarch64")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        a * b + c
    }
}

impl Kernel for Portable {
    const MR: usize = 8;
    const NR: usize = 8;

    #[inline]
    fn tile(
        self,
        kc: usize,
        a: &[f32],
        (rsa, csa): (usize, usize),
        b: &[f32],
        ldb: usize,
        ab: &mut [f32; MAX_TILE],
    ) {
        const MR: usize = 8;
        const NR: usize = 8;
        if kc == 0 {
            ab[..MR * NR].fill(0.0);
            return;
        }
        check_reads(kc, MR, NR, a.len(), (rsa, csa), b.len(), ldb);
        let acc = if rsa == 1 && csa == MR && ldb == NR {
            portable_packed_8x8(kc, &a[..kc * MR], &b[..kc * NR])
        } else {
            portable_strided_8x8(kc, a, (rsa, csa), b, ldb)
        };
        for i in 0..MR {
            ab[i * NR..(i + 1) * NR].copy_from_slice(&acc[i]);
        }
    }
}

/// The packed 8x8 tile (`a`: `kc` steps of 8, `b`: `kc` steps of 8), in
/// the fixed-size form LLVM vectorises best. Never inlined: one call per
/// tile costs nothing against its `kc` steps, and `.ci/aarch64-mca` finds
/// its loop by this name.
#[inline(never)]
fn portable_packed_8x8(kc: usize, a: &[f32], b: &[f32]) -> [[f32; 8]; 8] {
    const MR: usize = 8;
    const NR: usize = 8;
    let mut acc = [[0f32; NR]; MR];
    for (ak, bk) in a[..kc * MR]
        .chunks_exact(MR)
        .zip(b[..kc * NR].chunks_exact(NR))
    {
        let ak: &[f32; MR] = ak.try_into().unwrap();
        let bk: &[f32; NR] = bk.try_into().unwrap();
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = madd(ak[i], bk[j], acc[i][j]);
            }
        }
    }
    acc
}

/// The strided 8x8 tile (reads checked by the caller): the same
/// multiply-adds in the same order as [`portable_packed_8x8`].
#[inline(never)]
fn portable_strided_8x8(
    kc: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    ldb: usize,
) -> [[f32; 8]; 8] {
    const MR: usize = 8;
    const NR: usize = 8;
    let mut acc = [[0f32; NR]; MR];
    for k in 0..kc {
        let bk: &[f32; NR] = b[k * ldb..k * ldb + NR].try_into().unwrap();
        let mut ak = [0f32; MR];
        for (i, v) in ak.iter_mut().enumerate() {
            *v = a[i * rsa + k * csa];
        }
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = madd(ak[i], bk[j], acc[i][j]);
            }
        }
    }
    acc
}

#[cfg(target_arch = "aarch64")]
pub(crate) use neon::Neon;

#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
pub(crate) mod neon {
    use super::{check_reads, Kernel, MAX_TILE};
    use std::arch::aarch64::*;

    /// aarch64 NEON kernel, 8x8 (16 q-register accumulators, 2 loads of B
    /// and 8 elements of A per step, 16 `fmla` by element). Each element is
    /// one chain of fused multiply-adds in `k` order, as in the portable
    /// kernel on aarch64, so the two give the same bits. The value proves
    /// the CPU has NEON (always true on aarch64 Linux; checked anyway).
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Neon(());

    impl Neon {
        /// `Some` when this CPU has NEON (Advanced SIMD).
        pub(crate) fn detect() -> Option<Neon> {
            std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
        }
    }

    impl Kernel for Neon {
        const MR: usize = 8;
        const NR: usize = 8;

        #[inline]
        fn tile(
            self,
            kc: usize,
            a: &[f32],
            (rsa, csa): (usize, usize),
            b: &[f32],
            ldb: usize,
            ab: &mut [f32; MAX_TILE],
        ) {
            if kc == 0 {
                ab[..64].fill(0.0);
                return;
            }
            check_reads(kc, 8, 8, a.len(), (rsa, csa), b.len(), ldb);
            let (a, b, ab) = (a.as_ptr(), b.as_ptr(), ab.as_mut_ptr());
            // SAFETY: `self` exists only if NEON was detected; the kernels
            // read a[i*rsa + k*csa] for i < 8, k < kc and
            // b[k*ldb .. k*ldb + 8] for k < kc (in bounds: checked above)
            // and write ab[..64] (MAX_TILE >= 64), all unaligned.
            unsafe {
                if rsa == 1 && csa == 8 && ldb == 8 {
                    packed_8x8(kc, a, b, ab)
                } else if rsa == 1 {
                    cols_8x8(kc, a, csa, b, ldb, ab)
                } else if csa == 1 {
                    rows_8x8(kc, a, rsa, b, ldb, ab)
                } else {
                    strided_8x8(kc, a, rsa, csa, b, ldb, ab)
                }
            }
        }
    }

    /// Stores the 16 accumulators as the row-major 8x8 tile.
    ///
    /// # Safety
    /// `ab` must be valid for 64 writes.
    #[inline(always)]
    unsafe fn store(c: &[[float32x4_t; 2]; 8], ab: *mut f32) {
        for (i, ci) in c.iter().enumerate() {
            // SAFETY: i*8 + 7 < 64 (the caller's guarantee).
            unsafe {
                vst1q_f32(ab.add(i * 8), ci[0]);
                vst1q_f32(ab.add(i * 8 + 4), ci[1]);
            }
        }
    }

    /// A with contiguous columns (`rsa == 1`: 8 rows of a step side by
    /// side; `PACKED`: a packed panel, `csa == ldb == 8`, constants for
    /// LLVM), inlined into [`packed_8x8`] and [`cols_8x8`].
    ///
    /// # Safety
    /// NEON present; `a[k*csa..][..8]` and `b[k*ldb..][..8]` (k < kc) valid
    /// reads, `ab` valid for 64 writes.
    #[inline(always)]
    unsafe fn cols<const PACKED: bool>(
        kc: usize,
        a: *const f32,
        csa: usize,
        b: *const f32,
        ldb: usize,
        ab: *mut f32,
    ) {
        let (csa, ldb) = if PACKED { (8, 8) } else { (csa, ldb) };
        let mut c = [[vdupq_n_f32(0.0); 2]; 8];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            // SAFETY: k < kc: a[..8] and b[..8] of this step are in bounds.
            unsafe {
                let b0 = vld1q_f32(b);
                let b1 = vld1q_f32(b.add(4));
                let a0 = vld1q_f32(a);
                let a1 = vld1q_f32(a.add(4));
                fma_rows(&mut c, a0, a1, b0, b1);
                a = a.add(csa);
                b = b.add(ldb);
            }
        }
        // SAFETY: ab is valid for 64 writes.
        unsafe { store(&c, ab) }
    }

    /// Packed panels ([`cols`] with the packed strides as constants).
    ///
    /// # Safety
    /// As [`cols`] with `csa == ldb == 8`.
    #[inline(never)]
    #[target_feature(enable = "neon")]
    unsafe fn packed_8x8(kc: usize, a: *const f32, b: *const f32, ab: *mut f32) {
        // SAFETY: the caller's guarantee.
        unsafe { cols::<true>(kc, a, 8, b, 8, ab) }
    }

    /// [`cols`] with any `csa` and `ldb`.
    ///
    /// # Safety
    /// As [`cols`].
    #[inline(never)]
    #[target_feature(enable = "neon")]
    unsafe fn cols_8x8(
        kc: usize,
        a: *const f32,
        csa: usize,
        b: *const f32,
        ldb: usize,
        ab: *mut f32,
    ) {
        // SAFETY: the caller's guarantee.
        unsafe { cols::<false>(kc, a, csa, b, ldb, ab) }
    }

    /// One `k` step: `c[i] += a[i] * b` for the 8 rows (lanes of `a0, a1`).
    #[inline(always)]
    fn fma_rows(
        c: &mut [[float32x4_t; 2]; 8],
        a0: float32x4_t,
        a1: float32x4_t,
        b0: float32x4_t,
        b1: float32x4_t,
    ) {
        // SAFETY: register-only NEON arithmetic (NEON is baseline on aarch64).
        unsafe {
            c[0][0] = vfmaq_laneq_f32::<0>(c[0][0], b0, a0);
            c[0][1] = vfmaq_laneq_f32::<0>(c[0][1], b1, a0);
            c[1][0] = vfmaq_laneq_f32::<1>(c[1][0], b0, a0);
            c[1][1] = vfmaq_laneq_f32::<1>(c[1][1], b1, a0);
            c[2][0] = vfmaq_laneq_f32::<2>(c[2][0], b0, a0);
            c[2][1] = vfmaq_laneq_f32::<2>(c[2][1], b1, a0);
            c[3][0] = vfmaq_laneq_f32::<3>(c[3][0], b0, a0);
            c[3][1] = vfmaq_laneq_f32::<3>(c[3][1], b1, a0);
            c[4][0] = vfmaq_laneq_f32::<0>(c[4][0], b0, a1);
            c[4][1] = vfmaq_laneq_f32::<0>(c[4][1], b1, a1);
            c[5][0] = vfmaq_laneq_f32::<1>(c[5][0], b0, a1);
            c[5][1] = vfmaq_laneq_f32::<1>(c[5][1], b1, a1);
            c[6][0] = vfmaq_laneq_f32::<2>(c[6][0], b0, a1);
            c[6][1] = vfmaq_laneq_f32::<2>(c[6][1], b1, a1);
            c[7][0] = vfmaq_laneq_f32::<3>(c[7][0], b0, a1);
            c[7][1] = vfmaq_laneq_f32::<3>(c[7][1], b1, a1);
        }
    }

    /// A read in place along its rows (`csa == 1`, a row-major matrix such
    /// as fc1's weights): 4 steps per iteration, one q load per row of A
    /// for all 4, then the last `kc % 4` steps one by one; multiply-adds in
    /// the same `k` order.
    ///
    /// # Safety
    /// NEON present; `a[i*rsa + k]` (i < 8, k < kc) and `b[k*ldb..][..8]`
    /// (k < kc) valid reads, `ab` valid for 64 writes.
    #[inline(never)]
    #[target_feature(enable = "neon")]
    unsafe fn rows_8x8(
        kc: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        ldb: usize,
        ab: *mut f32,
    ) {
        let mut c = [[vdupq_n_f32(0.0); 2]; 8];
        let mut b = b;
        let mut k = 0;
        while k + 4 <= kc {
            // SAFETY: k + 3 < kc: the 4 steps' reads are in bounds.
            unsafe {
                let ar: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(a.add(i * rsa + k)));
                let mut bs = [[vdupq_n_f32(0.0); 2]; 4];
                for (s, bs) in bs.iter_mut().enumerate() {
                    let p = b.add(s * ldb);
                    *bs = [vld1q_f32(p), vld1q_f32(p.add(4))];
                }
                step_lane::<0>(&mut c, &ar, bs[0]);
                step_lane::<1>(&mut c, &ar, bs[1]);
                step_lane::<2>(&mut c, &ar, bs[2]);
                step_lane::<3>(&mut c, &ar, bs[3]);
                b = b.add(4 * ldb);
            }
            k += 4;
        }
        while k < kc {
            // SAFETY: k < kc: a[i*rsa + k] (i < 8) and b[..8] are in bounds.
            unsafe { strided_step(&mut c, a.add(k), rsa, b) };
            b = b.wrapping_add(ldb);
            k += 1;
        }
        // SAFETY: ab is valid for 64 writes.
        unsafe { store(&c, ab) }
    }

    /// Step `L` of 4: `c[i] += ar[i][L] * b` for the 8 rows.
    #[inline(always)]
    fn step_lane<const L: i32>(
        c: &mut [[float32x4_t; 2]; 8],
        ar: &[float32x4_t; 8],
        b: [float32x4_t; 2],
    ) {
        for (ci, ai) in c.iter_mut().zip(ar) {
            // SAFETY: register-only NEON arithmetic (NEON is baseline).
            unsafe {
                ci[0] = vfmaq_laneq_f32::<L>(ci[0], b[0], *ai);
                ci[1] = vfmaq_laneq_f32::<L>(ci[1], b[1], *ai);
            }
        }
    }

    /// One step with A's 8 elements `a[i*rsa]` loaded one by one.
    ///
    /// # Safety
    /// NEON present; `a[i*rsa]` (i < 8) and `b[..8]` valid reads.
    #[inline(always)]
    unsafe fn strided_step(
        c: &mut [[float32x4_t; 2]; 8],
        a: *const f32,
        rsa: usize,
        b: *const f32,
    ) {
        // SAFETY: the caller's guarantee.
        unsafe {
            let b0 = vld1q_f32(b);
            let b1 = vld1q_f32(b.add(4));
            for (i, ci) in c.iter_mut().enumerate() {
                let ai = *a.add(i * rsa);
                ci[0] = vfmaq_n_f32(ci[0], b0, ai);
                ci[1] = vfmaq_n_f32(ci[1], b1, ai);
            }
        }
    }

    /// Any strides (no layer's operand has both strides above 1: they use
    /// [`cols_8x8`] or [`rows_8x8`]): 8 scalar loads of A per step.
    ///
    /// # Safety
    /// As [`rows_8x8`], with `a[i*rsa + k*csa]`.
    #[inline(never)]
    #[target_feature(enable = "neon")]
    unsafe fn strided_8x8(
        kc: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        ab: *mut f32,
    ) {
        let mut c = [[vdupq_n_f32(0.0); 2]; 8];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            // SAFETY: k < kc: a[i*rsa] (i < 8) and b[..8] of this step are in
            // bounds.
            unsafe {
                strided_step(&mut c, a, rsa, b);
                a = a.add(csa);
                b = b.add(ldb);
            }
        }
        // SAFETY: ab is valid for 64 writes.
        unsafe { store(&c, ab) }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::Avx2Fma;

#[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
pub(crate) use x86_512::Avx512;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{check_reads, Kernel, MAX_TILE};
    use std::arch::x86_64::*;

    /// AVX2+FMA kernel, 6x16 (12 ymm accumulators, 2 loads of B and 6
    /// broadcasts of A per step: the BLIS Haswell shape). The value proves
    /// the CPU has the features: it can only be made by [`Avx2Fma::detect`].
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2Fma(());

    impl Avx2Fma {
        /// `Some` when this CPU has AVX2 and FMA.
        pub(crate) fn detect() -> Option<Avx2Fma> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Avx2Fma(()))
        }
    }

    impl Kernel for Avx2Fma {
        const MR: usize = 6;
        const NR: usize = 16;

        #[inline]
        fn tile(
            self,
            kc: usize,
            a: &[f32],
            (rsa, csa): (usize, usize),
            b: &[f32],
            ldb: usize,
            ab: &mut [f32; MAX_TILE],
        ) {
            if kc == 0 {
                ab[..96].fill(0.0);
                return;
            }
            check_reads(kc, 6, 16, a.len(), (rsa, csa), b.len(), ldb);
            let (a, b, ab) = (a.as_ptr(), b.as_ptr(), ab.as_mut_ptr());
            // SAFETY: `self` exists only if AVX2 and FMA were detected at run
            // time; the kernel reads a[i*rsa + k*csa] for i < 6, k < kc and
            // b[k*ldb .. k*ldb + 16] for k < kc (in bounds: checked above)
            // and writes ab[..96] (MAX_TILE >= 96), all unaligned.
            unsafe {
                if rsa == 1 && csa == 6 && ldb == 16 {
                    tile_6x16::<true>(kc, a, 1, 6, b, 16, ab)
                } else {
                    tile_6x16::<false>(kc, a, rsa, csa, b, ldb, ab)
                }
            }
        }
    }

    /// `PACKED`: the strides are the packed ones (constants for LLVM).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_6x16<const PACKED: bool>(
        kc: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        ab: *mut f32,
    ) {
        let (rsa, csa, ldb) = if PACKED { (1, 6, 16) } else { (rsa, csa, ldb) };
        let mut c = [[_mm256_setzero_ps(); 2]; 6];
        let mut a = a;
        let mut b = b;
        for _ in 0..kc {
            // SAFETY: k < kc, so b+k*ldb+15 and a+i*rsa+k*csa are in bounds
            // (checked by the caller).
            unsafe {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (i, ci) in c.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*a.add(i * rsa));
                    ci[0] = _mm256_fmadd_ps(ai, b0, ci[0]);
                    ci[1] = _mm256_fmadd_ps(ai, b1, ci[1]);
                }
                a = a.add(csa);
                b = b.add(ldb);
            }
        }
        for (i, ci) in c.iter().enumerate() {
            // SAFETY: i*16+15 < 96 <= MAX_TILE, the caller's buffer length.
            unsafe {
                _mm256_storeu_ps(ab.add(i * 16), ci[0]);
                _mm256_storeu_ps(ab.add(i * 16 + 8), ci[1]);
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
// Built only by rustc >= 1.89 (build.rs sets `ringsgd_avx512`).
#[clippy::msrv = "1.89"]
#[allow(unsafe_code)]
mod x86_512 {
    use super::{check_reads, Avx2Fma, Kernel, MAX_TILE};
    use std::arch::x86_64::*;

    /// AVX-512F kernel, 8x32 (16 zmm accumulators, 2 loads of B and 8
    /// broadcasts of A per step, 16 FMAs: 8 cycles on two 512-bit FMA
    /// ports, with twice the FMA latency x ports in flight). The value
    /// proves the CPU has AVX-512F and AVX2+FMA (see [`Avx512::detect`]).
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512(Avx2Fma);

    impl Avx512 {
        /// `Some` when this CPU has AVX-512F, AVX2 and FMA.
        pub(crate) fn detect() -> Option<Avx512> {
            let avx2 = Avx2Fma::detect()?;
            is_x86_feature_detected!("avx512f").then_some(Avx512(avx2))
        }

        /// The AVX2 token (every AVX-512 CPU here also has AVX2+FMA).
        pub(crate) fn avx2(self) -> Avx2Fma {
            self.0
        }
    }

    impl Kernel for Avx512 {
        const MR: usize = 8;
        const NR: usize = 32;

        #[inline]
        fn tile(
            self,
            kc: usize,
            a: &[f32],
            (rsa, csa): (usize, usize),
            b: &[f32],
            ldb: usize,
            ab: &mut [f32; MAX_TILE],
        ) {
            if kc == 0 {
                ab[..256].fill(0.0);
                return;
            }
            check_reads(kc, 8, 32, a.len(), (rsa, csa), b.len(), ldb);
            let (a, b, ab) = (a.as_ptr(), b.as_ptr(), ab.as_mut_ptr());
            // SAFETY: `self` exists only if AVX-512F was detected at run
            // time; the kernel reads a[i*rsa + k*csa] for i < 8, k < kc and
            // b[k*ldb .. k*ldb + 32] for k < kc (in bounds: checked above)
            // and writes ab[..256] (MAX_TILE >= 256), all unaligned.
            unsafe {
                if rsa == 1 && csa == 8 && ldb == 32 {
                    tile_8x32::<true>(kc, a, 1, 8, b, 32, ab)
                } else {
                    tile_8x32::<false>(kc, a, rsa, csa, b, ldb, ab)
                }
            }
        }
    }

    /// `PACKED`: the strides are the packed ones (constants for LLVM).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_8x32<const PACKED: bool>(
        kc: usize,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        ldb: usize,
        ab: *mut f32,
    ) {
        let (rsa, csa, ldb) = if PACKED { (1, 8, 32) } else { (rsa, csa, ldb) };
        let mut c = [[_mm512_setzero_ps(); 2]; 8];
        let mut a = a;
        let mut b = b;
        for _ in 0..kc {
            // SAFETY: k < kc, so b+k*ldb+31 and a+i*rsa+k*csa are in bounds
            // (checked by the caller).
            unsafe {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for (i, ci) in c.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*a.add(i * rsa));
                    ci[0] = _mm512_fmadd_ps(ai, b0, ci[0]);
                    ci[1] = _mm512_fmadd_ps(ai, b1, ci[1]);
                }
                a = a.add(csa);
                b = b.add(ldb);
            }
        }
        for (i, ci) in c.iter().enumerate() {
            // SAFETY: i*32+31 < 256 <= MAX_TILE, the caller's buffer length.
            unsafe {
                _mm512_storeu_ps(ab.add(i * 32), ci[0]);
                _mm512_storeu_ps(ab.add(i * 32 + 16), ci[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(mr: usize, nr: usize, kc: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; mr * nr];
        for i in 0..mr {
            for j in 0..nr {
                let mut s = 0f64;
                for k in 0..kc {
                    s += a[k * mr + i] as f64 * b[k * nr + j] as f64;
                }
                out[i * nr + j] = s as f32;
            }
        }
        out
    }

    /// Packed panels against the definition (NaN-poisoned tile: every
    /// element must be written); then the same panels strided (A row-major
    /// with a row stride, B with a longer row) must give the same bits.
    fn check<K: Kernel>(k: K) -> Vec<Vec<u32>> {
        let mut all = Vec::new();
        for kc in [0usize, 1, 3, 17, 64, 301] {
            let a: Vec<f32> = (0..kc * K::MR)
                .map(|x| ((x * 7 % 13) as f32) - 6.0 + 0.1 * (x % 3) as f32)
                .collect();
            let b: Vec<f32> = (0..kc * K::NR)
                .map(|x| ((x * 5 % 11) as f32) * 0.5 - 2.0 + 0.01 * (x % 7) as f32)
                .collect();
            let mut ab = [f32::NAN; MAX_TILE];
            k.tile(kc, &a, (1, K::MR), &b, K::NR, &mut ab);
            let want = naive(K::MR, K::NR, kc, &a, &b);
            for (x, y) in ab[..K::MR * K::NR].iter().zip(&want) {
                assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
            }
            if kc > 0 {
                let lda = kc + 5;
                let mut ar = vec![f32::NAN; K::MR * lda];
                for i in 0..K::MR {
                    for kk in 0..kc {
                        ar[i * lda + kk] = a[kk * K::MR + i];
                    }
                }
                let ldb = K::NR + 3;
                let mut br = vec![f32::NAN; (kc - 1) * ldb + K::NR];
                for kk in 0..kc {
                    br[kk * ldb..kk * ldb + K::NR].copy_from_slice(&b[kk * K::NR..][..K::NR]);
                }
                let mut st = [f32::NAN; MAX_TILE];
                k.tile(kc, &ar, (lda, 1), &br, ldb, &mut st);
                for (x, y) in st[..K::MR * K::NR].iter().zip(&ab[..K::MR * K::NR]) {
                    assert_eq!(x.to_bits(), y.to_bits(), "strided vs packed, kc {kc}");
                }
            }
            all.push(ab[..K::MR * K::NR].iter().map(|v| v.to_bits()).collect());
        }
        all
    }

    #[test]
    fn portable_kernel_matches_naive() {
        check(Portable);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn short_panel_panics() {
        let mut ab = [0f32; MAX_TILE];
        Portable.tile(2, &[0.0; 15], (1, 8), &[0.0; 16], 8, &mut ab);
    }

    /// The NEON kernel against the definition, and bit for bit against the
    /// portable one (both fuse every multiply-add on aarch64), on packed,
    /// row-major (`csa == 1`) and strided panels.
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_kernel_matches_naive_and_portable_bits() {
        let k = Neon::detect().expect("aarch64 has NEON");
        assert_eq!(check(k), check(Portable));
        for kc in [1usize, 3, 4, 8, 17, 64, 300] {
            let (rsa, csa, ldb) = (kc + 3, 1, 11);
            let a: Vec<f32> = (0..8 * rsa)
                .map(|x| ((x * 7 % 13) as f32) * 0.3 - 2.0)
                .collect();
            let b: Vec<f32> = (0..(kc - 1) * ldb + 8)
                .map(|x| ((x * 5 % 11) as f32) * 0.5 - 2.0)
                .collect();
            let (mut x, mut y) = ([f32::NAN; MAX_TILE], [f32::NAN; MAX_TILE]);
            k.tile(kc, &a, (rsa, csa), &b, ldb, &mut x);
            Portable.tile(kc, &a, (rsa, csa), &b, ldb, &mut y);
            for (p, q) in x[..64].iter().zip(&y[..64]) {
                assert_eq!(p.to_bits(), q.to_bits(), "row-major A, kc {kc}");
            }
            // The same A column-major (csa = rsa', rsa = 1): the strided path.
            let at: Vec<f32> = (0..kc * 8).map(|j| a[(j % 8) * rsa + j / 8]).collect();
            let mut z = [f32::NAN; MAX_TILE];
            k.tile(kc, &at, (1, 8), &b, ldb, &mut z);
            for (p, q) in z[..64].iter().zip(&y[..64]) {
                assert_eq!(p.to_bits(), q.to_bits(), "strided A, kc {kc}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_naive() {
        match Avx2Fma::detect() {
            Some(k) => {
                check(k);
            }
            None => eprintln!("skipped: this CPU has no AVX2+FMA"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernel_matches_naive() {
        #[cfg(ringsgd_avx512)]
        match Avx512::detect() {
            Some(k) => {
                check(k);
            }
            None => eprintln!("skipped: this CPU has no AVX-512F"),
        }
        #[cfg(not(ringsgd_avx512))]
        eprintln!("skipped: built by a rustc older than 1.89 (no AVX-512 kernels)");
    }
}
