//! Loader for the CIFAR-10 binary version.
//!
//! [`load`] accepts any of
//!
//! * the `cifar-10-batches-bin/` folder (as extracted from the official
//!   archive),
//! * a folder that contains `cifar-10-batches-bin/` (or the archive
//!   `cifar-10-binary.tar.gz`, e.g. the download cache folder),
//! * the `cifar-10-binary.tar.gz` archive itself, read by streaming through
//!   gzip and tar straight into memory (nothing is extracted to disk).
//!
//! # File format and validation
//!
//! Each of the six batch files (`data_batch_1.bin` .. `data_batch_5.bin`,
//! `test_batch.bin`) is a sequence of 3073-byte records: one label byte
//! (0-9), then 1024 red, 1024 green and 1024 blue bytes of a 32x32 image,
//! rows top to bottom. `batches.meta.txt` (class names, one a line) is
//! optional. Every file is checked before use:
//!
//! * all six batch files are present (the error names the first missing
//!   file and lists all missing ones);
//! * the size is a non-zero whole number of records (the error gives the
//!   size and the index of the trailing partial record);
//! * every label is in 0..=9 (the error names the file, the record and the
//!   value);
//! * the data ends where the size says (a truncated archive member is
//!   reported with the record where it ends);
//! * for an archive, the whole gzip stream is read to its end, so its
//!   CRC-32 and length (ISIZE) trailer are always checked, as `gzip -t`
//!   does (the tar reader alone stops at the end-of-archive blocks, before
//!   the trailer, and would accept a corrupted stream);
//! * for an archive, its MD5 is checked (computed while it is read, at no
//!   extra I/O) when the file claims to be the official archive, or when
//!   asked ([`load_checked`] with an expected MD5).
//!
//! # Which archive is "the official one"
//!
//! The official `cifar-10-binary.tar.gz` is [`OFFICIAL_ARCHIVE_BYTES`]
//! (170,052,171) bytes with MD5 [`CIFAR10_MD5`]. An archive of exactly that
//! size is taken to be a copy of it, whatever its name, and must have its
//! MD5: any re-packing changes the compressed size, so a file of that size
//! with another digest is a damaged copy (a bit flipped or a block lost on
//! a copy to an SD card). The name is not used: re-packed archives, such as
//! one whose pixels were re-decoded from another source, keep the official
//! name but not its size, and are accepted on their gzip CRC alone. To
//! insist on the official archive (or on any known digest), pass the MD5
//! explicitly (the example's `--verify-md5`).
//!
//! Errors are [`Error::Data`] with the offending file (for archive members:
//! `archive.tar.gz/cifar-10-batches-bin/<member>`) and record; a malformed
//! input never panics and never yields a partial dataset.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::dataset::{CifarData, Dataset, CLASS_NAMES, IMAGE_BYTES, NUM_CLASSES};
pub use super::download::CIFAR10_MD5;
use crate::{Error, Result};

/// Bytes per CIFAR-10 record: one label byte then [`IMAGE_BYTES`] pixels.
pub const RECORD_BYTES: usize = IMAGE_BYTES + 1;
/// The training batch files, in the order their images are concatenated.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The optional class-name file (one name a line).
pub const META_FILE: &str = "batches.meta.txt";
/// The folder the official archive extracts to.
pub const BATCHES_DIR: &str = "cifar-10-batches-bin";
/// The file name of the official archive.
pub const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";
/// Size in bytes of the official archive (published with [`CIFAR10_MD5`]).
pub const OFFICIAL_ARCHIVE_BYTES: u64 = 170_052_171;
/// [`CIFAR10_MD5`] as bytes.
const OFFICIAL_MD5: [u8; 16] = [
    0xc3, 0x2a, 0x1d, 0x4a, 0xb5, 0xd0, 0x3f, 0x12, 0x84, 0xb6, 0x78, 0x83, 0xe8, 0xd8, 0x75, 0x30,
];

/// Records read per `read_exact` call (about 0.8 MB).
const CHUNK_RECORDS: usize = 256;
/// Upper bound on the size of `batches.meta.txt` we are willing to read.
pub(super) const MAX_META_BYTES: u64 = 64 * 1024;

/// All six batch files, training first.
fn batch_files() -> impl Iterator<Item = &'static str> {
    TRAIN_FILES
        .iter()
        .copied()
        .chain(std::iter::once(TEST_FILE))
}

