//! The binary checkpoint format (see the [module docs](super) for the
//! byte layout).

use std::path::Path;

use byteorder::{ByteOrder, LittleEndian, WriteBytesExt};

use crate::data::DataIdentity;
use crate::{Error, Result};

/// First 8 bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"RINGSGD\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Bytes before the first section: magic, version, section count, length.
const HEADER_BYTES: usize = 8 + 4 + 4 + 8;
/// Bytes of the trailing CRC-32.
const TRAILER_BYTES: usize = 4;

const TAG_META: [u8; 4] = *b"META";
const TAG_PARAMS: [u8; 4] = *b"PARM";
const TAG_OPTIM: [u8; 4] = *b"OPTM";
const TAG_RNG: [u8; 4] = *b"RNGS";
const TAG_CONFIG: [u8; 4] = *b"CONF";
const TAG_METRICS: [u8; 4] = *b"METR";
const TAG_DATA: [u8; 4] = *b"DATA";

/// SGD optimiser state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Learning rate in effect at the save (informational when a schedule
    /// recomputes it from the step).
    pub lr: f32,
    /// Momentum coefficient.
    pub momentum: f32,
    /// Dampening of the momentum update.
    pub dampening: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Optimiser steps taken.
    pub steps: u64,
    /// The momentum buffer, one value per parameter; `None` before the
    /// first step or without momentum.
    pub momentum_buffer: Option<Vec<f32>>,
}

/// Everything needed to resume training exactly.
///
/// # RNG state
///
/// The data order and augmentation of [`crate::data`] are counter-based
/// functions of `(seed, epoch, position)`, so `seed`, `epoch` and
/// `step_in_epoch` are the full state of the data pipeline; no generator
/// has to be saved for it. `rng_state` holds the opaque state of any other
/// generator a model may use (empty when there is none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// Description of the architecture (e.g. the model's spec string); a
    /// resume should check it matches the model it builds.
    pub model_spec: String,
    /// Input shape (channels, height, width).
    pub input_chw: [u32; 3],
    /// All model parameters, in the model's flat order.
    pub params: Vec<f32>,
    /// Optimiser state.
    pub optimizer: OptimizerState,
    /// Completed epochs.
    pub epoch: u64,
    /// Optimiser steps done since the start of training.
    pub step: u64,
    /// Steps done within epoch `epoch` (0 when saved at an epoch boundary).
    pub step_in_epoch: u64,
    /// The shared seed of the run.
    pub seed: u64,
    /// Opaque state of any other random generator (see above).
    pub rng_state: Vec<u8>,
    /// Number of ranks that trained up to this checkpoint (informational:
    /// training may resume with another world size).
    pub world_size_at_save: u32,
    /// Free-form settings (global batch, schedule, ...), unique keys.
    pub config: Vec<(String, String)>,
    /// Optional metrics (loss, accuracy, ...), unique names.
    pub metrics: Vec<(String, f64)>,
    /// What the run was trained on (section `DATA`); `None` in checkpoints
    /// written before it was recorded, which a resume reads with a warning
    /// (see [`Checkpoint::check_data`]).
    pub data: Option<DataIdentity>,
}

fn ckpt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.write_u32::<LittleEndian>(s.len() as u32)
        .expect("write to Vec");
    out.extend_from_slice(s.as_bytes());
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    out.write_u64::<LittleEndian>(v.len() as u64)
        .expect("write to Vec");
    let start = out.len();
    out.resize(start + 4 * v.len(), 0);
    LittleEndian::write_f32_into(v, &mut out[start..]);
}

fn section(out: &mut Vec<u8>, tag: [u8; 4], body: &[u8]) {
    out.extend_from_slice(&tag);
    out.write_u64::<LittleEndian>(body.len() as u64)
        .expect("write to Vec");
    out.extend_from_slice(body);
}

fn check_unique<'a>(what: &str, keys: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for k in keys {
        if !seen.insert(k) {
            return Err(Error::invalid(format!(
                "checkpoint {what} key {k:?} appears twice"
            )));
        }
    }
    Ok(())
}

