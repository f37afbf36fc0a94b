//! Data of any shape (u8 and f32 samples, any channel count, augmentation
//! for any H x W) and the CIFAR-100 and MNIST IDX loaders on files the
//! tests generate: exact values for good files, a named error for every
//! kind of bad one.

use std::path::{Path, PathBuf};

use ringsgd::comm::local::run_ranks;
use ringsgd::data::{
    cifar100, idx, mnist, synthetic, Augmentation, BatchBuilder, Dataset, Normalizer,
    SampleAugment, Shape,
};
use ringsgd::nn::Model;
use ringsgd::parallel::ComputePool;
use ringsgd::trainer::{TrainConfig, Trainer};
use ringsgd::Error;

mod common;
use common::Scratch;

/// Unpacks an `Error::Data`, failing the test otherwise.
fn data_error(err: Error) -> (PathBuf, Option<usize>, String) {
    let shown = err.to_string();
    match err {
        Error::Data { file, record, msg } => (file, record, format!("{msg} | {shown}")),
        other => panic!("expected Error::Data, got {other:?}"),
    }
}

/// Reference crop-with-zero-padding and flip, written independently of the
/// library: out[c][y][x] = in[c][y + oy - pad][x' + ox - pad].
fn reference<T: Copy + Default>(shape: Shape, img: &[T], a: &SampleAugment) -> Vec<T> {
    let (h, w) = (shape.height as isize, shape.width as isize);
    let mut out = vec![T::default(); shape.sample_len()];
    for c in 0..shape.channels {
        for y in 0..h {
            for x in 0..w {
                let xs = if a.flip { w - 1 - x } else { x };
                let sy = y + a.offset_y as isize - a.pad as isize;
                let sx = xs + a.offset_x as isize - a.pad as isize;
                if (0..h).contains(&sy) && (0..w).contains(&sx) {
                    out[c * shape.plane() + (y * w + x) as usize] =
                        img[c * shape.plane() + (sy * w + sx) as usize];
                }
            }
        }
    }
    out
}

#[test]
fn augmentation_works_for_any_shape_and_kind() {
    for shape in [
        Shape::new(1, 5, 7),
        Shape::new(2, 8, 3),
        Shape::new(4, 1, 6),
    ] {
        let bytes: Vec<u8> = (0..shape.sample_len())
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let floats: Vec<f32> = bytes.iter().map(|&b| f32::from(b) - 100.5).collect();
        let mut flipped = 0;
        for position in 0..64 {
            let a = Augmentation {
                pad: 3,
                hflip: true,
            }
            .sample(9, 2, position);
            flipped += usize::from(a.flip);
            let mut out = vec![0u8; shape.sample_len()];
            a.apply(shape, &bytes, &mut out);
            assert_eq!(out, reference(shape, &bytes, &a), "{shape} {a:?}");
            let mut outf = vec![0f32; shape.sample_len()];
            a.apply(shape, &floats, &mut outf);
            assert_eq!(outf, reference(shape, &floats, &a), "{shape} {a:?}");
        }
        assert!((16..=48).contains(&flipped), "{flipped} of 64 flipped");
        // Flips are optional: digits must never be mirrored.
        for position in 0..64 {
            let a = Augmentation::crop(3).sample(9, 2, position);
            assert!(!a.flip);
        }
    }
}

#[test]
fn crop_only_draws_the_same_crops_as_the_standard_policy() {
    // The flip bit is drawn after the offsets: switching flips off keeps
    // every crop (so a run's crops do not depend on the flip setting).
    for p in 0..50 {
        let s = Augmentation::standard().sample(3, 1, p);
        let c = Augmentation::crop(4).sample(3, 1, p);
        assert_eq!((s.offset_y, s.offset_x), (c.offset_y, c.offset_x));
    }
}

