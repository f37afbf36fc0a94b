//! The IDX file format of MNIST and Fashion-MNIST: reading (plain or
//! gzipped) with strict validation, and writing.
//!
//! An IDX file is a 4-byte magic number `0x00 0x00 TYPE NDIM`, `NDIM`
//! big-endian `u32` dimensions, then the values in row-major order. MNIST
//! uses type `0x08` (unsigned bytes): image files have magic
//! [`IMAGES_MAGIC`] (`0x00000803`: count, rows, columns) and label files
//! [`LABELS_MAGIC`] (`0x00000801`: count).
//!
//! A file starting with the gzip magic bytes (`1f 8b`) is decompressed as it
//! is read, whatever its name, and read to the end of the gzip stream so
//! that its CRC-32 and length trailer are checked. Every file is checked:
//! the magic number (type and dimension count), non-zero dimensions, data
//! exactly as long as the header says (a truncated file is reported with
//! the record where it ends, extra bytes as an error too). Errors are
//! [`Error::Data`] naming the file and, where it applies, the record.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::Path;

use super::cifar::read_full;
use crate::{Error, Result};

/// Magic number of an image file: unsigned bytes, 3 dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of a label file: unsigned bytes, 1 dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The IDX type code of unsigned bytes.
const TYPE_U8: u8 = 0x08;

/// The images of an IDX image file: `count` images of `rows x cols` bytes,
/// back to back, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows of each image.
    pub rows: usize,
    /// Columns of each image.
    pub cols: usize,
    /// `count * rows * cols` pixel bytes.
    pub pixels: Vec<u8>,
}

fn data_err(file: &Path, record: Option<usize>, msg: impl Into<String>) -> Error {
    Error::Data {
        file: file.to_path_buf(),
        record,
        msg: msg.into(),
    }
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "16-bit integer",
        0x0C => "32-bit integer",
        0x0D => "32-bit float",
        0x0E => "64-bit float",
        _ => "unknown type",
    }
}

/// An opened IDX file: plain or through a gzip decoder.
struct Reader {
    inner: Box<dyn Read>,
    gzip: bool,
    /// Size of a plain file (for an early, exact size check).
    plain_size: Option<u64>,
}

fn open(path: &Path) -> Result<Reader> {
    let mut file = File::open(path).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            data_err(path, None, "no such file")
        } else {
            Error::io(path, e)
        }
    })?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut magic = [0u8; 2];
    let got = read_full(&mut file, &mut magic).map_err(|e| Error::io(path, e))?;
    let gzip = got == 2 && magic == [0x1f, 0x8b];
    drop(file);
    let file = BufReader::with_capacity(1 << 16, File::open(path).map_err(|e| Error::io(path, e))?);
    Ok(if gzip {
        Reader {
            inner: Box::new(flate2::bufread::GzDecoder::new(file)),
            gzip: true,
            plain_size: None,
        }
    } else {
        Reader {
            inner: Box::new(file),
            gzip: false,
            plain_size: Some(size),
        }
    })
}

impl Reader {
    /// The error of a failed read: for gzip, a damaged stream.
    fn read_error(&self, path: &Path, record: Option<usize>, e: std::io::Error) -> Error {
        if self.gzip {
            data_err(
                path,
                record,
                format!(
                    "gzip check failed ({e}): the file is damaged (`gzip -t` fails on it too); \
                     copy or download it again"
                ),
            )
        } else {
            data_err(path, record, format!("read error: {e}"))
        }
    }

    /// Reads the header: the magic number (which must be `want`) and the
    /// dimensions.
    fn header(&mut self, path: &Path, want: u32, what: &str) -> Result<Vec<usize>> {
        let mut magic = [0u8; 4];
        let got =
            read_full(&mut self.inner, &mut magic).map_err(|e| self.read_error(path, None, e))?;
        if got < 4 {
            return Err(data_err(
                path,
                None,
                format!("file ends after {got} bytes, before the 4-byte IDX magic number"),
            ));
        }
        let found = u32::from_be_bytes(magic);
        let ndim = usize::from(want.to_be_bytes()[3]);
        if found != want {
            let detail = if magic[0] != 0 || magic[1] != 0 {
                "not an IDX file (its first two bytes must be zero)".to_string()
            } else if magic[2] != TYPE_U8 {
                format!(
                    "an IDX file of {} values (type 0x{:02x}), not unsigned bytes",
                    type_name(magic[2]),
                    magic[2]
                )
            } else {
                format!(
                    "an IDX file of {} dimension(s), not {ndim} ({} file?)",
                    magic[3],
                    if magic[3] == 1 { "a label" } else { "an image" }
                )
            };
            return Err(data_err(
                path,
                None,
                format!(
                    "magic number 0x{found:08x}, expected 0x{want:08x} for an IDX {what} file: \
                     {detail}"
                ),
            ));
        }
        let mut dims = vec![0u8; 4 * ndim];
        let got =
            read_full(&mut self.inner, &mut dims).map_err(|e| self.read_error(path, None, e))?;
        if got < dims.len() {
            return Err(data_err(
                path,
                None,
                format!(
                    "file ends inside its header ({} of {} dimension bytes)",
                    got,
                    dims.len()
                ),
            ));
        }
        let dims: Vec<usize> = dims
            .chunks_exact(4)
            .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
            .collect();
        if let Some(i) = dims.iter().position(|&d| d == 0) {
            return Err(data_err(
                path,
                None,
                format!("dimension {i} of the header is 0 (dimensions {dims:?}): no data"),
            ));
        }
        Ok(dims)
    }

