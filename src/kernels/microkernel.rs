//! GEMM microkernels: `MR x NR` tile of `A~ · B~` from packed panels.
//!
//! A kernel reads `kc` steps of an `MR`-wide packed column panel of A
//! (`a[k*MR + i]`) and an `NR`-wide packed row panel of B (`b[k*NR + j]`) and
//! writes the tile `ab[i*NR + j] = sum_k a[k*MR+i] * b[k*NR+j]`, accumulating
//! in `k` order, each element independently. The driver adds the tile to C.
//!
//! Because every element is accumulated on its own in `k` order, the result
//! for one element of C never depends on which tile or which call computed
//! it: only the `K` dimension's blocking matters (see `gemm`).

/// The largest `MR * NR` of any kernel (size of the driver's tile buffer).
pub(crate) const MAX_TILE: usize = 128;

/// A microkernel with its tile shape.
pub(crate) trait Kernel: Copy {
    /// Rows of the tile (rows of A per packed panel).
    const MR: usize;
    /// Columns of the tile (columns of B per packed panel).
    const NR: usize;
    /// `ab = a~ · b~` over `kc` steps; see the module docs for the layouts.
    fn tile(self, kc: usize, a: &[f32], b: &[f32], ab: &mut [f32; MAX_TILE]);
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
    fn tile(self, kc: usize, a: &[f32], b: &[f32], ab: &mut [f32; MAX_TILE]) {
        const MR: usize = 8;
        const NR: usize = 8;
        let a = &a[..kc * MR];
        let b = &b[..kc * NR];
        let mut acc = [[0f32; NR]; MR];
        for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            let ak: &[f32; MR] = ak.try_into().unwrap();
            let bk: &[f32; NR] = bk.try_into().unwrap();
            for i in 0..MR {
                for j in 0..NR {
                    acc[i][j] = madd(ak[i], bk[j], acc[i][j]);
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

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{Kernel, MAX_TILE};
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
        fn tile(self, kc: usize, a: &[f32], b: &[f32], ab: &mut [f32; MAX_TILE]) {
            assert!(a.len() >= kc * 6 && b.len() >= kc * 16);
            // SAFETY: `self` exists only if AVX2 and FMA were detected at run
            // time; the kernel reads a[..kc*6] and b[..kc*16] (lengths checked
            // above) and writes ab[..96] (MAX_TILE >= 96), all unaligned loads
            // and stores.
            unsafe { tile_6x16(kc, a.as_ptr(), b.as_ptr(), ab.as_mut_ptr()) }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_6x16(kc: usize, a: *const f32, b: *const f32, ab: *mut f32) {
        let mut c = [[_mm256_setzero_ps(); 2]; 6];
        let mut a = a;
        let mut b = b;
        for _ in 0..kc {
            // SAFETY: k < kc, so b+16k+15 and a+6k+5 are in bounds (caller).
            unsafe {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (i, ci) in c.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*a.add(i));
                    ci[0] = _mm256_fmadd_ps(ai, b0, ci[0]);
                    ci[1] = _mm256_fmadd_ps(ai, b1, ci[1]);
                }
                a = a.add(6);
                b = b.add(16);
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

    fn check<K: Kernel>(k: K) {
        for kc in [1usize, 3, 17, 64] {
            let a: Vec<f32> = (0..kc * K::MR)
                .map(|x| ((x * 7 % 13) as f32) - 6.0)
                .collect();
            let b: Vec<f32> = (0..kc * K::NR)
                .map(|x| ((x * 5 % 11) as f32) * 0.5 - 2.0)
                .collect();
            let mut ab = [f32::NAN; MAX_TILE];
            k.tile(kc, &a, &b, &mut ab);
            let want = naive(K::MR, K::NR, kc, &a, &b);
            for (x, y) in ab[..K::MR * K::NR].iter().zip(&want) {
                assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn portable_kernel_matches_naive() {
        check(Portable);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_naive() {
        if let Some(k) = Avx2Fma::detect() {
            check(k);
        }
    }
}
