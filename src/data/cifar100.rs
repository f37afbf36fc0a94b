//! Loader for the CIFAR-100 binary version.
//!
//! [`load`] (fine labels) and [`load_labels`] (fine or coarse) accept any of
//!
//! * the `cifar-100-binary/` folder (as extracted from the official
//!   archive),
//! * a folder that contains `cifar-100-binary/` or the archive
//!   `cifar-100-binary.tar.gz`,
//! * the `cifar-100-binary.tar.gz` archive itself, streamed through gzip and
//!   tar straight into memory.
//!
//! # File format and validation
//!
//! `train.bin` (50,000 records in the official set) and `test.bin` (10,000)
//! are sequences of 3074-byte records: the coarse label byte (0-19), the
//! fine label byte (0-99), then 1024 red, 1024 green and 1024 blue bytes of
//! a 32x32 image. `fine_label_names.txt` and `coarse_label_names.txt` (one
//! name a line) are optional. Checked as strictly as CIFAR-10
//! ([`cifar`](super::cifar)): both data files present, each a non-zero
//! whole number of records, both label bytes of every record in range (the
//! error names the file, the record, which label and its value), data
//! ending where the size says, meta files with exactly 100 and 20 names,
//! no member twice in an archive, and an archive's whole gzip stream read
//! so that its CRC-32 and length trailer are checked.
//!
//! Errors are [`Error::Data`] naming the file (for archive members
//! `archive.tar.gz/cifar-100-binary/<member>`) and the record.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::cifar::{
    data_err, locate, parse_names, read_archive, read_records, ArchiveReader, Batch, LabelByte,
    Source, MAX_META_BYTES,
};
use super::dataset::{DataSplits, Dataset, IMAGE_BYTES};
use crate::{Error, Result};

/// Bytes per record: coarse label, fine label, [`IMAGE_BYTES`] pixels.
pub const RECORD_BYTES: usize = IMAGE_BYTES + 2;
/// Fine classes (label byte 1).
pub const FINE_CLASSES: usize = 100;
/// Coarse classes, the superclasses (label byte 0).
pub const COARSE_CLASSES: usize = 20;
/// The training file.
pub const TRAIN_FILE: &str = "train.bin";
/// The test file.
pub const TEST_FILE: &str = "test.bin";
/// The optional fine class-name file.
pub const FINE_META_FILE: &str = "fine_label_names.txt";
/// The optional coarse class-name file.
pub const COARSE_META_FILE: &str = "coarse_label_names.txt";
/// The folder the official archive extracts to.
pub const DATA_DIR: &str = "cifar-100-binary";
/// The file name of the official archive.
pub const ARCHIVE_NAME: &str = "cifar-100-binary.tar.gz";

/// Which of a record's two labels a dataset gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LabelKind {
    /// The 100 fine classes (the usual CIFAR-100 task).
    #[default]
    Fine,
    /// The 20 coarse classes (superclasses).
    Coarse,
}

impl LabelKind {
    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            LabelKind::Fine => FINE_CLASSES,
            LabelKind::Coarse => COARSE_CLASSES,
        }
    }

    /// The label byte of a record (0 coarse, 1 fine).
    fn byte(self) -> usize {
        match self {
            LabelKind::Fine => 1,
            LabelKind::Coarse => 0,
        }
    }

    /// Its class-name file.
    pub fn meta_file(self) -> &'static str {
        match self {
            LabelKind::Fine => FINE_META_FILE,
            LabelKind::Coarse => COARSE_META_FILE,
        }
    }
}

/// The published fine class names, in label order.
pub const FINE_NAMES: [&str; FINE_CLASSES] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// The published coarse class names, in label order.
pub const COARSE_NAMES: [&str; COARSE_CLASSES] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// Both label bytes of a record, validated on every record.
const LABELS: [LabelByte; 2] = [
    LabelByte {
        name: "coarse label",
        classes: COARSE_CLASSES,
    },
    LabelByte {
        name: "fine label",
        classes: FINE_CLASSES,
    },
];

fn expected_layout() -> String {
    format!(
        "expected the CIFAR-100 binary version: a `{DATA_DIR}/` folder with {TRAIN_FILE} and \
         {TEST_FILE} ({FINE_META_FILE}, {COARSE_META_FILE} optional), a folder containing \
         `{DATA_DIR}/` or `{ARCHIVE_NAME}`, or the .tar.gz archive itself"
    )
}

/// Loads CIFAR-100 (binary version) with the fine labels; see
/// [`load_labels`].
///
/// ```
/// # fn main() -> ringsgd::Result<()> {
/// use ringsgd::data::{cifar100, synthetic};
/// let dir = std::env::temp_dir().join(format!("ringsgd-doc-c100-{}", std::process::id()));
/// let folder = synthetic::write_cifar100_dir(&dir, 12, 4, 1)?;
/// let data = cifar100::load(&folder)?;
/// assert_eq!((data.train.len(), data.test.len()), (12, 4));
/// assert_eq!((data.train.num_classes(), data.class_names[1].as_str()), (100, "aquarium_fish"));
/// let coarse = cifar100::load_labels(&folder, cifar100::LabelKind::Coarse)?;
/// assert_eq!(coarse.train.num_classes(), 20);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok(())
/// # }
/// ```
pub fn load(path: &Path) -> Result<DataSplits> {
    load_labels(path, LabelKind::Fine)
}