    /// Reads `count` records of `record` bytes, then checks that the file
    /// (and, for gzip, its stream with the CRC trailer) ends there.
    fn records(
        &mut self,
        path: &Path,
        header: u64,
        count: usize,
        record: usize,
    ) -> Result<Vec<u8>> {
        let total = count
            .checked_mul(record)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(|| {
                data_err(
                    path,
                    None,
                    format!("{count} records of {record} bytes: too large"),
                )
            })?;
        if let Some(size) = self.plain_size {
            let want = header + total as u64;
            if size < want {
                let have = (size - header) as usize;
                let at = have / record;
                return Err(data_err(
                    path,
                    Some(at),
                    format!(
                        "file is {size} bytes but its header declares {count} records of {record} \
                         bytes ({want} bytes in all): it stops {} bytes into record {at}",
                        have % record
                    ),
                ));
            }
            if size > want {
                return Err(data_err(
                    path,
                    None,
                    format!(
                        "file is {size} bytes but its header declares {count} records of {record} \
                         bytes ({want} bytes in all): {} bytes too many",
                        size - want
                    ),
                ));
            }
        }
        let mut data = Vec::new();
        data.try_reserve_exact(total).map_err(|_| {
            data_err(
                path,
                None,
                format!("cannot allocate memory for {count} records"),
            )
        })?;
        data.resize(total, 0);
        let got =
            read_full(&mut self.inner, &mut data).map_err(|e| self.read_error(path, None, e))?;
        if got < total {
            let at = got / record;
            return Err(data_err(
                path,
                Some(at),
                format!(
                    "data ends early: the header declares {count} records of {record} bytes but it \
                     stops {} bytes into record {at}",
                    got % record
                ),
            ));
        }
        // Reading to the end checks a gzip stream's CRC-32 and length.
        let mut rest = [0u8; 512];
        let mut extra = 0u64;
        loop {
            match self.inner.read(&mut rest) {
                Ok(0) => break,
                Ok(k) => extra += k as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(path, None, e)),
            }
        }
        if extra > 0 {
            return Err(data_err(
                path,
                None,
                format!("{extra} bytes after the {count} records its header declares"),
            ));
        }
        Ok(data)
    }
}

/// Reads an IDX image file ([`IMAGES_MAGIC`]), plain or gzipped; see the
/// [module docs](self) for what is checked.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let mut r = open(path)?;
    let dims = r.header(path, IMAGES_MAGIC, "image")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    let record = rows
        .checked_mul(cols)
        .ok_or_else(|| data_err(path, None, format!("images of {rows}x{cols}: too large")))?;
    let pixels = r.records(path, 16, count, record)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX label file ([`LABELS_MAGIC`]), plain or gzipped; see the
/// [module docs](self) for what is checked (label ranges are the
/// caller's: [`mnist`](super::mnist) checks them).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let mut r = open(path)?;
    let dims = r.header(path, LABELS_MAGIC, "label")?;
    r.records(path, 8, dims[0], 1)
}

/// The bytes of an IDX image file of `count` images of `rows x cols`
/// (`pixels.len()` must be `count * rows * cols`).
///
/// ```
/// use ringsgd::data::idx;
/// let bytes = idx::encode_images(2, 3, &[7u8; 12])?;
/// assert_eq!(&bytes[..4], &[0, 0, 8, 3]);
/// assert_eq!(bytes.len(), 16 + 12);
/// # Ok::<(), ringsgd::Error>(())
/// ```
pub fn encode_images(rows: usize, cols: usize, pixels: &[u8]) -> Result<Vec<u8>> {
    let per = rows * cols;
    if per == 0 || pixels.len() % per != 0 {
        return Err(Error::invalid(format!(
            "{} pixel bytes are not a whole number of {rows}x{cols} images",
            pixels.len()
        )));
    }
    let dim = |v: usize| {
        u32::try_from(v).map_err(|_| Error::invalid(format!("IDX dimension {v} exceeds 2^32")))
    };
    let mut out = Vec::with_capacity(16 + pixels.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for d in [pixels.len() / per, rows, cols] {
        out.extend_from_slice(&dim(d)?.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    Ok(out)
}

/// The bytes of an IDX label file holding `labels`.
pub fn encode_labels(labels: &[u8]) -> Result<Vec<u8>> {
    let n = u32::try_from(labels.len())
        .map_err(|_| Error::invalid(format!("{} labels exceed 2^32", labels.len())))?;
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(labels);
    Ok(out)
}

/// `bytes` gzip-compressed (as the MNIST `.gz` files are).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}
