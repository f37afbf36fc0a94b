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
        let mut acc = [[0f32; NR]; MR];
        if rsa == 1 && csa == MR && ldb == NR {
            // Packed panels: the fixed-size form LLVM vectorises best.
            let a = &a[..kc * MR];
            let b = &b[..kc * NR];
            for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
                let ak: &[f32; MR] = ak.try_into().unwrap();
                let bk: &[f32; NR] = bk.try_into().unwrap();
                for i in 0..MR {
                    for j in 0..NR {
                        acc[i][j] = madd(ak[i], bk[j], acc[i][j]);
                    }
                }
            }
        } else {
            // Strided panels: the same multiply-adds in the same order.
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
        }
        for i in 0..MR {
            ab[i * NR..(i + 1) * NR].copy_from_slice(&acc[i]);
        }
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