/// Loads CIFAR-100 (binary version) from a folder or a `.tar.gz` archive
/// with the `kind` labels (both are validated); see the [module
/// docs](self). Class names come from the kind's meta file when present,
/// otherwise [`FINE_NAMES`] / [`COARSE_NAMES`].
pub fn load_labels(path: &Path, kind: LabelKind) -> Result<DataSplits> {
    let parts = match resolve(path)? {
        Source::Dir(dir) => load_dir(&dir, kind)?,
        Source::Archive(archive) => load_archive(&archive, kind)?,
    };
    let data = assemble(parts, kind)?;
    log::info!(
        "loaded CIFAR-100 ({:?} labels) from {}: {} training images, {} test images, {} classes",
        kind,
        path.display(),
        data.train.len(),
        data.test.len(),
        data.class_names.len()
    );
    Ok(data)
}

fn resolve(path: &Path) -> Result<Source> {
    locate(
        path,
        "CIFAR-100",
        &[TRAIN_FILE, TEST_FILE],
        DATA_DIR,
        ARCHIVE_NAME,
        &expected_layout(),
    )
}

/// What the files gave: training and test records, the names of the
/// chosen kind, and where the data files are (for the missing-file error).
struct Parts {
    train: Option<Batch>,
    test: Option<Batch>,
    names: Option<Vec<String>>,
    base: PathBuf,
}

fn load_dir(dir: &Path, kind: LabelKind) -> Result<Parts> {
    let mut parts = Parts {
        train: None,
        test: None,
        names: None,
        base: dir.to_path_buf(),
    };
    for (name, slot) in [(TRAIN_FILE, &mut parts.train), (TEST_FILE, &mut parts.test)] {
        let file = dir.join(name);
        let f = match File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&file, e)),
        };
        let size = f.metadata().map_err(|e| Error::io(&file, e))?.len();
        *slot = Some(read_records(
            &mut BufReader::new(f),
            size,
            &file,
            &LABELS,
            kind.byte(),
        )?);
    }
    for k in [LabelKind::Fine, LabelKind::Coarse] {
        let meta = dir.join(k.meta_file());
        if meta.is_file() {
            let size = std::fs::metadata(&meta)
                .map_err(|e| Error::io(&meta, e))?
                .len();
            if size > MAX_META_BYTES {
                return Err(data_err(
                    &meta,
                    None,
                    format!("class-name file is {size} bytes, too large"),
                ));
            }
            let text = std::fs::read(&meta).map_err(|e| Error::io(&meta, e))?;
            let names = parse_names(&text, &meta, k.classes())?;
            if k == kind {
                parts.names = Some(names);
            }
        }
    }
    Ok(parts)
}

fn load_archive(archive: &Path, kind: LabelKind) -> Result<Parts> {
    read_archive(archive, None, &expected_layout(), |tar| {
        read_members(archive, tar, kind)
    })
}

fn read_members(archive: &Path, tar: &mut ArchiveReader, kind: LabelKind) -> Result<Parts> {
    let corrupt = |e: std::io::Error| data_err(archive, None, format!("corrupt archive: {e}"));
    let mut parts = Parts {
        train: None,
        test: None,
        names: None,
        base: archive.join(DATA_DIR),
    };
    // Members seen, to refuse duplicates: train, test, fine and coarse names.
    let mut seen: [Option<PathBuf>; 4] = Default::default();
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
        let slot = [TRAIN_FILE, TEST_FILE, FINE_META_FILE, COARSE_META_FILE]
            .iter()
            .position(|f| *f == name);
        let Some(slot) = slot else {
            log::debug!(
                "ignoring archive member {}",
                archive.join(&member).display()
            );
            continue;
        };
        let shown = archive.join(&member);
        if let Some(prev) = &seen[slot] {
            return Err(data_err(
                &shown,
                None,
                format!("archive holds {name} twice (also as {})", prev.display()),
            ));
        }
        let size = entry.size();
        match slot {
            0 | 1 => {
                let batch = read_records(&mut entry, size, &shown, &LABELS, kind.byte())?;
                if let Some(parent) = member.parent() {
                    parts.base = archive.join(parent);
                }
                if slot == 0 {
                    parts.train = Some(batch);
                } else {
                    parts.test = Some(batch);
                }
            }
            _ => {
                let k = if slot == 2 {
                    LabelKind::Fine
                } else {
                    LabelKind::Coarse
                };
                if size > MAX_META_BYTES {
                    return Err(data_err(
                        &shown,
                        None,
                        format!("class-name file is {size} bytes, too large"),
                    ));
                }
                let mut text = Vec::new();
                entry.read_to_end(&mut text).map_err(corrupt)?;
                let names = parse_names(&text, &shown, k.classes())?;
                if k == kind {
                    parts.names = Some(names);
                }
            }
        }
        seen[slot] = Some(shown);
    }
    Ok(parts)
}

fn assemble(parts: Parts, kind: LabelKind) -> Result<DataSplits> {
    let (train, test) = match (parts.train, parts.test) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => {
            let missing: Vec<&str> = [(TRAIN_FILE, a.is_none()), (TEST_FILE, b.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(f, _)| *f)
                .collect();
            return Err(data_err(
                parts.base.join(missing[0]),
                None,
                format!(
                    "missing data file (missing: {}); the CIFAR-100 binary version needs \
                     {TRAIN_FILE} and {TEST_FILE}",
                    missing.join(", ")
                ),
            ));
        }
    };
    let classes = kind.classes();
    let names = parts.names.unwrap_or_else(|| match kind {
        LabelKind::Fine => FINE_NAMES.iter().map(|s| s.to_string()).collect(),
        LabelKind::Coarse => COARSE_NAMES.iter().map(|s| s.to_string()).collect(),
    });
    Ok(DataSplits {
        train: Dataset::cifar(train.images, train.labels, classes)?,
        test: Dataset::cifar(test.images, test.labels, classes)?,
        class_names: names,
    })
}