fn expected_layout() -> String {
    format!(
        "expected the CIFAR-10 binary version: a `{BATCHES_DIR}/` folder with {}..{} and {TEST_FILE} \
         ({META_FILE} optional), a folder containing `{BATCHES_DIR}/` or `{ARCHIVE_NAME}`, or the \
         .tar.gz archive itself",
        TRAIN_FILES[0], TRAIN_FILES[4]
    )
}

/// Loads CIFAR-10 (binary version) from a folder or a `.tar.gz` archive; see
/// the [module docs](self) for what is accepted and validated.
///
/// ```
/// # fn main() -> ringsgd::Result<()> {
/// use ringsgd::data::{cifar, synthetic};
/// let dir = std::env::temp_dir().join(format!("ringsgd-doc-cifar-{}", std::process::id()));
/// let batches = synthetic::write_cifar_dir(&dir, 4, 6, 1)?;
/// let data = cifar::load(&batches)?;
/// assert_eq!((data.train.len(), data.test.len()), (20, 6));
/// assert_eq!(data.class_names[0], "airplane");
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn load(path: &Path) -> Result<CifarData> {
    load_checked(path, None)
}

/// [`load`], and when `expected_md5` (32 hex digits) is given, the archive
/// must have that MD5 (whatever its size); a folder is then refused, having
/// no archive to check. Without it the MD5 is checked only for a file of
/// the official archive's size (see the [module docs](self)).
pub fn load_checked(path: &Path, expected_md5: Option<&str>) -> Result<CifarData> {
    let expected = expected_md5
        .map(|s| super::download::parse_md5(s).map(|d| (d, Md5Origin::Asked)))
        .transpose()?;
    let data = match resolve(path)? {
        Source::Dir(dir) => {
            if let Some((d, _)) = expected {
                return Err(data_err(
                    &dir,
                    None,
                    format!(
                        "an MD5 check ({}) was asked for, but this is an extracted folder: give \
                 the .tar.gz archive itself",
                        super::download::hex(&d)
                    ),
                ));
            }
            load_dir(&dir)?
        }
        Source::Archive(archive) => load_archive(&archive, expected)?,
    };
    log::info!(
        "loaded CIFAR-10 from {}: {} training images, {} test images, {} classes",
        path.display(),
        data.train.len(),
        data.test.len(),
        data.class_names.len()
    );
    Ok(data)
}

pub(super) fn data_err(
    file: impl Into<PathBuf>,
    record: Option<usize>,
    msg: impl Into<String>,
) -> Error {
    Error::Data {
        file: file.into(),
        record,
        msg: msg.into(),
    }
}

/// Where a data set's files are: a file (an archive), or a folder.
pub(super) enum Source {
    Dir(PathBuf),
    Archive(PathBuf),
}

/// Finds a CIFAR-style data set at `path`: an archive file, a folder with
/// any of `files`, a folder containing the folder `nested`, or a folder
/// containing `archive`. Errors name `path`, say what was `expected` and,
/// for a wrong folder, what is in it (`set` names the data set).
pub(super) fn locate(
    path: &Path,
    set: &str,
    files: &[&str],
    nested: &str,
    archive: &str,
    expected: &str,
) -> Result<Source> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let what = if e.kind() == ErrorKind::NotFound {
            "no such file or folder".to_string()
        } else {
            e.to_string()
        };
        data_err(path, None, format!("{what}; {expected}"))
    })?;
    if meta.is_file() {
        return Ok(Source::Archive(path.to_path_buf()));
    }
    if !meta.is_dir() {
        return Err(data_err(
            path,
            None,
            format!("neither a file nor a folder; {expected}"),
        ));
    }
    if files.iter().any(|f| path.join(f).exists()) {
        return Ok(Source::Dir(path.to_path_buf()));
    }
    let inner = path.join(nested);
    if inner.is_dir() {
        return Ok(Source::Dir(inner));
    }
    let packed = path.join(archive);
    if packed.is_file() {
        return Ok(Source::Archive(packed));
    }
    // Wrong folder: say what we wanted and what is there.
    let listing = folder_listing(path)?;
    Err(data_err(
        path,
        None,
        format!("not a {set} folder ({listing}); {expected}"),
    ))
}

fn resolve(path: &Path) -> Result<Source> {
    let files: Vec<&str> = batch_files().collect();
    locate(
        path,
        "CIFAR-10",
        &files,
        BATCHES_DIR,
        ARCHIVE_NAME,
        &expected_layout(),
    )
}