impl Checkpoint {
    /// Checks internal consistency: momentum buffer length equal to the
    /// parameter count, unique config keys and metric names, strings short
    /// enough for their u32 length prefix.
    pub fn validate(&self) -> Result<()> {
        if let Some(buf) = &self.optimizer.momentum_buffer {
            if buf.len() != self.params.len() {
                return Err(Error::invalid(format!(
                    "checkpoint momentum buffer has {} values but the model has {} parameters",
                    buf.len(),
                    self.params.len()
                )));
            }
        }
        check_unique("config", self.config.iter().map(|(k, _)| k.as_str()))?;
        check_unique("metric", self.metrics.iter().map(|(k, _)| k.as_str()))?;
        let strings = std::iter::once(self.model_spec.as_str())
            .chain(self.data.iter().map(|d| d.kind.as_str()))
            .chain(
                self.config
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.as_str()]),
            )
            .chain(self.metrics.iter().map(|(k, _)| k.as_str()));
        for s in strings {
            if s.len() > u32::MAX as usize {
                return Err(Error::invalid("checkpoint string longer than 4 GiB"));
            }
        }
        Ok(())
    }

    /// The value of config key `key`, if present.
    pub fn config_value(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses to resume a run on other data than it was trained on: an
    /// error naming every field of [`DataIdentity`] that differs (sizes,
    /// kind, pixels or labels of either set). A checkpoint that records no
    /// data (written by an older build) passes with a warning; `path`
    /// names the file in messages.
    pub fn check_data(&self, here: &DataIdentity, path: &Path) -> Result<()> {
        let Some(saved) = &self.data else {
            log::warn!(
                "checkpoint {} does not record what it was trained on (written by an older \
                 build): the data cannot be checked against it",
                path.display()
            );
            return Ok(());
        };
        let diff = saved.differences(here);
        if diff.is_empty() {
            return Ok(());
        }
        Err(ckpt_err(
            path,
            format!(
                "cannot resume: it was trained on other data ({}); resume with the data it was \
                 trained on, or start afresh (--overwrite)",
                diff.join("; ")
            ),
        ))
    }

    /// The value of metric `name`, if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// The checkpoint encoded in the documented format (after
    /// [`validate`](Self::validate)).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut sections: Vec<([u8; 4], Vec<u8>)> = Vec::with_capacity(7);

        let mut meta = Vec::new();
        put_str(&mut meta, &self.model_spec);
        for d in self.input_chw {
            meta.write_u32::<LittleEndian>(d).expect("write to Vec");
        }
        for v in [self.epoch, self.step, self.step_in_epoch, self.seed] {
            meta.write_u64::<LittleEndian>(v).expect("write to Vec");
        }
        meta.write_u32::<LittleEndian>(self.world_size_at_save)
            .expect("write to Vec");
        sections.push((TAG_META, meta));

        let mut params = Vec::with_capacity(8 + 4 * self.params.len());
        put_f32s(&mut params, &self.params);
        sections.push((TAG_PARAMS, params));

        let o = &self.optimizer;
        let mut optim = Vec::new();
        for v in [o.lr, o.momentum, o.dampening, o.weight_decay] {
            optim.write_f32::<LittleEndian>(v).expect("write to Vec");
        }
        optim.push(u8::from(o.nesterov));
        optim
            .write_u64::<LittleEndian>(o.steps)
            .expect("write to Vec");
        match &o.momentum_buffer {
            Some(buf) => {
                optim.push(1);
                put_f32s(&mut optim, buf);
            }
            None => optim.push(0),
        }
        sections.push((TAG_OPTIM, optim));

        let mut rng = Vec::with_capacity(8 + self.rng_state.len());
        rng.write_u64::<LittleEndian>(self.rng_state.len() as u64)
            .expect("write to Vec");
        rng.extend_from_slice(&self.rng_state);
        sections.push((TAG_RNG, rng));

        let mut config = Vec::new();
        config
            .write_u32::<LittleEndian>(self.config.len() as u32)
            .expect("write to Vec");
        for (k, v) in &self.config {
            put_str(&mut config, k);
            put_str(&mut config, v);
        }
        sections.push((TAG_CONFIG, config));

        let mut metrics = Vec::new();
        metrics
            .write_u32::<LittleEndian>(self.metrics.len() as u32)
            .expect("write to Vec");
        for (k, v) in &self.metrics {
            put_str(&mut metrics, k);
            metrics.write_f64::<LittleEndian>(*v).expect("write to Vec");
        }
        sections.push((TAG_METRICS, metrics));

        if let Some(d) = &self.data {
            let mut data = Vec::new();
            put_str(&mut data, &d.kind);
            for v in [d.train_images, d.test_images] {
                data.write_u64::<LittleEndian>(v).expect("write to Vec");
            }
            for v in [
                d.train_pixels_crc,
                d.train_labels_crc,
                d.test_pixels_crc,
                d.test_labels_crc,
            ] {
                data.write_u32::<LittleEndian>(v).expect("write to Vec");
            }
            sections.push((TAG_DATA, data));
        }

        let body: usize = sections.iter().map(|(_, b)| 4 + 8 + b.len()).sum();
        let total = HEADER_BYTES + body + TRAILER_BYTES;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        out.write_u32::<LittleEndian>(FORMAT_VERSION)
            .expect("write to Vec");
        out.write_u32::<LittleEndian>(sections.len() as u32)
            .expect("write to Vec");
        out.write_u64::<LittleEndian>(total as u64)
            .expect("write to Vec");
        for (tag, b) in &sections {
            section(&mut out, *tag, b);
        }
        let crc = crc32fast::hash(&out);
        out.write_u32::<LittleEndian>(crc).expect("write to Vec");
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }

    /// Decodes a checkpoint; `path` only names the source in errors.
    ///
    /// Checks, in order: magic ("not a ringsgd checkpoint"), version
    /// ("unsupported checkpoint format version N"), length ("truncated" or
    /// "trailing bytes"), CRC-32 ("checksum mismatch: file corrupted"), then
    /// the sections' structure.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
                return Err(ckpt_err(
                    path,
                    format!("truncated: only {} bytes", bytes.len()),
                ));
            }
            return Err(ckpt_err(
                path,
                "not a ringsgd checkpoint (the file does not start with the magic bytes \"RINGSGD\\0\")",
            ));
        }
        if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
            return Err(ckpt_err(
                path,
                format!(
                    "truncated: {} bytes, shorter than the {}-byte header and trailer",
                    bytes.len(),
                    HEADER_BYTES + TRAILER_BYTES
                ),
            ));
        }
        let version = LittleEndian::read_u32(&bytes[8..12]);
        if version != FORMAT_VERSION {
            return Err(ckpt_err(
                path,
                format!(
                    "unsupported checkpoint format version {version} (this build reads version {FORMAT_VERSION})"
                ),
            ));
        }
        let n_sections = LittleEndian::read_u32(&bytes[12..16]);
        let total = LittleEndian::read_u64(&bytes[16..24]);
        if (bytes.len() as u64) < total {
            return Err(ckpt_err(
                path,
                format!(
                    "truncated: the file has {} bytes but its header says {total}",
                    bytes.len()
                ),
            ));
        }
        if (bytes.len() as u64) > total {
            return Err(ckpt_err(
                path,
                format!(
                    "{} trailing bytes after the {total} bytes the header announces",
                    bytes.len() as u64 - total
                ),
            ));
        }
        let (content, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
        let stored = LittleEndian::read_u32(trailer);
        let actual = crc32fast::hash(content);
        if stored != actual {
            return Err(ckpt_err(
                path,
                format!(
                    "checksum mismatch: file corrupted (stored CRC-32 {stored:08x}, computed {actual:08x})"
                ),
            ));
        }
        parse_sections(&content[HEADER_BYTES..], n_sections, path)
    }

    /// Where the run stands, with epochs numbered from 1 as on screen:
    /// `end of epoch 2, step 780` or `step 3 of epoch 1, step 3 overall`.
    pub fn position(&self) -> String {
        if self.step_in_epoch == 0 {
            if self.epoch == 0 {
                "before epoch 1, step 0".to_string()
            } else {
                format!("end of epoch {}, step {}", self.epoch, self.step)
            }
        } else {
            format!(
                "step {} of epoch {}, step {} overall",
                self.step_in_epoch,
                self.epoch + 1,
                self.step
            )
        }
    }

    /// Writes the checkpoint to `path` atomically: to `<path>.tmp` in the
    /// same folder, flushed to disk, then renamed over `path` (and the
    /// folder synced), so a crash or a full disk leaves either the old or
    /// the new file. Refuses to replace anything but a regular file (a
    /// device node, FIFO or directory at `path` is an error and stays as it
    /// is); see [`crate::output::write_atomic`]. Meant to be called by one
    /// process (rank 0).
    pub fn save_atomic(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        crate::output::write_atomic(path, &bytes)?;
        log::info!(
            "saved checkpoint {} ({}, {} bytes)",
            path.display(),
            self.position(),
            bytes.len()
        );
        Ok(())
    }

    /// Reads and validates a checkpoint file (see
    /// [`from_bytes`](Self::from_bytes)).
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let ckpt = Checkpoint::from_bytes(&bytes, path)?;
        log::info!(
            "loaded checkpoint {} ({}, {} parameters)",
            path.display(),
            ckpt.position(),
            ckpt.params.len()
        );
        Ok(ckpt)
    }
}

