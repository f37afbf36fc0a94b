//! Enables the AVX-512 kernels (`cfg(ringsgd_avx512)`) when the compiler has
//! the AVX-512 intrinsics and `target_feature(enable = "avx512f")`, stable
//! since Rust 1.89. Older compilers (the crate's `rust-version` is 1.85,
//! Debian's rustc) build everything else and dispatch to AVX2 at best.

use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(ringsgd_avx512)");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            // "rustc 1.95.0 (59807616e 2026-04-14)"
            let ver = v.split_whitespace().nth(1)?.to_string();
            let mut it = ver.split('.');
            let major: u32 = it.next()?.parse().ok()?;
            let minor: u32 = it.next()?.parse().ok()?;
            Some(if major > 1 { u32::MAX } else { minor })
        });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=ringsgd_avx512");
    }
}