#[test]
fn f32_batches_are_normalised_per_channel_in_chw_order() {
    let shape = Shape::new(2, 2, 3);
    // Sample i, channel c, position p: 10 * i + 100 * c + p.
    let values: Vec<f32> = (0..3)
        .flat_map(|i| (0..2).flat_map(move |c| (0..6).map(move |p| (10 * i + 100 * c + p) as f32)))
        .collect();
    let ds = Dataset::new(shape, values.clone(), vec![0, 1, 2], 3).unwrap();
    assert_eq!(ds.samples().kind(), "f32");
    let norm = Normalizer::from_dataset(&ds).unwrap();
    // Channel 0 holds 0..5, 10..15, 20..25: mean 12.5; channel 1 is +100.
    assert!((norm.mean()[0] - 12.5).abs() < 1e-5, "{norm:?}");
    assert!((norm.mean()[1] - 112.5).abs() < 1e-5, "{norm:?}");
    let var: f64 = (0..3)
        .flat_map(|i| (0..6).map(move |p| (10 * i + p) as f64 - 12.5))
        .map(|d| d * d)
        .sum::<f64>()
        / 18.0;
    assert!(
        (f64::from(norm.std()[0]) - var.sqrt()).abs() < 1e-5,
        "{norm:?}"
    );
    assert!((norm.std()[1] - norm.std()[0]).abs() < 1e-5);

    let mut b = BatchBuilder::new(norm.clone(), None).unwrap();
    let batch = b.fill_eval(&ds, &[2, 0]).unwrap();
    assert_eq!(batch.images.shape(), &[2, 2, 2, 3]);
    assert_eq!(batch.labels, &[2, 0]);
    for (k, i) in [2usize, 0].into_iter().enumerate() {
        for c in 0..2 {
            for p in 0..6 {
                let raw = (10 * i + 100 * c + p) as f32;
                let want = (raw - norm.mean()[c]) / norm.std()[c];
                assert_eq!(batch.images[[k, c, p / 3, p % 3]], want);
            }
        }
    }
    // Augmented f32 batch: padding is 0.0 before normalisation.
    let mut b = BatchBuilder::new(norm.clone(), Some(Augmentation::crop(2))).unwrap();
    let batch = b.fill_train(&ds, &[1], 4, 0, 0).unwrap();
    let a = Augmentation::crop(2).sample(4, 0, 0);
    let raw = match ds.sample(1) {
        ringsgd::data::SampleRef::F32(v) => reference(shape, v, &a),
        _ => unreachable!(),
    };
    for c in 0..2 {
        for p in 0..6 {
            let want = (raw[c * 6 + p] - norm.mean()[c]) / norm.std()[c];
            assert_eq!(batch.images[[0, c, p / 3, p % 3]], want);
        }
    }
}

#[test]
fn u8_batches_of_one_channel_go_through_the_lookup_table() {
    let ds = synthetic::generate_shaped(Shape::new(1, 9, 11), 12, 3, 0).unwrap();
    let norm = Normalizer::from_dataset(&ds).unwrap();
    assert_eq!(norm.channels(), 1);
    let aug = Augmentation::crop(2);
    let mut b = BatchBuilder::new(norm.clone(), Some(aug)).unwrap();
    let idx = [5usize, 0, 11];
    let batch = b.fill_train(&ds, &idx, 8, 1, 20).unwrap();
    assert_eq!(batch.images.shape(), &[3, 1, 9, 11]);
    for (k, &i) in idx.iter().enumerate() {
        let a = aug.sample(8, 1, 20 + k);
        let raw = reference(ds.shape(), ds.image(i), &a);
        for (p, &v) in raw.iter().enumerate() {
            assert_eq!(batch.images[[k, 0, p / 11, p % 11]], norm.normalize(0, v));
        }
    }
    // Once warm, a builder switches shapes without trouble.
    let cifar = synthetic::generate(4, 1);
    let mut b3 = BatchBuilder::new(Normalizer::from_dataset(&cifar).unwrap(), None).unwrap();
    assert_eq!(
        b3.fill_eval(&cifar, &[0, 1]).unwrap().images.shape(),
        &[2, 3, 32, 32]
    );
}

#[test]
fn mismatched_channels_and_shapes_are_refused_by_name() {
    let mono = synthetic::generate_shaped(Shape::MNIST, 10, 1, 0).unwrap();
    let mut b = BatchBuilder::new(Normalizer::cifar10(), None).unwrap();
    let e = b.fill_eval(&mono, &[0]).unwrap_err().to_string();
    assert!(
        e.contains("1 channel") && e.contains("normaliser has 3"),
        "{e}"
    );

    assert!(Dataset::new(Shape::new(0, 2, 2), Vec::<u8>::new(), vec![], 2).is_err());
    let e = Dataset::new(
        Shape::new(1, 2, 2),
        vec![1.0f32, f32::NAN, 0.0, 0.0],
        vec![0],
        2,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("record 0") && e.contains("not finite"), "{e}");
    let e = Dataset::new(Shape::new(1, 2, 2), vec![0u8; 7], vec![0, 1], 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("1x2x2"), "{e}");
    let mut a = Dataset::new(Shape::new(1, 2, 2), vec![0u8; 4], vec![0], 2).unwrap();
    let f = Dataset::new(Shape::new(1, 2, 2), vec![0f32; 4], vec![0], 2).unwrap();
    assert!(a.extend(&f).is_err());
    assert!(a.to_cifar_records().is_err());
    assert_eq!(f.subset(&[0, 0]).unwrap().len(), 2);
    assert!(Normalizer::new(vec![0.0; 2], vec![1.0]).is_err());
}