/// What is in folder `path`, for an error: "found a, b, c" (at most ten
/// names) or "the folder is empty".
pub(super) fn folder_listing(path: &Path) -> Result<String> {
    let mut found: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    Ok(if found.is_empty() {
        "the folder is empty".to_string()
    } else if found.len() > 10 {
        format!(
            "found {} and {} more",
            found[..10].join(", "),
            found.len() - 10
        )
    } else {
        format!("found {}", found.join(", "))
    })
}

/// Images and labels of one batch file.
pub(super) struct Batch {
    pub(super) images: Vec<u8>,
    pub(super) labels: Vec<u8>,
}

/// One label byte of a record: what it is called in errors and how many
/// classes it has.
pub(super) struct LabelByte {
    pub(super) name: &'static str,
    pub(super) classes: usize,
}

/// The CIFAR-10 record: one label byte.
const CIFAR10_LABELS: [LabelByte; 1] = [LabelByte {
    name: "label",
    classes: NUM_CLASSES,
}];

/// Records in each file of the official CIFAR-10 (five training batches and
/// the test batch).
const OFFICIAL_BATCH_RECORDS: u64 = 10_000;

/// Logs a batch file's record count, and warns when it is not the official
/// 10,000: a copy cut at a record boundary (or a hand-made subset) loads
/// without error, so the user at least hears that it is not CIFAR-10 as
/// published.
fn log_batch_size(file: &Path, size: u64) {
    let records = size / RECORD_BYTES as u64;
    if records == OFFICIAL_BATCH_RECORDS {
        log::debug!("read {}: {records} records", file.display());
    } else {
        log::warn!(
            "{}: {records} records where each file of the official CIFAR-10 holds {}: \
             training on what it holds (a cut copy or a subset?)",
            file.display(),
            OFFICIAL_BATCH_RECORDS
        );
    }
}

/// Reads `size` bytes of CIFAR-10 records from `reader`, validating as it
/// goes.
fn read_batch<R: Read>(reader: &mut R, size: u64, file: &Path) -> Result<Batch> {
    read_records(reader, size, file, &CIFAR10_LABELS, 0)
}

