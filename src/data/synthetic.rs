//! Synthetic CIFAR-shaped data for tests, examples and benchmarks.
//!
//! [`generate`] makes 3x32x32 images in 10 classes that a small CNN learns
//! quickly: class `k` is a pattern of stripes in colour `PALETTE[k]` on a
//! dark background, horizontal for even `k` and vertical for odd `k`, with
//! period `4 + 2 * (k / 2)` pixels, a random phase, a random colour jitter
//! and per-pixel noise. Crops and flips keep the class recognisable.
//! Everything is drawn from counter-based ChaCha8 streams, one per image, so
//! `generate(n, seed)` is a prefix of `generate(m, seed)` for `n <= m`.
//!
//! The writers produce the official binary layout (six batch files plus
//! `batches.meta.txt`), as a folder or a `.tar.gz`, for testing the loader
//! and running the examples without the real data.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand_chacha::rand_core::Rng;

use super::cifar::{BATCHES_DIR, META_FILE, TEST_FILE, TRAIN_FILES};
use super::dataset::{Dataset, CLASS_NAMES, HEIGHT, IMAGE_BYTES, NUM_CLASSES, WIDTH};
use super::rng::{below, stream_rng, SYNTHETIC};
use crate::{Error, Result};

/// Stripe colour of each class (RGB).
pub const PALETTE: [[u8; 3]; NUM_CLASSES] = [
    [220, 50, 50],
    [50, 200, 60],
    [60, 80, 230],
    [230, 210, 60],
    [210, 60, 210],
    [60, 210, 210],
    [240, 140, 40],
    [130, 60, 180],
    [170, 170, 170],
    [140, 90, 50],
];

/// Per-pixel noise amplitude (uniform in `-NOISE..=NOISE`).
const NOISE: u64 = 24;
/// Per-image colour jitter amplitude.
const JITTER: u64 = 30;

/// `n` synthetic images with labels `i % 10` (balanced classes); see the
/// [module docs](self) for what they look like.
///
/// ```
/// let ds = ringsgd::data::synthetic::generate(20, 3);
/// assert_eq!(ds.len(), 20);
/// assert_eq!(ds.class_counts(), vec![2; 10]);
/// ```
pub fn generate(n: usize, seed: u64) -> Dataset {
    generate_split(n, seed, 0)
}

/// Like [`generate`] for a distinct split: `split` 0 is what `generate`
/// returns, other values give independent images (the writers use split 1
/// for the test set).
pub fn generate_split(n: usize, seed: u64, split: u64) -> Dataset {
    let mut images = vec![0u8; n * IMAGE_BYTES];
    let mut labels = Vec::with_capacity(n);
    let mut noise = vec![0u8; IMAGE_BYTES];
    for (i, img) in images.chunks_exact_mut(IMAGE_BYTES).enumerate() {
        let label = (i % NUM_CLASSES) as u8;
        draw_image(seed, split, i as u64, label, &mut noise, img);
        labels.push(label);
    }
    Dataset::new(images, labels, NUM_CLASSES).expect("labels are below 10 and sizes match")
}

fn draw_image(seed: u64, split: u64, i: u64, label: u8, noise: &mut [u8], img: &mut [u8]) {
    let mut rng = stream_rng(seed, SYNTHETIC, split, i);
    let k = usize::from(label);
    let period = 4 + 2 * (k / 2);
    let phase = below(&mut rng, period as u64) as usize;
    let background = below(&mut rng, 50) as i32;
    let mut colour = [0i32; 3];
    for (c, v) in colour.iter_mut().enumerate() {
        let jitter = below(&mut rng, 2 * JITTER + 1) as i32 - JITTER as i32;
        *v = i32::from(PALETTE[k][c]) + jitter;
    }
    rng.fill_bytes(noise);
    let plane = HEIGHT * WIDTH;
    for (c, &fg) in colour.iter().enumerate() {
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                let along = if k % 2 == 0 { y } else { x };
                let on = (along + phase) % period < period / 2;
                let base = if on { fg } else { background };
                let p = c * plane + y * WIDTH + x;
                let n = (u64::from(noise[p]) % (2 * NOISE + 1)) as i32 - NOISE as i32;
                img[p] = (base + n).clamp(0, 255) as u8;
            }
        }
    }
}

/// The members of a synthetic CIFAR-10 binary archive as `(path, bytes)`:
/// `cifar-10-batches-bin/data_batch_{1..5}.bin` with `n_train_per_file`
/// records each (images `generate_split(5 * n_train_per_file, seed, 0)`),
/// `test_batch.bin` with `n_test` records (split 1) and `batches.meta.txt`.
pub fn cifar_members(n_train_per_file: usize, n_test: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let train = generate_split(TRAIN_FILES.len() * n_train_per_file, seed, 0);
    let test = generate_split(n_test, seed, 1);
    let mut members = Vec::with_capacity(7);
    let mut meta = CLASS_NAMES.join("\n");
    meta.push_str("\n\n");
    members.push((format!("{BATCHES_DIR}/{META_FILE}"), meta.into_bytes()));
    for (f, name) in TRAIN_FILES.iter().enumerate() {
        let idx: Vec<usize> = (f * n_train_per_file..(f + 1) * n_train_per_file).collect();
        let part = train.subset(&idx).expect("indices in range");
        members.push((format!("{BATCHES_DIR}/{name}"), part.to_cifar_records()));
    }
    members.push((
        format!("{BATCHES_DIR}/{TEST_FILE}"),
        test.to_cifar_records(),
    ));
    members
}

/// Writes a synthetic CIFAR-10 binary folder `dir/cifar-10-batches-bin/`
/// (see [`cifar_members`]) and returns its path. `dir` is created if
/// needed.
pub fn write_cifar_dir(
    dir: &Path,
    n_train_per_file: usize,
    n_test: usize,
    seed: u64,
) -> Result<PathBuf> {
    let batches = dir.join(BATCHES_DIR);
    std::fs::create_dir_all(&batches).map_err(|e| Error::io(&batches, e))?;
    for (name, bytes) in cifar_members(n_train_per_file, n_test, seed) {
        let path = dir.join(&name);
        std::fs::write(&path, &bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(batches)
}

/// Writes a synthetic CIFAR-10 binary archive (`.tar.gz` with the members
/// of [`cifar_members`]) to `path`.
pub fn write_cifar_tar_gz(
    path: &Path,
    n_train_per_file: usize,
    n_test: usize,
    seed: u64,
) -> Result<()> {
    let members = cifar_members(n_train_per_file, n_test, seed);
    let refs: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    write_tar_gz(path, &refs)
}

/// Writes a `.tar.gz` holding the given `(path, bytes)` members (regular
/// files, mode 0644, mtime 0, so the output is reproducible). Handy for
/// building malformed archives in tests.
pub fn write_tar_gz(path: &Path, members: &[(&str, &[u8])]) -> Result<()> {
    let io = |e: std::io::Error| Error::io(path, e);
    let file = File::create(path).map_err(io)?;
    let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, *bytes).map_err(io)?;
    }
    let gz = tar.into_inner().map_err(io)?;
    let mut out = gz.finish().map_err(io)?;
    out.flush().map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok(())
}
