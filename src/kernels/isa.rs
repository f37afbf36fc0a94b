//! Which SIMD kernels run: the one place the choice is made.
//!
//! The best kernels this CPU supports are chosen at the first kernel call
//! (x86-64: AVX-512 > AVX2+FMA > portable; aarch64: NEON > portable), unless
//! the environment variable `RINGSGD_KERNELS` (`portable`, `neon`, `avx2`,
//! `avx512` or `auto`) or
//! [`select_isa`] says otherwise. Every kernel call reads the choice
//! through [`simd`], which hands out a token that can only exist when the
//! CPU has the features the kernel needs.

use crate::{Error, Result};
use std::sync::atomic::{AtomicU8, Ordering};

/// A family of compute kernels.
///
/// Results are bitwise identical for any core count on every path. Between
/// paths: the GEMM and the direct convolution (forward and input gradient)
/// give the same bits on AVX2 and AVX-512 (both fuse each multiply-add and
/// accumulate every element on its own in the same order); the weight
/// gradient of a convolution sums 16 lanes on AVX-512 against 8 on AVX2,
/// so it (and what follows from it) differs in the last bits; the portable
/// kernels on x86-64 round the product before the add, unlike both. On
/// aarch64 the NEON and portable kernels give the same bits (every
/// multiply-add is fused on both, accumulated in the same order).
///
/// ```
/// use ringsgd::kernels::Isa;
/// let best = Isa::best();
/// assert!(best.is_supported());
/// assert_eq!("avx2".parse::<Isa>()?, Isa::Avx2Fma);
/// # Ok::<(), ringsgd::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, vectorised by LLVM for the target's baseline SIMD
    /// (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64 AVX2 with FMA (256-bit vectors).
    Avx2Fma,
    /// x86-64 AVX-512F (512-bit vectors), also using AVX2+FMA for the shapes
    /// 16 lanes do not fit. Needs a compiler of Rust 1.89 or later.
    Avx512,
    /// aarch64 Advanced SIMD (NEON, 128-bit vectors) intrinsics: the GEMM
    /// tile and the weight-gradient tile; the direct convolution tile is
    /// the portable one (LLVM's NEON code for it is at the FP-pipe bound,
    /// see `.ci/aarch64-mca`).
    Neon,
}

impl Isa {
    /// Every family, slowest first (x86-64 and aarch64 ones together; a
    /// CPU supports the portable ones and those of its architecture).
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Neon, Isa::Avx2Fma, Isa::Avx512];

    /// Whether this CPU (and this build) can run the family.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2Fma => avx2_token().is_some(),
            Isa::Avx512 => avx512_supported(),
            Isa::Neon => neon_supported(),
        }
    }

    /// The fastest family this CPU supports.
    pub fn best() -> Isa {
        if Isa::Avx512.is_supported() {
            Isa::Avx512
        } else if Isa::Avx2Fma.is_supported() {
            Isa::Avx2Fma
        } else if Isa::Neon.is_supported() {
            Isa::Neon
        } else {
            Isa::Portable
        }
    }

    /// The name `RINGSGD_KERNELS` and [`FromStr`](std::str::FromStr) use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    fn code(self) -> u8 {
        match self {
            Isa::Portable => 1,
            Isa::Avx2Fma => 2,
            Isa::Avx512 => 3,
            Isa::Neon => 4,
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = Error;
    /// `portable`, `neon`, `avx2` or `avx512` (`auto` is [`Isa::best`]).
    fn from_str(s: &str) -> Result<Isa> {
        match s {
            "portable" => Ok(Isa::Portable),
            "avx2" => Ok(Isa::Avx2Fma),
            "avx512" => Ok(Isa::Avx512),
            "neon" => Ok(Isa::Neon),
            "auto" => Ok(Isa::best()),
            other => Err(Error::invalid(format!(
                "kernels `{other}`: expected portable, neon, avx2, avx512 or auto"
            ))),
        }
    }
}

/// 0: not chosen yet; otherwise [`Isa::code`].
static SELECTED: AtomicU8 = AtomicU8::new(0);

/// The environment variable that picks the kernels at the first call.
pub const ENV_VAR: &str = "RINGSGD_KERNELS";