/// Reads `size` bytes of records of `labels.len()` label bytes then
/// [`IMAGE_BYTES`] pixels from `reader`, validating every label byte, and
/// keeps label byte `keep` of each record.
pub(super) fn read_records<R: Read>(
    reader: &mut R,
    size: u64,
    file: &Path,
    labels_spec: &[LabelByte],
    keep: usize,
) -> Result<Batch> {
    let header = labels_spec.len();
    let record_bytes = header + IMAGE_BYTES;
    let record = record_bytes as u64;
    if size == 0 {
        return Err(data_err(file, None, "empty file: it holds no records"));
    }
    if size % record != 0 {
        let full = size / record;
        return Err(data_err(
            file,
            Some(full as usize),
            format!(
                "file size {size} bytes is not a whole number of {record_bytes}-byte records: \
                 record {full} is truncated ({} of {record_bytes} bytes)",
                size % record
            ),
        ));
    }
    let n = usize::try_from(size / record)
        .map_err(|_| data_err(file, None, format!("file size {size} bytes is too large")))?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    images
        .try_reserve_exact(n * IMAGE_BYTES)
        .and_then(|_| labels.try_reserve_exact(n))
        .map_err(|_| {
            data_err(
                file,
                None,
                format!("cannot allocate memory for {n} records"),
            )
        })?;
    let mut buf = vec![0u8; CHUNK_RECORDS.min(n) * record_bytes];
    let mut done = 0usize;
    while done < n {
        let k = CHUNK_RECORDS.min(n - done);
        let chunk = &mut buf[..k * record_bytes];
        let got = read_full(reader, chunk)
            .map_err(|e| data_err(file, Some(done), format!("read error: {e}")))?;
        if got < chunk.len() {
            let at = done + got / record_bytes;
            return Err(data_err(
                file,
                Some(at),
                format!(
                    "data ends early: expected {n} records ({size} bytes) but it stops {} bytes \
                     into record {at}",
                    got % record_bytes
                ),
            ));
        }
        for (j, rec) in chunk.chunks_exact(record_bytes).enumerate() {
            for (spec, &label) in labels_spec.iter().zip(rec) {
                if usize::from(label) >= spec.classes {
                    return Err(data_err(
                        file,
                        Some(done + j),
                        format!(
                            "{} {label} out of range 0..={}",
                            spec.name,
                            spec.classes - 1
                        ),
                    ));
                }
            }
            labels.push(rec[keep]);
            images.extend_from_slice(&rec[header..]);
        }
        done += k;
    }
    Ok(Batch { images, labels })
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(super) fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn parse_meta(text: &[u8], file: &Path) -> Result<Vec<String>> {
    parse_names(text, file, NUM_CLASSES)
}

/// The class names of a meta file (one a line, blank lines ignored), which
/// must be exactly `count`.
pub(super) fn parse_names(text: &[u8], file: &Path, count: usize) -> Result<Vec<String>> {
    let text = std::str::from_utf8(text)
        .map_err(|e| data_err(file, None, format!("class-name file is not UTF-8: {e}")))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != count {
        return Err(data_err(
            file,
            None,
            format!(
                "expected {count} class names (one a line), found {}",
                names.len()
            ),
        ));
    }
    Ok(names)
}

/// Slot of a batch file name: 0..5 training, 5 test.
fn slot_of(name: &str) -> Option<usize> {
    batch_files().position(|f| f == name)
}

fn missing_error(base: &Path, slots: &[Option<Batch>]) -> Option<Error> {
    let missing: Vec<&str> = batch_files()
        .zip(slots)
        .filter(|(_, s)| s.is_none())
        .map(|(f, _)| f)
        .collect();
    missing.first().map(|first| {
        data_err(
            base.join(first),
            None,
            format!(
                "missing batch file (missing: {}); the CIFAR-10 binary version needs all six files \
                 {}..{} and {TEST_FILE}",
                missing.join(", "),
                TRAIN_FILES[0],
                TRAIN_FILES[4]
            ),
        )
    })
}

fn assemble(slots: Vec<Option<Batch>>, class_names: Option<Vec<String>>) -> Result<CifarData> {
    let mut slots: Vec<Batch> = slots
        .into_iter()
        .map(|s| s.expect("checked for missing files"))
        .collect();
    let test = slots.pop().expect("six slots");
    // Grow the first training batch once to the full size (one realloc,
    // which the allocator can usually do in place for a large block) and
    // free each other batch as soon as it is copied: peak memory stays near
    // the size of the training set rather than twice it.
    let mut rest = slots.split_off(1).into_iter();
    let mut train = slots.pop().expect("six slots");
    let total_images: usize = train.images.len()
        + rest
            .as_slice()
            .iter()
            .map(|b| b.images.len())
            .sum::<usize>();
    let total_labels: usize = train.labels.len()
        + rest
            .as_slice()
            .iter()
            .map(|b| b.labels.len())
            .sum::<usize>();
    train
        .images
        .reserve_exact(total_images - train.images.len());
    train
        .labels
        .reserve_exact(total_labels - train.labels.len());
    for b in rest.by_ref() {
        train.images.extend_from_slice(&b.images);
        train.labels.extend_from_slice(&b.labels);
    }
    Ok(CifarData {
        train: Dataset::cifar(train.images, train.labels, NUM_CLASSES)?,
        test: Dataset::cifar(test.images, test.labels, NUM_CLASSES)?,
        class_names: class_names
            .unwrap_or_else(|| CLASS_NAMES.iter().map(|s| s.to_string()).collect()),
    })
}

fn load_dir(dir: &Path) -> Result<CifarData> {
    let mut slots: Vec<Option<Batch>> = (0..6).map(|_| None).collect();
    for (slot, name) in batch_files().enumerate() {
        let file = dir.join(name);
        let f = match File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&file, e)),
        };
        let size = f.metadata().map_err(|e| Error::io(&file, e))?.len();
        let mut reader = BufReader::new(f);
        slots[slot] = Some(read_batch(&mut reader, size, &file)?);
        log_batch_size(&file, size);
    }
    if let Some(err) = missing_error(dir, &slots) {
        return Err(err);
    }
    let meta = dir.join(META_FILE);
    let class_names = if meta.is_file() {
        let text = std::fs::read(&meta).map_err(|e| Error::io(&meta, e))?;
        Some(parse_meta(&text, &meta)?)
    } else {
        None
    };
    assemble(slots, class_names)
}

/// Why an archive's MD5 is checked.
#[derive(Clone, Copy, Debug)]
pub(super) enum Md5Origin {
    /// The caller gave the digest.
    Asked,
    /// The file has the official archive's size.
    OfficialSize,
}