/// A bounds-checked little-endian reader over one section body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    section: &'a str,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        ckpt_err(
            self.path,
            format!(
                "malformed section {} at byte {}: {msg}",
                self.section, self.pos
            ),
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(format!(
                "needs {n} more bytes, {} left",
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(format!("flag byte {v} is neither 0 nor 1"))),
        }
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(LittleEndian::read_u32(self.take(4)?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(LittleEndian::read_u64(self.take(8)?))
    }

    fn f32(&mut self) -> Result<f32> {
        Ok(LittleEndian::read_f32(self.take(4)?))
    }

    fn f64(&mut self) -> Result<f64> {
        Ok(LittleEndian::read_f64(self.take(8)?))
    }

    fn len(&mut self, elem_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.checked_mul(elem_bytes as u64).is_none_or(|b| b > left) {
            return Err(self.err(format!("length {n} does not fit in the {left} bytes left")));
        }
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|e| self.err(format!("string is not UTF-8: {e}")))
    }

    fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.len(4)?;
        let raw = self.take(4 * n)?;
        let mut v = vec![0f32; n];
        LittleEndian::read_f32_into(raw, &mut v);
        Ok(v)
    }

    fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(self.err(format!(
                "{} unexpected bytes at the end",
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }
}

fn parse_sections(mut rest: &[u8], n_sections: u32, path: &Path) -> Result<Checkpoint> {
    let mut ckpt = Checkpoint::default();
    let mut seen: Vec<[u8; 4]> = Vec::new();
    for i in 0..n_sections {
        if rest.len() < 12 {
            return Err(ckpt_err(
                path,
                format!(
                    "section {i} of {n_sections}: header needs 12 bytes, {} left",
                    rest.len()
                ),
            ));
        }
        let tag: [u8; 4] = rest[..4].try_into().expect("4 bytes");
        let len = LittleEndian::read_u64(&rest[4..12]);
        let tag_name = String::from_utf8_lossy(&tag).into_owned();
        if len > (rest.len() - 12) as u64 {
            return Err(ckpt_err(
                path,
                format!(
                    "section {tag_name} claims {len} bytes but only {} remain",
                    rest.len() - 12
                ),
            ));
        }
        let (body, tail) = rest[12..].split_at(len as usize);
        rest = tail;
        if seen.contains(&tag) {
            return Err(ckpt_err(path, format!("section {tag_name} appears twice")));
        }
        seen.push(tag);
        let mut r = Reader {
            buf: body,
            pos: 0,
            section: &tag_name,
            path,
        };
        match tag {
            TAG_META => {
                ckpt.model_spec = r.str()?;
                for d in ckpt.input_chw.iter_mut() {
                    *d = r.u32()?;
                }
                ckpt.epoch = r.u64()?;
                ckpt.step = r.u64()?;
                ckpt.step_in_epoch = r.u64()?;
                ckpt.seed = r.u64()?;
                ckpt.world_size_at_save = r.u32()?;
            }
            TAG_PARAMS => ckpt.params = r.f32s()?,
            TAG_OPTIM => {
                let o = &mut ckpt.optimizer;
                o.lr = r.f32()?;
                o.momentum = r.f32()?;
                o.dampening = r.f32()?;
                o.weight_decay = r.f32()?;
                o.nesterov = r.bool()?;
                o.steps = r.u64()?;
                o.momentum_buffer = if r.bool()? { Some(r.f32s()?) } else { None };
            }
            TAG_RNG => {
                let n = r.len(1)?;
                ckpt.rng_state = r.take(n)?.to_vec();
            }
            TAG_CONFIG => {
                let n = r.u32()?;
                for _ in 0..n {
                    let k = r.str()?;
                    let v = r.str()?;
                    ckpt.config.push((k, v));
                }
            }
            TAG_METRICS => {
                let n = r.u32()?;
                for _ in 0..n {
                    let k = r.str()?;
                    let v = r.f64()?;
                    ckpt.metrics.push((k, v));
                }
            }
            TAG_DATA => {
                let kind = r.str()?;
                let (train_images, test_images) = (r.u64()?, r.u64()?);
                ckpt.data = Some(DataIdentity {
                    kind,
                    train_images,
                    test_images,
                    train_pixels_crc: r.u32()?,
                    train_labels_crc: r.u32()?,
                    test_pixels_crc: r.u32()?,
                    test_labels_crc: r.u32()?,
                });
            }
            _ => {
                log::debug!(
                    "checkpoint {}: skipping unknown section {tag_name} ({len} bytes)",
                    path.display()
                );
                continue;
            }
        }
        r.finish()?;
    }
    if !rest.is_empty() {
        return Err(ckpt_err(
            path,
            format!(
                "{} bytes after the last of {n_sections} sections",
                rest.len()
            ),
        ));
    }
    for (tag, name) in [
        (TAG_META, "META"),
        (TAG_PARAMS, "PARM"),
        (TAG_OPTIM, "OPTM"),
    ] {
        if !seen.contains(&tag) {
            return Err(ckpt_err(
                path,
                format!("required section {name} is missing"),
            ));
        }
    }
    ckpt.validate()
        .map_err(|e| ckpt_err(path, format!("inconsistent contents: {e}")))?;
    Ok(ckpt)
}