#[test]
fn trainer_refuses_data_of_another_shape_than_the_model_input() {
    let mono = synthetic::generate_shaped(Shape::MNIST, 32, 1, 0).unwrap();
    let norm = Normalizer::from_dataset(&mono).unwrap();
    let errs = run_ranks(1, |comm| {
        let model = Model::from_spec("flatten linear(10)", [3, 32, 32], 1)?;
        let cfg = TrainConfig::pinet_defaults(16, 1);
        let mut trainer = Trainer::new(&comm, ComputePool::new(1)?, model, cfg)?;
        let train = trainer.train_epoch(&mono, &norm, &mut |_| {}).unwrap_err();
        let eval = trainer.evaluate(&mono, &norm).unwrap_err();
        assert_eq!(trainer.global_step(), 0, "no step may be taken");
        Ok((train.to_string(), eval.to_string()))
    })
    .unwrap();
    for e in [&errs[0].0, &errs[0].1] {
        assert!(e.contains("1x28x28") && e.contains("3x32x32"), "{e}");
    }
}

#[test]
fn trainer_learns_one_channel_images_with_crops() {
    let shape = Shape::new(1, 16, 16);
    let train = synthetic::generate_shaped(shape, 160, 2, 0).unwrap();
    let test = synthetic::generate_shaped(shape, 60, 2, 1).unwrap();
    let norm = Normalizer::from_dataset(&train).unwrap();
    let acc = run_ranks(2, |comm| {
        let spec = "conv3x3(8,p1) relu maxpool2 conv3x3(8,p1) relu maxpool2 flatten linear(10)";
        let model = Model::from_spec(spec, shape.to_array(), 3)?;
        let mut cfg = TrainConfig::pinet_defaults(16, 6);
        cfg.augment = Some(Augmentation::crop(2));
        cfg.base_lr = 0.05;
        let mut trainer = Trainer::new(&comm, ComputePool::new(1)?, model, cfg)?;
        for _ in 0..6 {
            trainer.train_epoch(&train, &norm, &mut |_| {})?;
        }
        Ok(trainer.evaluate(&test, &norm)?.accuracy)
    })
    .unwrap();
    assert_eq!(acc[0], acc[1]);
    assert!(
        acc[0] >= 0.5,
        "test accuracy {} on learnable stripes",
        acc[0]
    );
}

// ---------------------------------------------------------------- IDX / MNIST

const N_TRAIN: usize = 30;
const N_TEST: usize = 10;

fn write_mnist(dir: &Path, gzip: bool) {
    synthetic::write_mnist_dir(dir, N_TRAIN, N_TEST, 5, gzip).unwrap();
}

fn name(base: &str, gzip: bool) -> String {
    if gzip {
        format!("{base}.gz")
    } else {
        base.to_string()
    }
}

