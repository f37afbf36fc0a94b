//! Compute kernels: a packed single-precision GEMM with caller-owned
//! workspaces (no allocation once warm) and its SIMD microkernels.
//!
//! The layout follows matrixmultiply/BLIS: the loop nest and the packing are
//! safe Rust in [`gemm`]; the only `unsafe` code is the x86-64 AVX2+FMA
//! microkernel in `microkernel::x86` (runtime-detected, a measured gain over
//! the portable kernel, each block with a `SAFETY:` note). Other targets
//! (aarch64/NEON on the Raspberry Pi) use the portable kernel, written so
//! LLVM vectorises it with the target's baseline SIMD (NEON `fmla` on
//! aarch64, where fused multiply-add is always available).

pub(crate) mod direct;
pub(crate) mod gemm;
pub(crate) mod microkernel;
