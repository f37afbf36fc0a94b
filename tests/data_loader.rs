//! CIFAR-10 loader: accepted layouts and every kind of bad input.

use std::path::{Path, PathBuf};

use ringsgd::data::cifar::{self, RECORD_BYTES};
use ringsgd::data::{synthetic, CLASS_NAMES};
use ringsgd::Error;

mod common;
use common::Scratch;

const PER_FILE: usize = 6;
const N_TEST: usize = 5;
const SEED: u64 = 11;

/// Unpacks an `Error::Data`, failing the test otherwise.
fn data_error(err: Error) -> (PathBuf, Option<usize>, String) {
    let shown = err.to_string();
    match err {
        Error::Data { file, record, msg } => (file, record, format!("{msg} | {shown}")),
        other => panic!("expected Error::Data, got {other:?}"),
    }
}

fn members() -> Vec<(String, Vec<u8>)> {
    synthetic::cifar_members(PER_FILE, N_TEST, SEED)
}

fn write_archive(path: &Path, members: &[(String, Vec<u8>)]) {
    let refs: Vec<(&str, &[u8])> = members
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    synthetic::write_tar_gz(path, &refs).unwrap();
}

#[test]
fn loads_every_accepted_layout_identically() {
    let s = Scratch::new("loader", "layouts");
    let batches = synthetic::write_cifar_dir(&s.path().join("x"), PER_FILE, N_TEST, SEED).unwrap();
    let archive = s.path().join("cache").join(cifar::ARCHIVE_NAME);
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    synthetic::write_cifar_tar_gz(&archive, PER_FILE, N_TEST, SEED).unwrap();

    let from_batches = cifar::load(&batches).unwrap();
    let from_parent = cifar::load(&s.path().join("x")).unwrap();
    let from_archive = cifar::load(&archive).unwrap();
    let from_cache_dir = cifar::load(archive.parent().unwrap()).unwrap();
    assert_eq!(from_batches, from_parent);
    assert_eq!(from_batches, from_archive);
    assert_eq!(from_batches, from_cache_dir);

    // The content is the synthetic data, training files in order.
    assert_eq!(
        from_batches.train,
        synthetic::generate_split(5 * PER_FILE, SEED, 0)
    );
    assert_eq!(
        from_batches.test,
        synthetic::generate_split(N_TEST, SEED, 1)
    );
    assert_eq!(from_batches.class_names, CLASS_NAMES);
}

#[test]
fn meta_file_is_optional_but_checked() {
    let s = Scratch::new("loader", "meta");
    let batches = synthetic::write_cifar_dir(s.path(), PER_FILE, N_TEST, SEED).unwrap();
    let meta = batches.join(cifar::META_FILE);
    std::fs::write(&meta, "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n").unwrap();
    assert_eq!(cifar::load(&batches).unwrap().class_names[9], "j");

    std::fs::remove_file(&meta).unwrap();
    assert_eq!(cifar::load(&batches).unwrap().class_names, CLASS_NAMES);

    std::fs::write(&meta, "only\nnine\n3\n4\n5\n6\n7\n8\n9\n").unwrap();
    let (file, record, msg) = data_error(cifar::load(&batches).unwrap_err());
    assert_eq!(file, meta);
    assert_eq!(record, None);
    assert!(msg.contains("expected 10 class names"), "{msg}");
}

