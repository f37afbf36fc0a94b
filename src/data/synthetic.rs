//! Synthetic data of any shape for tests, examples and benchmarks.
//!
//! [`generate`] makes 3x32x32 images ([`generate_shaped`] images of any
//! shape) in 10 classes that a small CNN learns
//! quickly: class `k` is a pattern of stripes in colour `PALETTE[k]` on a
//! dark background, horizontal for even `k` and vertical for odd `k`, with
//! period `4 + 2 * (k / 2)` pixels, a random phase, a random colour jitter
//! and per-pixel noise. Crops and flips keep the class recognisable.
//! Everything is drawn from counter-based ChaCha8 streams, one per image, so
//! `generate(n, seed)` is a prefix of `generate(m, seed)` for `n <= m`.
//!
//! With other than 3 channels, channel `c` uses component `c % 3` of the
//! colour; with one channel the classes differ by stripe direction and
//! period alone.
//!
//! The writers produce the official file layouts, for testing the loaders
//! and running the examples without the real data: CIFAR-10 (six batch
//! files plus `batches.meta.txt`, as a folder or a `.tar.gz`), CIFAR-100
//! ([`write_cifar100_dir`]) and MNIST IDX files ([`write_mnist_dir`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand_chacha::rand_core::Rng;

use super::cifar::{BATCHES_DIR, META_FILE, TEST_FILE, TRAIN_FILES};
use super::dataset::{Dataset, Shape, CLASS_NAMES, NUM_CLASSES};
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
    generate_shaped(Shape::CIFAR, n, seed, split).expect("the CIFAR shape is valid")
}

/// `n` synthetic `u8` images of `shape` with labels `i % 10`, of split
/// `split` (see [`generate_split`]); for [`Shape::CIFAR`] the same images
/// as [`generate_split`]. Errors if a dimension of `shape` is 0.
///
/// ```
/// use ringsgd::data::{synthetic, Shape};
/// let ds = synthetic::generate_shaped(Shape::MNIST, 20, 3, 0)?;
/// assert_eq!(ds.shape().to_array(), [1, 28, 28]);
/// assert_eq!(ds.class_counts(), vec![2; 10]);
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn generate_shaped(shape: Shape, n: usize, seed: u64, split: u64) -> Result<Dataset> {
    shape.validate()?;
    let len = shape.sample_len();
    let mut images = vec![0u8; n * len];
    let mut labels = Vec::with_capacity(n);
    let mut noise = vec![0u8; len];
    let mut colour = vec![0i32; shape.channels];
    for (i, img) in images.chunks_exact_mut(len).enumerate() {
        let label = (i % NUM_CLASSES) as u8;
        draw_image(
            shape,
            (seed, split, i as u64),
            label,
            (&mut noise, &mut colour),
            img,
        );
        labels.push(label);
    }
    Dataset::new(shape, images, labels, NUM_CLASSES)
}