#[test]
fn mnist_plain_and_gzipped_load_the_exact_values() {
    let s = Scratch::new("shapes", "mnist-good");
    let (plain, gz) = (s.path().join("plain"), s.path().join("gz"));
    write_mnist(&plain, false);
    write_mnist(&gz, true);
    let a = mnist::load(&plain, mnist::Variant::Digits).unwrap();
    let b = mnist::load(&gz, mnist::Variant::Fashion).unwrap();
    let want_train = synthetic::generate_shaped(Shape::MNIST, N_TRAIN, 5, 0).unwrap();
    let want_test = synthetic::generate_shaped(Shape::MNIST, N_TEST, 5, 1).unwrap();
    for d in [&a, &b] {
        assert_eq!(d.train, want_train);
        assert_eq!(d.test, want_test);
        assert_eq!(d.train.shape(), Shape::MNIST);
        assert_eq!(d.train.num_classes(), 10);
    }
    assert_eq!(a.class_names[3], "3");
    assert_eq!(b.class_names[9], "Ankle boot");

    // One file by hand, to pin the format: 2 images of 2x3, big-endian dims.
    let img = idx::encode_images(2, 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    assert_eq!(
        &img[..16],
        &[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]
    );
    let lab = idx::encode_labels(&[4, 9]).unwrap();
    assert_eq!(lab, vec![0, 0, 8, 1, 0, 0, 0, 2, 4, 9]);
    let (ip, lp) = (s.path().join("i.gz"), s.path().join("l"));
    std::fs::write(&ip, idx::gzip(&img)).unwrap();
    std::fs::write(&lp, &lab).unwrap();
    let ds = mnist::load_pair(&ip, &lp, 10).unwrap();
    assert_eq!(ds.shape(), Shape::new(1, 2, 3));
    assert_eq!(ds.image(1), &[7, 8, 9, 10, 11, 12]);
    assert_eq!(ds.labels(), &[4, 9]);
}

/// Rewrites `file` of a plain MNIST folder with `f(bytes)`, then loads.
fn load_with(dir: &Path, file: &str, gzip: bool, f: impl FnOnce(&mut Vec<u8>)) -> Error {
    let path = dir.join(name(file, gzip));
    let mut bytes = std::fs::read(&path).unwrap();
    if gzip {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain)
            .unwrap();
        f(&mut plain);
        bytes = idx::gzip(&plain);
    } else {
        f(&mut bytes);
    }
    std::fs::write(&path, bytes).unwrap();
    mnist::load(dir, mnist::Variant::Digits).unwrap_err()
}

#[test]
fn mnist_bad_files_are_named_with_the_record() {
    let s = Scratch::new("shapes", "mnist-bad");
    for gzip in [false, true] {
        let fresh = |tag: &str| {
            let d = s.path().join(format!("{tag}-{gzip}"));
            write_mnist(&d, gzip);
            d
        };
        // Truncated in the middle of image 7 (16-byte header).
        let d = fresh("trunc");
        let (file, record, msg) = data_error(load_with(&d, mnist::TRAIN_IMAGES, gzip, |b| {
            b.truncate(16 + 7 * 784 + 100)
        }));
        assert_eq!(file, d.join(name(mnist::TRAIN_IMAGES, gzip)), "{msg}");
        assert_eq!(record, Some(7), "{msg}");
        assert!(msg.contains("100 bytes into record 7"), "{msg}");

        // Wrong magic: a label file where the images belong, a float file.
        let d = fresh("magic");
        let (file, _, msg) = data_error(load_with(&d, mnist::TEST_IMAGES, gzip, |b| b[3] = 1));
        assert_eq!(file, d.join(name(mnist::TEST_IMAGES, gzip)));
        assert!(
            msg.contains("0x00000801") && msg.contains("0x00000803"),
            "{msg}"
        );
        let d = fresh("type");
        let (_, _, msg) = data_error(load_with(&d, mnist::TRAIN_LABELS, gzip, |b| b[2] = 0x0D));
        assert!(msg.contains("32-bit float"), "{msg}");

        // Count mismatch: one label fewer than images.
        let d = fresh("count");
        let (file, _, msg) = data_error(load_with(&d, mnist::TRAIN_LABELS, gzip, |b| {
            b[7] -= 1;
            b.pop();
        }));
        assert_eq!(file, d.join(name(mnist::TRAIN_LABELS, gzip)));
        assert!(
            msg.contains("29 labels") && msg.contains("30 images"),
            "{msg}"
        );

        // Label out of range, at record 4.
        let d = fresh("label");
        let (file, record, msg) =
            data_error(load_with(&d, mnist::TEST_LABELS, gzip, |b| b[8 + 4] = 10));
        assert_eq!(file, d.join(name(mnist::TEST_LABELS, gzip)));
        assert_eq!(record, Some(4));
        assert!(msg.contains("label 10 out of range 0..=9"), "{msg}");

        // Extra bytes after the declared records.
        let d = fresh("extra");
        let (_, _, msg) = data_error(load_with(&d, mnist::TEST_LABELS, gzip, |b| b.push(0)));
        assert!(msg.contains("1 bytes") || msg.contains("1 byte"), "{msg}");

        // A zero dimension.
        let d = fresh("zero");
        let (_, _, msg) = data_error(load_with(&d, mnist::TEST_IMAGES, gzip, |b| {
            b[8..12].fill(0)
        }));
        assert!(msg.contains("dimension 1"), "{msg}");
    }

    // Bad gzip CRC (and a bad length): the stream is refused, named.
    for (what, from_end) in [("crc", 8usize), ("isize", 4)] {
        let d = s.path().join(format!("gzcrc-{what}"));
        write_mnist(&d, true);
        let path = d.join(name(mnist::TRAIN_LABELS, true));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - from_end] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let (file, _, msg) = data_error(mnist::load(&d, mnist::Variant::Digits).unwrap_err());
        assert_eq!(file, path, "{what}: {msg}");
        assert!(msg.contains("gzip check failed"), "{what}: {msg}");
    }

    // A gzip stream cut short.
    let d = s.path().join("gzcut");
    write_mnist(&d, true);
    let path = d.join(name(mnist::TEST_IMAGES, true));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (file, _, msg) = data_error(mnist::load(&d, mnist::Variant::Digits).unwrap_err());
    assert_eq!(file, path, "{msg}");

    // Missing files are all listed; a missing folder is named.
    let d = s.path().join("missing");
    write_mnist(&d, false);
    std::fs::remove_file(d.join(mnist::TEST_LABELS)).unwrap();
    std::fs::remove_file(d.join(mnist::TRAIN_IMAGES)).unwrap();
    let (file, _, msg) = data_error(mnist::load(&d, mnist::Variant::Digits).unwrap_err());
    assert_eq!(file, d.join(mnist::TRAIN_IMAGES));
    assert!(msg.contains(mnist::TEST_LABELS), "{msg}");
    let (file, _, _) =
        data_error(mnist::load(&s.path().join("nope"), mnist::Variant::Digits).unwrap_err());
    assert_eq!(file, s.path().join("nope"));
}

