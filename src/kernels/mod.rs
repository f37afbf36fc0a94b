//! Compute kernels: a packed single-precision GEMM with caller-owned
//! workspaces (no allocation once warm), direct stride-1 convolution
//! kernels, and their SIMD microkernels.
//!
//! The layout follows matrixmultiply/BLIS: the loop nests and the packing are
//! safe Rust ([`gemm`], [`direct`]); the only `unsafe` code is in the x86-64
//! AVX2+FMA microkernels (`microkernel::x86`, `direct::x86`,
//! `direct::x86_dw`), selected at run time, each block with a `SAFETY:`
//! note and bounds checked by its safe wrapper. Measured gain over the
//! portable kernels on one core of the development machine (AMD EPYC, Zen 3;
//! `cargo test --release --lib gemm_speed -- --ignored --nocapture`): the
//! AVX2 microkernel runs at ~100 GFLOP/s, the packed GEMM at 52-84 GFLOP/s
//! against 18-24 GFLOP/s with the portable kernel (SSE2 baseline, no FMA),
//! i.e. 3.2-3.6x on the PiNet shapes. Other targets
//! (aarch64/NEON on the Raspberry Pi) use the portable kernels, written with
//! fixed-size arrays so LLVM vectorises them with the target's baseline SIMD
//! (NEON `fmla` on aarch64, where fused multiply-add is always available).

pub(crate) mod direct;
pub(crate) mod gemm;
pub(crate) mod microkernel;