fn draw_image(
    shape: Shape,
    (seed, split, i): (u64, u64, u64),
    label: u8,
    (noise, colour): (&mut [u8], &mut [i32]),
    img: &mut [u8],
) {
    let mut rng = stream_rng(seed, SYNTHETIC, split, i);
    let k = usize::from(label);
    let period = 4 + 2 * (k / 2);
    let phase = below(&mut rng, period as u64) as usize;
    let background = below(&mut rng, 50) as i32;
    for (c, v) in colour.iter_mut().enumerate() {
        let jitter = below(&mut rng, 2 * JITTER + 1) as i32 - JITTER as i32;
        *v = i32::from(PALETTE[k][c % 3]) + jitter;
    }
    rng.fill_bytes(noise);
    let (height, width, plane) = (shape.height, shape.width, shape.plane());
    for (c, &fg) in colour.iter().enumerate() {
        for y in 0..height {
            for x in 0..width {
                let along = if k % 2 == 0 { y } else { x };
                let on = (along + phase) % period < period / 2;
                let base = if on { fg } else { background };
                let p = c * plane + y * width + x;
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
        let records = part.to_cifar_records().expect("synthetic CIFAR data");
        members.push((format!("{BATCHES_DIR}/{name}"), records));
    }
    members.push((
        format!("{BATCHES_DIR}/{TEST_FILE}"),
        test.to_cifar_records().expect("synthetic CIFAR data"),
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

/// The members of a synthetic CIFAR-100 binary archive as `(path, bytes)`:
/// `cifar-100-binary/train.bin` with `n_train` records, `test.bin` with
/// `n_test` (images of [`generate_split`] splits 0 and 1), and both
/// class-name files. Record `i` has fine label `(7 * i) % 100` and coarse
/// label `fine % 20`.
pub fn cifar100_members(n_train: usize, n_test: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    use super::cifar100::{
        COARSE_META_FILE, COARSE_NAMES, DATA_DIR, FINE_META_FILE, FINE_NAMES,
        TEST_FILE as C100_TEST, TRAIN_FILE as C100_TRAIN,
    };
    let records = |ds: &Dataset| {
        let mut out = Vec::with_capacity(ds.len() * (3 + ds.shape().sample_len()));
        for i in 0..ds.len() {
            let fine = ((7 * i) % 100) as u8;
            out.push(fine % 20);
            out.push(fine);
            out.extend_from_slice(ds.image(i));
        }
        out
    };
    let names = |n: &[&str]| format!("{}\n", n.join("\n")).into_bytes();
    vec![
        (format!("{DATA_DIR}/{FINE_META_FILE}"), names(&FINE_NAMES)),
        (
            format!("{DATA_DIR}/{COARSE_META_FILE}"),
            names(&COARSE_NAMES),
        ),
        (
            format!("{DATA_DIR}/{C100_TRAIN}"),
            records(&generate_split(n_train, seed, 0)),
        ),
        (
            format!("{DATA_DIR}/{C100_TEST}"),
            records(&generate_split(n_test, seed, 1)),
        ),
    ]
}

/// Writes a synthetic CIFAR-100 binary folder `dir/cifar-100-binary/` (see
/// [`cifar100_members`]) and returns its path.
pub fn write_cifar100_dir(dir: &Path, n_train: usize, n_test: usize, seed: u64) -> Result<PathBuf> {
    write_members(dir, &cifar100_members(n_train, n_test, seed))?;
    Ok(dir.join(super::cifar100::DATA_DIR))
}

/// Writes the four MNIST IDX files into `dir` (created if needed), each
/// gzipped with a `.gz` name when `gzip`: `n_train` and `n_test` synthetic
/// 1x28x28 images ([`generate_shaped`] with [`Shape::MNIST`], splits 0 and
/// 1) with labels `i % 10`.
pub fn write_mnist_dir(
    dir: &Path,
    n_train: usize,
    n_test: usize,
    seed: u64,
    gzip: bool,
) -> Result<()> {
    use super::{idx, mnist};
    let train = generate_shaped(Shape::MNIST, n_train, seed, 0)?;
    let test = generate_shaped(Shape::MNIST, n_test, seed, 1)?;
    let mut members = Vec::new();
    for (ds, images, labels) in [
        (&train, mnist::TRAIN_IMAGES, mnist::TRAIN_LABELS),
        (&test, mnist::TEST_IMAGES, mnist::TEST_LABELS),
    ] {
        let pixels = ds.pixels().expect("synthetic images are u8");
        members.push((images.to_string(), idx::encode_images(28, 28, pixels)?));
        members.push((labels.to_string(), idx::encode_labels(ds.labels())?));
    }
    if gzip {
        for (name, bytes) in &mut members {
            name.push_str(".gz");
            *bytes = idx::gzip(bytes);
        }
    }
    write_members(dir, &members)
}

/// Writes each `(relative path, bytes)` under `dir`, creating folders.
fn write_members(dir: &Path, members: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, bytes) in members {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