/// A reader that computes the MD5 of everything read through it.
pub(super) struct Md5Reader<R> {
    inner: R,
    md5: Option<Md5>,
}

impl<R: Read> Read for Md5Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(m) = self.md5.as_mut() {
            m.update(&buf[..n]);
        }
        Ok(n)
    }
}

fn load_archive(archive: &Path, expected: Option<([u8; 16], Md5Origin)>) -> Result<CifarData> {
    let size = std::fs::metadata(archive)
        .map_err(|e| Error::io(archive, e))?
        .len();
    let expected = expected.or_else(|| {
        (size == OFFICIAL_ARCHIVE_BYTES).then_some((OFFICIAL_MD5, Md5Origin::OfficialSize))
    });
    let (slots, class_names, batches_base) =
        read_archive(archive, expected, &expected_layout(), |tar| {
            read_members(archive, tar)
        })?;
    let base = batches_base.unwrap_or_else(|| archive.join(BATCHES_DIR));
    if let Some(err) = missing_error(&base, &slots) {
        return Err(err);
    }
    assemble(slots, class_names)
}

/// Streams the `.tar.gz` `archive` through `read` (which sees its members),
/// then checks the rest of the gzip stream (CRC-32 and length trailer) and,
/// when `expected` is given, the MD5 of the file. A damaged stream is
/// reported as the cause of whatever `read` saw. `layout` says what was
/// expected, for a file that is not gzip at all.
pub(super) fn read_archive<T>(
    archive: &Path,
    expected: Option<([u8; 16], Md5Origin)>,
    layout: &str,
    read: impl FnOnce(&mut ArchiveReader) -> Result<T>,
) -> Result<T> {
    let mut file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let size = file.metadata().map_err(|e| Error::io(archive, e))?.len();
    let mut magic = [0u8; 2];
    let is_gzip = match file.read_exact(&mut magic) {
        Ok(()) => magic == [0x1f, 0x8b],
        Err(_) => false,
    };
    if !is_gzip {
        return Err(data_err(
            archive,
            None,
            format!("not a gzip archive; {layout}"),
        ));
    }
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    // The MD5 is computed as the decoder reads the file: no second pass.
    let hashed = Md5Reader {
        inner: file,
        md5: expected.map(|_| Md5::new()),
    };
    let gz = flate2::bufread::GzDecoder::new(BufReader::with_capacity(1 << 16, hashed));
    let mut tar = tar::Archive::new(gz);
    let members = read(&mut tar);
    let checked = check_stream(archive, tar.into_inner(), size, expected);
    match (members, checked) {
        (Ok(m), Ok(())) => Ok(m),
        // A damaged stream is the cause of whatever its members showed.
        (Err(first), Err(Error::Data { file, record, msg })) => Err(data_err(
            file,
            record,
            format!("{msg} (reading it first failed with: {first})"),
        )),
        (_, Err(e)) | (Err(e), Ok(())) => Err(e),
    }
}

/// The decoder of an archive being read (see [`load_archive`]).
pub(super) type ArchiveReader =
    tar::Archive<flate2::bufread::GzDecoder<BufReader<Md5Reader<File>>>>;

/// The batch files, the class names and the folder holding them.
type Members = (Vec<Option<Batch>>, Option<Vec<String>>, Option<PathBuf>);