#[test]
fn truncated_file_names_file_size_and_record() {
    let s = Scratch::new("loader", "truncated");
    let batches = synthetic::write_cifar_dir(s.path(), PER_FILE, N_TEST, SEED).unwrap();
    let f = batches.join("data_batch_3.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let (file, record, msg) = data_error(cifar::load(&batches).unwrap_err());
    assert_eq!(file, f);
    assert_eq!(record, Some(PER_FILE - 1));
    let size = PER_FILE * RECORD_BYTES - 100;
    assert!(msg.contains(&format!("file size {size} bytes")), "{msg}");
    assert!(msg.contains("data_batch_3.bin"), "{msg}");
    assert!(msg.contains(&format!("record {}", PER_FILE - 1)), "{msg}");
}

#[test]
fn truncated_archive_member_is_reported() {
    let s = Scratch::new("loader", "truncated-tar");
    let mut m = members();
    let test = m
        .iter_mut()
        .find(|(n, _)| n.ends_with("test_batch.bin"))
        .unwrap();
    test.1.truncate(2 * RECORD_BYTES + 7);
    let archive = s.path().join("c.tar.gz");
    write_archive(&archive, &m);
    let (file, record, msg) = data_error(cifar::load(&archive).unwrap_err());
    assert_eq!(file, archive.join("cifar-10-batches-bin/test_batch.bin"));
    assert_eq!(record, Some(2));
    assert!(msg.contains("not a whole number"), "{msg}");
}

#[test]
fn cut_archive_is_an_error_not_a_panic() {
    let s = Scratch::new("loader", "cut-gz");
    let archive = s.path().join("c.tar.gz");
    synthetic::write_cifar_tar_gz(&archive, PER_FILE, N_TEST, SEED).unwrap();
    let bytes = std::fs::read(&archive).unwrap();
    for cut in [10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 30] {
        std::fs::write(&archive, &bytes[..cut]).unwrap();
        let (file, _, msg) = data_error(cifar::load(&archive).unwrap_err());
        assert!(file.starts_with(&archive), "{file:?}: {msg}");
    }
}

#[test]
fn label_out_of_range_names_file_record_and_value() {
    let s = Scratch::new("loader", "label");
    let batches = synthetic::write_cifar_dir(s.path(), PER_FILE, N_TEST, SEED).unwrap();
    let f = batches.join("test_batch.bin");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[3 * RECORD_BYTES] = 10;
    std::fs::write(&f, &bytes).unwrap();
    let (file, record, msg) = data_error(cifar::load(&batches).unwrap_err());
    assert_eq!(file, f);
    assert_eq!(record, Some(3));
    assert!(msg.contains("label 10 out of range 0..=9"), "{msg}");
    assert!(msg.contains("test_batch.bin (record 3)"), "{msg}");

    // Same inside an archive, in a training file.
    let mut m = members();
    m.iter_mut()
        .find(|(n, _)| n.ends_with("data_batch_5.bin"))
        .unwrap()
        .1[0] = 255;
    let archive = s.path().join("c.tar.gz");
    write_archive(&archive, &m);
    let (file, record, msg) = data_error(cifar::load(&archive).unwrap_err());
    assert_eq!(file, archive.join("cifar-10-batches-bin/data_batch_5.bin"));
    assert_eq!(record, Some(0));
    assert!(msg.contains("label 255"), "{msg}");
}

#[test]
fn missing_file_is_named_with_all_missing() {
    let s = Scratch::new("loader", "missing");
    let batches = synthetic::write_cifar_dir(s.path(), PER_FILE, N_TEST, SEED).unwrap();
    std::fs::remove_file(batches.join("data_batch_4.bin")).unwrap();
    std::fs::remove_file(batches.join("test_batch.bin")).unwrap();
    let (file, record, msg) = data_error(cifar::load(&batches).unwrap_err());
    assert_eq!(file, batches.join("data_batch_4.bin"));
    assert_eq!(record, None);
    assert!(
        msg.contains("missing: data_batch_4.bin, test_batch.bin"),
        "{msg}"
    );

    let m: Vec<_> = members()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("data_batch_1.bin"))
        .collect();
    let archive = s.path().join("c.tar.gz");
    write_archive(&archive, &m);
    let (file, _, msg) = data_error(cifar::load(&archive).unwrap_err());
    assert_eq!(file, archive.join("cifar-10-batches-bin/data_batch_1.bin"));
    assert!(msg.contains("missing batch file"), "{msg}");
}

#[test]
fn wrong_folder_says_what_was_expected_and_found() {
    let s = Scratch::new("loader", "wrong");
    std::fs::write(s.path().join("cats.png"), b"x").unwrap();
    std::fs::create_dir(s.path().join("cifar-100-binary")).unwrap();
    let (file, record, msg) = data_error(cifar::load(s.path()).unwrap_err());
    assert_eq!(file, s.path());
    assert_eq!(record, None);
    assert!(msg.contains("not a CIFAR-10 folder"), "{msg}");
    assert!(msg.contains("found cats.png, cifar-100-binary"), "{msg}");
    assert!(msg.contains("cifar-10-batches-bin"), "{msg}");
    assert!(msg.contains("data_batch_1.bin"), "{msg}");

    let empty = s.path().join("cifar-100-binary");
    let (_, _, msg) = data_error(cifar::load(&empty).unwrap_err());
    assert!(msg.contains("the folder is empty"), "{msg}");

    let nowhere = s.path().join("does-not-exist");
    let (file, _, msg) = data_error(cifar::load(&nowhere).unwrap_err());
    assert_eq!(file, nowhere);
    assert!(msg.contains("no such file or folder"), "{msg}");

    let (file, _, msg) = data_error(cifar::load(&s.path().join("cats.png")).unwrap_err());
    assert!(file.ends_with("cats.png"));
    assert!(msg.contains("not a gzip archive"), "{msg}");
}

#[test]
fn empty_and_duplicate_files_are_rejected() {
    let s = Scratch::new("loader", "empty");
    let batches = synthetic::write_cifar_dir(s.path(), PER_FILE, N_TEST, SEED).unwrap();
    let f = batches.join("data_batch_2.bin");
    std::fs::write(&f, b"").unwrap();
    let (file, _, msg) = data_error(cifar::load(&batches).unwrap_err());
    assert_eq!(file, f);
    assert!(msg.contains("empty file"), "{msg}");

    let mut m = members();
    let dup = m[1].clone();
    m.push((
        format!("other/{}", dup.0.rsplit('/').next().unwrap()),
        dup.1,
    ));
    let archive = s.path().join("d.tar.gz");
    write_archive(&archive, &m);
    let (_, _, msg) = data_error(cifar::load(&archive).unwrap_err());
    assert!(msg.contains("twice"), "{msg}");
}

