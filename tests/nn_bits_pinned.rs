//! The CNN's numbers pinned to the bits of the code before the layer kinds
//! moved behind a trait (commit b90eb50): initial parameters, losses and
//! parameters after a few plain-SGD steps, for PiNet and for specs that
//! reach every kind and every fusion (strided, 1x1 and non-square kernels,
//! a standalone ReLU in the stack and one after a linear layer that already
//! has one), on 1 and 2 cores. Any change of a bit is a change of results.

use ndarray::Array4;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringsgd::kernels::{select_isa, Isa};
use ringsgd::nn::{Model, PINET_SPEC};
use ringsgd::parallel::ComputePool;

/// FNV-1a over 32-bit words.
fn fnv(acc: u64, word: u32) -> u64 {
    word.to_le_bytes()
        .iter()
        .fold(acc, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Hash of the initial parameters, then of each step's loss and of the
/// parameters after `steps` steps of `p -= 0.05 * g` on seeded random data.
fn run(spec: &str, chw: [usize; 3], batch: usize, steps: usize, cores: usize) -> u64 {
    let pool = ComputePool::new(cores).unwrap();
    let mut model = Model::from_spec(spec, chw, 7).unwrap();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    h = model.params().iter().fold(h, |h, p| fnv(h, p.to_bits()));
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let classes = model.num_classes();
    for _ in 0..steps {
        let x = Array4::from_shape_fn((batch, chw[0], chw[1], chw[2]), |_| {
            rng.random_range(-1.0f32..1.0)
        });
        let labels: Vec<u8> = (0..batch)
            .map(|_| rng.random_range(0..classes) as u8)
            .collect();
        let s = model.train_step(&pool, x.view(), &labels).unwrap();
        let bits = s.loss_sum.to_bits();
        h = fnv(fnv(h, bits as u32), (bits >> 32) as u32);
        let (p, g) = model.params_and_grads_mut();
        for (p, g) in p.iter_mut().zip(g.iter()) {
            *p -= 0.05 * g;
        }
    }
    model.params().iter().fold(h, |h, p| fnv(h, p.to_bits()))
}

/// A spec, its input shape and batch, and the pinned hash for the portable,
/// AVX2+FMA and AVX-512 kernel families (recorded on an x86-64 Xeon, where
/// all three run).
type Case<'a> = (&'a str, [usize; 3], usize, [u64; 3]);

/// The index into a [`Case`]'s hashes for a kernel family on this target.
/// On aarch64 the portable kernels fuse multiply and add (one instruction
/// there) in the same order as AVX2+FMA, and NEON is bit for bit the
/// portable kernels, so both carry the AVX2+FMA bits (checked under qemu by
/// `.ci/aarch64-test --test nn_bits_pinned`).
fn pinned_index(isa: Isa) -> usize {
    match isa {
        Isa::Portable if cfg!(target_arch = "aarch64") => 1,
        Isa::Portable => 0,
        Isa::Neon | Isa::Avx2Fma => 1,
        Isa::Avx512 => 2,
    }
}

#[test]
fn results_are_the_bits_of_the_code_before_the_layer_trait() {
    let cases: [Case; 4] = [
        (
            PINET_SPEC,
            [3, 32, 32],
            20,
            [0x386e2c41f4b72ee6, 0xe0872670c266d3ed, 0xad3093e710086041],
        ),
        (
            "conv5x3(6,s2,p2) relu relu maxpool3(s2) conv1x1(5) maxpool2 flatten linear(9) relu relu linear(4)",
            [3, 13, 11],
            37,
            [0xd0c16d5bf06d2bd8, 0x6b4c6919e5a4b4ae, 0x6b4c6919e5a4b4ae],
        ),
        (
            "relu conv3x3(4) relu flatten relu linear(6) relu linear(3)",
            [2, 7, 6],
            5,
            [0x87e35ab54ac0724c, 0x47b5af76253cf271, 0x47b5af76253cf271],
        ),
        (
            "flatten linear(5)",
            [1, 3, 4],
            3,
            [0x927e1814509dc23a, 0x601f69409e56ae31, 0x601f69409e56ae31],
        ),
    ];
    let mut wrong = Vec::new();
    for isa in Isa::ALL {
        let i = pinned_index(isa);
        if !isa.is_supported() {
            eprintln!("kernels {isa}: not supported here, not checked");
            continue;
        }
        select_isa(isa).unwrap();
        for (spec, chw, batch, want) in cases {
            for cores in [1, 2] {
                let got = run(spec, chw, batch, 3, cores);
                if got != want[i] {
                    wrong.push(format!(
                        "{isa}: {spec} on {cores} cores: {got:#x}, pinned {:#x}",
                        want[i]
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