// ------------------------------------------------------------------ CIFAR-100

fn cifar100_archive(path: &Path, members: &[(String, Vec<u8>)]) {
    let refs: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    synthetic::write_tar_gz(path, &refs).unwrap();
}

#[test]
fn cifar100_folder_and_archive_load_fine_or_coarse_labels() {
    let s = Scratch::new("shapes", "c100-good");
    let folder = synthetic::write_cifar100_dir(&s.path().join("x"), 14, 6, 2).unwrap();
    let archive = s.path().join("cache").join(cifar100::ARCHIVE_NAME);
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    cifar100_archive(&archive, &synthetic::cifar100_members(14, 6, 2));

    let fine = cifar100::load(&folder).unwrap();
    assert_eq!(fine, cifar100::load(&s.path().join("x")).unwrap());
    assert_eq!(fine, cifar100::load(&archive).unwrap());
    assert_eq!(fine, cifar100::load(archive.parent().unwrap()).unwrap());
    let images = synthetic::generate_split(14, 2, 0);
    assert_eq!(fine.train.pixels(), images.pixels());
    assert_eq!(
        fine.test.pixels(),
        synthetic::generate_split(6, 2, 1).pixels()
    );
    let want_fine: Vec<u8> = (0..14).map(|i| ((7 * i) % 100) as u8).collect();
    assert_eq!(fine.train.labels(), &want_fine[..]);
    assert_eq!(fine.train.num_classes(), 100);
    assert_eq!(fine.class_names.len(), 100);
    assert_eq!(fine.class_names[99], "worm");

    let coarse = cifar100::load_labels(&archive, cifar100::LabelKind::Coarse).unwrap();
    let want_coarse: Vec<u8> = want_fine.iter().map(|f| f % 20).collect();
    assert_eq!(coarse.train.labels(), &want_coarse[..]);
    assert_eq!(coarse.train.num_classes(), 20);
    assert_eq!(coarse.class_names[19], "vehicles_2");

    // Without meta files the published names are used.
    std::fs::remove_file(folder.join(cifar100::FINE_META_FILE)).unwrap();
    std::fs::remove_file(folder.join(cifar100::COARSE_META_FILE)).unwrap();
    let bare = cifar100::load(&folder).unwrap();
    assert_eq!(bare.class_names, fine.class_names);
}

