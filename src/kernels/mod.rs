//! Compute kernels: a packed single-precision GEMM with caller-owned
//! workspaces (no allocation once warm), direct stride-1 convolution
//! kernels, and their SIMD microkernels, with the one place that chooses
//! which family runs ([`Isa`], [`select_isa`], [`active_isa`], the
//! `RINGSGD_KERNELS` environment variable).
//!
//! The layout follows matrixmultiply/BLIS: the loop nests and the packing are
//! safe Rust (`gemm`, `direct`); the only `unsafe` code is in the SIMD
//! microkernels (x86-64 AVX2+FMA: `microkernel::x86`, `direct::x86`,
//! `direct::x86_dw`; AVX-512F: `microkernel::x86_512`, `direct::x86_512`,
//! `direct::x86_dw512`; aarch64 NEON: `microkernel::neon`, `direct::neon`),
//! selected at run time, each block with a `SAFETY:` note and bounds
//! checked by its safe wrapper. The AVX-512 kernels need a rustc of 1.89 or
//! later (the build script enables them; older compilers build the rest).
//! The portable kernels are written with fixed-size arrays so LLVM
//! vectorises them with the target's baseline SIMD; on aarch64 (where
//! fused multiply-add is always available) the NEON family reuses the
//! portable direct convolution tile, which LLVM already compiles to `fmla`
//! at the FP-pipe bound. `.ci/aarch64-mca` checks every aarch64 kernel loop
//! with llvm-mca; the tiles are `#[inline(never)]` so it finds them by name.
//!
//! Measured on the development machines: see the README's kernel table
//! (`cargo test --release --lib gemm_speed -- --ignored --nocapture` times
//! the GEMM shapes on every family this CPU runs).

pub(crate) mod direct;
pub(crate) mod gemm;
mod isa;
pub(crate) mod microkernel;

pub(crate) use isa::Simd;
pub use isa::{active_isa, select_isa, Isa, ENV_VAR};

/// The token of the active kernel family, read once per layer call.
pub(crate) fn active_simd() -> Simd {
    isa::simd()
}