/// Reads the archive's members: the batch files into their slots, the
/// class names, and where the batch files are.
fn read_members(archive: &Path, tar: &mut ArchiveReader) -> Result<Members> {
    let corrupt = |e: std::io::Error| data_err(archive, None, format!("corrupt archive: {e}"));

    let mut slots: Vec<Option<Batch>> = (0..6).map(|_| None).collect();
    let mut member_paths: Vec<Option<PathBuf>> = vec![None; 6];
    let mut class_names = None;
    let mut seen_meta: Option<PathBuf> = None;
    let mut batches_base: Option<PathBuf> = None;
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(corrupt)?.into_owned();
        let name = match member.file_name().and_then(|n| n.to_str()) {
            Some(n) => n.to_string(),
            None => continue,
        };
        let shown = archive.join(&member);
        if let Some(slot) = slot_of(&name) {
            if let Some(prev) = &member_paths[slot] {
                return Err(data_err(
                    &shown,
                    None,
                    format!(
                        "archive holds {name} twice (also as {})",
                        archive.join(prev).display()
                    ),
                ));
            }
            let size = entry.size();
            slots[slot] = Some(read_batch(&mut entry, size, &shown)?);
            log_batch_size(&shown, size);
            if batches_base.is_none() {
                batches_base = Some(
                    member
                        .parent()
                        .map(|p| archive.join(p))
                        .unwrap_or_else(|| archive.to_path_buf()),
                );
            }
            member_paths[slot] = Some(member);
        } else if name == META_FILE {
            if let Some(prev) = &seen_meta {
                return Err(data_err(
                    &shown,
                    None,
                    format!(
                        "archive holds {META_FILE} twice (also as {})",
                        prev.display()
                    ),
                ));
            }
            if entry.size() > MAX_META_BYTES {
                return Err(data_err(
                    &shown,
                    None,
                    format!("class-name file is {} bytes, too large", entry.size()),
                ));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(corrupt)?;
            class_names = Some(parse_meta(&text, &shown)?);
            seen_meta = Some(shown);
        } else {
            log::debug!("ignoring archive member {}", shown.display());
        }
    }
    Ok((slots, class_names, batches_base))
}

/// Reads the rest of the gzip stream, which makes the decoder check its
/// CRC-32 and length trailer (the tar reader stops at the end-of-archive
/// blocks, before it), then the rest of the file, and compares the MD5.
fn check_stream(
    archive: &Path,
    mut gz: flate2::bufread::GzDecoder<BufReader<Md5Reader<File>>>,
    size: u64,
    expected: Option<([u8; 16], Md5Origin)>,
) -> Result<()> {
    std::io::copy(&mut gz, &mut std::io::sink()).map_err(|e| {
        data_err(
            archive,
            None,
            format!(
                "gzip check failed ({e}): the archive is damaged (`gzip -t` fails on it too); \
                 copy or download it again"
            ),
        )
    })?;
    let mut rest = gz.into_inner();
    let trailing =
        std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| Error::io(archive, e))?;
    if trailing > 0 {
        log::warn!(
            "{}: {trailing} bytes after the end of the gzip stream ignored (as gzip does)",
            archive.display()
        );
    }
    // The hasher exists exactly when a digest is expected.
    let (Some((want, origin)), Some(md5)) = (expected, rest.into_inner().md5) else {
        return Ok(());
    };
    let got: [u8; 16] = md5.finalize().into();
    if got == want {
        log::info!(
            "{}: MD5 {} checks out",
            archive.display(),
            super::download::hex(&got)
        );
        return Ok(());
    }
    let (got, want) = (super::download::hex(&got), super::download::hex(&want));
    Err(data_err(
        archive,
        None,
        match origin {
            Md5Origin::Asked => format!("MD5 is {got}, but {want} was asked for (--verify-md5)"),
            Md5Origin::OfficialSize => format!(
                "MD5 is {got}, but the official {ARCHIVE_NAME}, whose size ({size} bytes) this \
                 file has, has MD5 {want}: it is a damaged copy of the official archive; \
                 download it again (--download)"
            ),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_md5_bytes_match_the_published_hex() {
        assert_eq!(super::super::download::hex(&OFFICIAL_MD5), CIFAR10_MD5);
    }

    #[test]
    fn short_stream_names_the_record_where_it_stops() {
        let mut bytes = vec![1u8; 3 * RECORD_BYTES];
        bytes.truncate(2 * RECORD_BYTES + 10);
        let size = 3 * RECORD_BYTES as u64;
        let err = read_batch(&mut &bytes[..], size, Path::new("x.bin"))
            .err()
            .expect("short data must fail");
        match err {
            Error::Data { record, msg, .. } => {
                assert_eq!(record, Some(2));
                assert!(msg.contains("10 bytes into record 2"), "{msg}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn reads_across_chunks() {
        let n = CHUNK_RECORDS + 3;
        let mut bytes = Vec::new();
        for i in 0..n {
            bytes.push((i % 10) as u8);
            bytes.extend(std::iter::repeat_n((i % 251) as u8, IMAGE_BYTES));
        }
        let b = read_batch(&mut &bytes[..], bytes.len() as u64, Path::new("x.bin")).unwrap();
        assert_eq!(b.labels.len(), n);
        assert_eq!(b.labels[n - 1], ((n - 1) % 10) as u8);
        assert_eq!(b.images[(n - 1) * IMAGE_BYTES], ((n - 1) % 251) as u8);
    }
}