#[test]
fn cifar100_bad_inputs_are_named_with_file_and_record() {
    let s = Scratch::new("shapes", "c100-bad");
    let rec = cifar100::RECORD_BYTES;
    let edit = |tag: &str, member: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut members = synthetic::cifar100_members(8, 4, 1);
        let m = members
            .iter_mut()
            .find(|(n, _)| n.ends_with(member))
            .unwrap();
        f(&mut m.1);
        let archive = s.path().join(format!("{tag}.tar.gz"));
        cifar100_archive(&archive, &members);
        let shown = archive.join(cifar100::DATA_DIR).join(member);
        (archive, shown)
    };

    // Coarse label out of range in record 3; fine label in record 5.
    let (a, shown) = edit("coarse", cifar100::TRAIN_FILE, &|b| b[3 * rec] = 20);
    let (file, record, msg) = data_error(cifar100::load(&a).unwrap_err());
    assert_eq!((file, record), (shown, Some(3)), "{msg}");
    assert!(msg.contains("coarse label 20 out of range 0..=19"), "{msg}");
    let (a, shown) = edit("fine", cifar100::TEST_FILE, &|b| b[2 * rec + 1] = 100);
    let (file, record, msg) =
        data_error(cifar100::load_labels(&a, cifar100::LabelKind::Coarse).unwrap_err());
    assert_eq!((file, record), (shown, Some(2)), "{msg}");
    assert!(msg.contains("fine label 100"), "{msg}");

    // Truncated: not a whole number of records.
    let (a, shown) = edit("trunc", cifar100::TRAIN_FILE, &|b| b.truncate(6 * rec + 10));
    let (file, record, msg) = data_error(cifar100::load(&a).unwrap_err());
    assert_eq!((file, record), (shown, Some(6)), "{msg}");
    assert!(msg.contains("3074-byte records"), "{msg}");

    // A meta file with the wrong number of names.
    let (a, shown) = edit("meta", cifar100::COARSE_META_FILE, &|b| {
        b.extend(b"extra\n")
    });
    let (file, _, msg) = data_error(cifar100::load(&a).unwrap_err());
    assert_eq!(file, shown);
    assert!(msg.contains("expected 20 class names"), "{msg}");

    // Missing test.bin (folder).
    let folder = synthetic::write_cifar100_dir(&s.path().join("m"), 8, 4, 1).unwrap();
    std::fs::remove_file(folder.join(cifar100::TEST_FILE)).unwrap();
    let (file, _, msg) = data_error(cifar100::load(&folder).unwrap_err());
    assert_eq!(file, folder.join(cifar100::TEST_FILE), "{msg}");

    // Bad gzip CRC of the archive.
    let archive = s.path().join("crc.tar.gz");
    cifar100_archive(&archive, &synthetic::cifar100_members(8, 4, 1));
    let mut bytes = std::fs::read(&archive).unwrap();
    let n = bytes.len();
    bytes[n - 8] ^= 1;
    std::fs::write(&archive, bytes).unwrap();
    let (file, _, msg) = data_error(cifar100::load(&archive).unwrap_err());
    assert_eq!(file, archive);
    assert!(msg.contains("gzip check failed"), "{msg}");

    // Not a CIFAR-100 folder: says what was expected and found.
    let empty = s.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("readme"), b"x").unwrap();
    let (_, _, msg) = data_error(cifar100::load(&empty).unwrap_err());
    assert!(
        msg.contains("found readme") && msg.contains("train.bin"),
        "{msg}"
    );
}

/// The real Fashion-MNIST files (not in the repository; Debian's
/// `dataset-fashion-mnist` package installs them): run with
/// `RINGSGD_FASHION_MNIST=/path/to/folder cargo test --test
/// data_loaders_shapes -- --ignored`. Defaults to
/// `/usr/share/datasets/fashion-mnist`.
#[test]
#[ignore = "needs the real Fashion-MNIST files"]
fn real_fashion_mnist_loads() {
    let dir = std::env::var_os("RINGSGD_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    assert!(
        dir.is_dir(),
        "{} not found: set RINGSGD_FASHION_MNIST",
        dir.display()
    );
    let data = mnist::load(&dir, mnist::Variant::Fashion).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    assert_eq!(data.train.shape(), Shape::MNIST);
    assert_eq!(data.train.class_counts(), vec![6000; 10]);
    assert_eq!(data.test.class_counts(), vec![1000; 10]);
    let n = Normalizer::from_dataset(&data.train).unwrap();
    // The published statistics of the training set: mean 0.2860, std 0.3530.
    assert!((n.mean()[0] - 0.2860).abs() < 0.001, "{n:?}");
    assert!((n.std()[0] - 0.3530).abs() < 0.001, "{n:?}");
}