/// Makes every later kernel call, in every thread, use `isa`; an error
/// naming the family when this CPU or build cannot run it. For benchmarks
/// and tests that compare paths; switching while another thread computes
/// changes which path its remaining tiles take (every path is correct).
///
/// ```
/// use ringsgd::kernels::{active_isa, select_isa, Isa};
/// select_isa(Isa::Portable)?;
/// assert_eq!(active_isa(), Isa::Portable);
/// select_isa(Isa::best())?;
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn select_isa(isa: Isa) -> Result<()> {
    if !isa.is_supported() {
        return Err(Error::invalid(format!(
            "kernels `{isa}`: this CPU or build does not support them (best here: {})",
            Isa::best()
        )));
    }
    SELECTED.store(isa.code(), Ordering::Relaxed);
    Ok(())
}

/// The family kernel calls use now (choosing it from `RINGSGD_KERNELS` or
/// the CPU on the first call).
pub fn active_isa() -> Isa {
    match SELECTED.load(Ordering::Relaxed) {
        1 => Isa::Portable,
        2 => Isa::Avx2Fma,
        3 => Isa::Avx512,
        4 => Isa::Neon,
        _ => {
            let isa = from_env();
            SELECTED.store(isa.code(), Ordering::Relaxed);
            isa
        }
    }
}

/// `RINGSGD_KERNELS` if set, valid and supported (else a logged warning),
/// otherwise the best family.
fn from_env() -> Isa {
    let Ok(v) = std::env::var(ENV_VAR) else {
        return Isa::best();
    };
    match v.parse::<Isa>() {
        Ok(isa) if isa.is_supported() => {
            log::info!("{ENV_VAR}={v}: using the {isa} kernels");
            isa
        }
        Ok(isa) => {
            log::warn!(
                "{ENV_VAR}={v}: this CPU cannot run the {isa} kernels; using {}",
                Isa::best()
            );
            Isa::best()
        }
        Err(e) => {
            log::warn!("{ENV_VAR}: {e}; using {}", Isa::best());
            Isa::best()
        }
    }
}

/// The selected family as a token for the kernels (crate-internal).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Simd {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2(super::microkernel::Avx2Fma),
    #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
    Avx512(super::microkernel::Avx512),
    #[cfg(target_arch = "aarch64")]
    Neon(super::microkernel::Neon),
}

impl Simd {
    /// The token for `isa`, `None` when this CPU cannot run it.
    pub(crate) fn for_isa(isa: Isa) -> Option<Simd> {
        match isa {
            Isa::Portable => Some(Simd::Portable),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => avx2_token().map(Simd::Avx2),
            #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
            Isa::Avx512 => super::microkernel::Avx512::detect().map(Simd::Avx512),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => super::microkernel::Neon::detect().map(Simd::Neon),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// The token of the active family (see [`active_isa`]).
pub(crate) fn simd() -> Simd {
    Simd::for_isa(active_isa()).unwrap_or(Simd::Portable)
}

#[cfg(target_arch = "x86_64")]
fn avx2_token() -> Option<super::microkernel::Avx2Fma> {
    super::microkernel::Avx2Fma::detect()
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_token() -> Option<()> {
    None
}

fn neon_supported() -> bool {
    #[cfg(target_arch = "aarch64")]
    return super::microkernel::Neon::detect().is_some();
    #[allow(unreachable_code)]
    false
}

fn avx512_supported() -> bool {
    #[cfg(all(target_arch = "x86_64", ringsgd_avx512))]
    return super::microkernel::Avx512::detect().is_some();
    #[allow(unreachable_code)]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_errors() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
        }
        let e = "avx1024".parse::<Isa>().unwrap_err().to_string();
        assert!(e.contains("avx1024"), "{e}");
        assert!(Isa::Portable.is_supported());
        assert!(Isa::best().is_supported());
    }

    #[test]
    fn unsupported_family_is_an_error_naming_it() {
        for isa in Isa::ALL {
            if !isa.is_supported() {
                let e = select_isa(isa).unwrap_err().to_string();
                assert!(e.contains(isa.name()), "{e}");
            }
        }
    }
}