/// The real CIFAR-10 archive (not in the repository): run with
/// `RINGSGD_CIFAR10=/path/to/cifar-10-binary.tar.gz cargo test --release
/// --test data_loader -- --ignored`. Defaults to
/// `../shared/cifar10/cifar-10-binary.tar.gz` next to the repository.
#[test]
#[ignore = "needs the real CIFAR-10 archive"]
fn real_cifar10_archive_loads() {
    let path = std::env::var_os("RINGSGD_CIFAR10")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cifar10/cifar-10-binary.tar.gz")
        });
    assert!(
        path.exists(),
        "{} not found: set RINGSGD_CIFAR10",
        path.display()
    );
    let data = cifar::load(&path).unwrap();
    assert_eq!(data.train.len(), 50_000);
    assert_eq!(data.test.len(), 10_000);
    assert_eq!(data.train.class_counts(), vec![5000; 10]);
    assert_eq!(data.test.class_counts(), vec![1000; 10]);
    assert_eq!(data.class_names, CLASS_NAMES);
    let n = ringsgd::data::Normalizer::from_dataset(&data.train).unwrap();
    let near = ringsgd::data::Normalizer::cifar10();
    for c in 0..3 {
        assert!((n.mean()[c] - near.mean()[c]).abs() < 0.02, "{n:?}");
        assert!((n.std()[c] - near.std()[c]).abs() < 0.02, "{n:?}");
    }
}

/// The archive's gzip trailer: a bad CRC-32 or length (ISIZE), or a data
/// byte flipped inside the compressed stream, are refused naming the
/// archive, as `gzip -t` refuses them (the tar reader alone stops before
/// the trailer and used to accept them).
#[test]
fn corrupted_gzip_streams_are_refused() {
    let s = Scratch::new("loader", "gzip");
    let good = s.path().join("good.tar.gz");
    write_archive(&good, &members());
    cifar::load(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    // (what, byte, xor): the CRC-32 is bytes n-8..n-4, ISIZE n-4..n; a byte
    // in the middle is compressed data.
    for (what, at, xor) in [
        ("crc", n - 8, 0x01u8),
        ("isize", n - 2, 0x01),
        ("data", n / 2, 0x04),
    ] {
        let bad = s.path().join(format!("{what}.tar.gz"));
        let mut b = bytes.clone();
        b[at] ^= xor;
        std::fs::write(&bad, &b).unwrap();
        let gzip_t = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&bad)
            .stderr(std::process::Stdio::null())
            .status();
        if let Ok(st) = gzip_t {
            assert!(
                !st.success(),
                "{what}: gzip -t accepts it, the test is wrong"
            );
        }
        let (file, _, msg) = data_error(cifar::load(&bad).unwrap_err());
        assert_eq!(file, bad, "{what}: {msg}");
        assert!(
            msg.contains("corrupt") || msg.contains("gzip") || msg.contains("checksum"),
            "{what}: {msg}"
        );
    }
}

/// The MD5 rule: a file of the official archive's size must have its MD5
/// (a damaged copy), any other archive only when an MD5 is asked for; a
/// re-packed archive with the official name but another size is accepted
/// on its CRC.
#[test]
fn md5_is_checked_for_the_official_size_or_when_asked() {
    let s = Scratch::new("loader", "md5");
    // The official name, other content and size: accepted.
    let named = s.path().join(cifar::ARCHIVE_NAME);
    write_archive(&named, &members());
    cifar::load(&named).unwrap();
    let md5 = ringsgd::data::download::md5_hex_of_file(&named).unwrap();
    cifar::load_checked(&named, Some(&md5)).unwrap();
    let (file, _, msg) =
        data_error(cifar::load_checked(&named, Some(cifar::CIFAR10_MD5)).unwrap_err());
    assert_eq!(file, named);
    assert!(
        msg.contains(&md5) && msg.contains(cifar::CIFAR10_MD5) && msg.contains("--verify-md5"),
        "{msg}"
    );
    // A folder cannot be MD5-checked.
    let dir = synthetic::write_cifar_dir(&s.path().join("dir"), PER_FILE, N_TEST, SEED).unwrap();
    let (_, _, msg) = data_error(cifar::load_checked(&dir, Some(&md5)).unwrap_err());
    assert!(msg.contains("folder"), "{msg}");
    // Grown to the official size (zeros after the gzip stream, as a sparse
    // file): taken for a copy of the official archive, and refused.
    let sized = s.path().join("renamed.tgz");
    std::fs::copy(&named, &sized).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sized)
        .unwrap()
        .set_len(cifar::OFFICIAL_ARCHIVE_BYTES)
        .unwrap();
    let (file, _, msg) = data_error(cifar::load(&sized).unwrap_err());
    assert_eq!(file, sized);
    assert!(
        msg.contains("damaged copy of the official archive") && msg.contains(cifar::CIFAR10_MD5),
        "{msg}"
    );
}
