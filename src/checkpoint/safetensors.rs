//! Export of `f32` tensors in the [safetensors] format, and a reader for it.
//!
//! # Format (as written here)
//!
//! ```text
//! offset      size  field
//! 0           8     N: length of the JSON header, u64 little-endian
//! 8           N     JSON header, UTF-8, padded with spaces so 8 + N is a multiple of 8
//! 8 + N       ...   tensor data: f32 little-endian, row-major (C order),
//!                   tensors back to back in the order of their names
//! ```
//!
//! The header maps each tensor name to `{"dtype":"F32","shape":[...],
//! "data_offsets":[begin,end]}` (byte offsets into the data section), plus
//! an optional `"__metadata__"` object of string values. Keys are written
//! in sorted order (`__metadata__` first) and tensors are laid out in name
//! order, so the same tensors always give the same bytes.
//!
//! Python loads the file with `safetensors.torch.load_file(path)` (or
//! `safetensors.numpy.load_file`), giving a dict of tensors with the names
//! and shapes given to [`write()`]; with PyTorch-style names (`conv1.weight`
//! with shape `[out, in, kh, kw]`, `fc.weight` with shape `[out, in]`) the
//! dict is a `state_dict` for `model.load_state_dict`.
//!
//! # Why not the `safetensors` crate
//!
//! The reference implementation (`safetensors` 0.8) serialises the
//! `__metadata__` object in `HashMap` order, which is random per map: two
//! exports of the same weights (with this crate's two metadata keys) differ
//! in bytes, so an export could not be compared by its hash. It would also
//! add 12 crates to the library (serde, serde_derive, serde_json,
//! hashbrown, ...). It is a dev-dependency instead:
//! `tests/safetensors_reference.rs` checks that it parses what we write to
//! the same tensors and metadata, and that without metadata our bytes are
//! exactly its serializer's.
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use std::collections::BTreeMap;
use std::path::Path;

use byteorder::{ByteOrder, LittleEndian};

use crate::{Error, Result};

/// Largest header the reader accepts (as the reference implementation).
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Key of the metadata object in the header.
const METADATA_KEY: &str = "__metadata__";

/// A tensor read back: name, shape, values (row-major).
pub type Tensor = (String, Vec<usize>, Vec<f32>);
/// Metadata read back: `(key, value)` pairs.
pub type Metadata = Vec<(String, String)>;

fn st_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes `tensors` (`(name, shape, row-major values)`) and string
/// `metadata` to `path` as an F32 safetensors file (layout in the
/// [module docs](self)).
///
/// Errors ([`Error::InvalidArgument`]) on an empty or duplicate tensor
/// name, the reserved name `__metadata__`, a duplicate metadata key, or a
/// shape whose element count differs from the number of values; I/O errors
/// name the path. The file is written atomically and only over a regular
/// file or nothing (see [`crate::output::write_atomic`]).
///
/// ```
/// # fn main() -> ringsgd::Result<()> {
/// use ringsgd::checkpoint::safetensors;
/// let path = std::env::temp_dir().join(format!("ringsgd-doc-{}.safetensors", std::process::id()));
/// let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// safetensors::write(&path, &[("fc.weight".into(), vec![2, 3], &w[..])], &[("format".into(), "pt".into())])?;
/// let back = safetensors::read(&path)?;
/// assert_eq!(back, vec![("fc.weight".to_string(), vec![2, 3], w.to_vec())]);
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
pub fn write(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: &[(String, String)],
) -> Result<()> {
    let mut by_name: BTreeMap<&str, (&[usize], &[f32])> = BTreeMap::new();
    for (name, shape, data) in tensors {
        if name.is_empty() {
            return Err(Error::invalid("safetensors tensor name is empty"));
        }
        if name == METADATA_KEY {
            return Err(Error::invalid(format!(
                "safetensors tensor name {METADATA_KEY:?} is reserved"
            )));
        }
        let elems = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::invalid(format!("tensor {name:?}: shape {shape:?} overflows")))?;
        if elems != data.len() {
            return Err(Error::invalid(format!(
                "tensor {name:?}: shape {shape:?} has {elems} elements but {} values were given",
                data.len()
            )));
        }
        if by_name.insert(name, (shape, data)).is_some() {
            return Err(Error::invalid(format!(
                "safetensors tensor name {name:?} appears twice"
            )));
        }
    }
    let mut meta: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in metadata {
        if meta.insert(k, v).is_some() {
            return Err(Error::invalid(format!(
                "safetensors metadata key {k:?} appears twice"
            )));
        }
    }

    let mut header = String::from("{");
    let mut first = true;
    if !meta.is_empty() {
        json_string(&mut header, METADATA_KEY);
        header.push_str(":{");
        for (i, (k, v)) in meta.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            json_string(&mut header, k);
            header.push(':');
            json_string(&mut header, v);
        }
        header.push('}');
        first = false;
    }
    let mut offset = 0usize;
    for (name, (shape, data)) in &by_name {
        if !first {
            header.push(',');
        }
        first = false;
        json_string(&mut header, name);
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let end = offset + 4 * data.len();
        header.push_str(&format!(
            ":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            dims.join(",")
        ));
        offset = end;
    }
    header.push('}');
    while (8 + header.len()) % 8 != 0 {
        header.push(' ');
    }

    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, values) in by_name.values() {
        let start = out.len();
        out.resize(start + 4 * values.len(), 0);
        LittleEndian::write_f32_into(values, &mut out[start..]);
    }
    crate::output::write_atomic(path, &out)?;
    log::info!(
        "exported {} tensors ({} values) to {}",
        by_name.len(),
        offset / 4,
        path.display()
    );
    Ok(())
}

/// Reads an F32 safetensors file: tensors sorted by name.
pub fn read(path: &Path) -> Result<Vec<Tensor>> {
    read_with_metadata(path).map(|(t, _)| t)
}

/// Reads an F32 safetensors file: tensors sorted by name and the
/// `__metadata__` key/values sorted by key.
///
/// Validates the header length, the JSON, that every tensor is `F32`, that
/// each `data_offsets` range matches its shape, and that the ranges tile the
/// data section without gaps or overlap. Errors are [`Error::Checkpoint`]
/// naming the file and the tensor.
pub fn read_with_metadata(path: &Path) -> Result<(Vec<Tensor>, Metadata)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 8 {
        return Err(st_err(
            path,
            format!(
                "not a safetensors file: {} bytes, no header length",
                bytes.len()
            ),
        ));
    }
    let n = LittleEndian::read_u64(&bytes[..8]);
    if n > MAX_HEADER_BYTES || n > (bytes.len() - 8) as u64 {
        return Err(st_err(
            path,
            format!(
                "not a safetensors file: header length {n} does not fit in the {} bytes of the file",
                bytes.len()
            ),
        ));
    }
    let header = std::str::from_utf8(&bytes[8..8 + n as usize])
        .map_err(|e| st_err(path, format!("safetensors header is not UTF-8: {e}")))?;
    let data = &bytes[8 + n as usize..];
    let json =
        json::parse(header).map_err(|e| st_err(path, format!("bad safetensors header: {e}")))?;
    let json::Value::Object(entries) = json else {
        return Err(st_err(path, "safetensors header is not a JSON object"));
    };

    let mut metadata = Vec::new();
    let mut tensors: Vec<(String, Vec<usize>, usize, usize)> = Vec::new();
    for (name, value) in entries {
        if name == METADATA_KEY {
            let json::Value::Object(kv) = value else {
                return Err(st_err(path, "__metadata__ is not an object"));
            };
            for (k, v) in kv {
                match v {
                    json::Value::String(s) => metadata.push((k, s)),
                    _ => {
                        return Err(st_err(
                            path,
                            format!("metadata value of {k:?} is not a string"),
                        ))
                    }
                }
            }
            continue;
        }
        let bad = |msg: String| st_err(path, format!("tensor {name:?}: {msg}"));
        let json::Value::Object(fields) = value else {
            return Err(bad("entry is not an object".into()));
        };
        let mut dtype = None;
        let mut shape = None;
        let mut offsets = None;
        for (k, v) in fields {
            match (k.as_str(), v) {
                ("dtype", json::Value::String(s)) => dtype = Some(s),
                ("shape", json::Value::Array(a)) => shape = Some(ints(&a).map_err(&bad)?),
                ("data_offsets", json::Value::Array(a)) => offsets = Some(ints(&a).map_err(&bad)?),
                (k, _) => return Err(bad(format!("unexpected or mistyped field {k:?}"))),
            }
        }
        let dtype = dtype.ok_or_else(|| bad("no dtype".into()))?;
        if dtype != "F32" {
            return Err(bad(format!("dtype {dtype} is not supported (only F32)")));
        }
        let shape = shape.ok_or_else(|| bad("no shape".into()))?;
        let offsets = offsets.ok_or_else(|| bad("no data_offsets".into()))?;
        let [begin, end] = offsets[..] else {
            return Err(bad(format!("data_offsets {offsets:?} is not [begin, end]")));
        };
        let elems = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        if end < begin || end - begin != elems.saturating_mul(4) {
            return Err(bad(format!(
                "data_offsets [{begin}, {end}] do not hold the {elems} F32 values of shape {shape:?}"
            )));
        }
        tensors.push((name, shape, begin, end));
    }
    // The ranges must tile the data section exactly.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].2, tensors[i].3));
    let mut pos = 0usize;
    for &i in &order {
        let (name, _, begin, end) = &tensors[i];
        if *begin != pos {
            return Err(st_err(
                path,
                format!("tensor {name:?}: data starts at {begin}, expected {pos} (gap or overlap)"),
            ));
        }
        pos = *end;
    }
    if pos != data.len() {
        return Err(st_err(
            path,
            format!(
                "tensor data covers {pos} bytes but the data section has {} (truncated or trailing bytes)",
                data.len()
            ),
        ));
    }
    let mut out: Vec<Tensor> = tensors
        .into_iter()
        .map(|(name, shape, begin, end)| {
            let mut v = vec![0f32; (end - begin) / 4];
            LittleEndian::read_f32_into(&data[begin..end], &mut v);
            (name, shape, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    metadata.sort();
    Ok((out, metadata))
}

fn ints(a: &[json::Value]) -> std::result::Result<Vec<usize>, String> {
    a.iter()
        .map(|v| match v {
            json::Value::Int(i) => {
                usize::try_from(*i).map_err(|_| format!("integer {i} too large"))
            }
            _ => Err("expected an array of non-negative integers".to_string()),
        })
        .collect()
}

/// The subset of JSON a safetensors header uses: objects, arrays, strings
/// and non-negative integers.
mod json {
    #[derive(Debug, PartialEq)]
    pub(super) enum Value {
        Object(Vec<(String, Value)>),
        Array(Vec<Value>),
        String(String),
        Int(u64),
    }

    const MAX_DEPTH: usize = 8;

    pub(super) fn parse(s: &str) -> Result<Value, String> {
        let mut p = Parser {
            s: s.as_bytes(),
            pos: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.pos != p.s.len() {
            return Err(format!("unexpected text at byte {}", p.pos));
        }
        Ok(v)
    }

    struct Parser<'a> {
        s: &'a [u8],
        pos: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.pos < self.s.len()
                && matches!(self.s[self.pos], b' ' | b'\t' | b'\n' | b'\r')
            {
                self.pos += 1;
            }
        }

        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.s.get(self.pos).copied()
        }

        fn expect(&mut self, b: u8) -> Result<(), String> {
            if self.peek() == Some(b) {
                self.pos += 1;
                Ok(())
            } else {
                Err(format!("expected '{}' at byte {}", b as char, self.pos))
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value, String> {
            if depth > MAX_DEPTH {
                return Err("nesting too deep".into());
            }
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let mut items = Vec::new();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(Value::Object(items));
                    }
                    loop {
                        let k = self.string()?;
                        if items.iter().any(|(x, _): &(String, Value)| *x == k) {
                            return Err(format!("duplicate key {k:?}"));
                        }
                        self.expect(b':')?;
                        let v = self.value(depth + 1)?;
                        items.push((k, v));
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                return Ok(Value::Object(items));
                            }
                            _ => return Err(format!("expected ',' or '}}' at byte {}", self.pos)),
                        }
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    let mut items = Vec::new();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    loop {
                        items.push(self.value(depth + 1)?);
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                return Ok(Value::Array(items));
                            }
                            _ => return Err(format!("expected ',' or ']' at byte {}", self.pos)),
                        }
                    }
                }
                Some(b'"') => Ok(Value::String(self.string()?)),
                Some(b'0'..=b'9') => {
                    let start = self.pos;
                    while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                        self.pos += 1;
                    }
                    if matches!(self.s.get(self.pos), Some(b'.' | b'e' | b'E')) {
                        return Err(format!("non-integer number at byte {start}"));
                    }
                    let text = std::str::from_utf8(&self.s[start..self.pos]).expect("digits");
                    text.parse::<u64>()
                        .map(Value::Int)
                        .map_err(|_| format!("integer {text} out of range"))
                }
                Some(c) => Err(format!(
                    "unsupported JSON value starting with '{}' at byte {}",
                    c as char, self.pos
                )),
                None => Err("unexpected end of header".into()),
            }
        }

        fn hex4(&mut self) -> Result<u32, String> {
            let h = self
                .s
                .get(self.pos..self.pos + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad \\u escape at byte {}", self.pos))?;
            self.pos += 4;
            Ok(h)
        }

        fn string(&mut self) -> Result<String, String> {
            self.expect(b'"')?;
            let mut out = String::new();
            loop {
                let start = self.pos;
                while self.pos < self.s.len() && !matches!(self.s[self.pos], b'"' | b'\\') {
                    if self.s[self.pos] < 0x20 {
                        return Err(format!("control character in string at byte {}", self.pos));
                    }
                    self.pos += 1;
                }
                out.push_str(
                    std::str::from_utf8(&self.s[start..self.pos]).map_err(|e| e.to_string())?,
                );
                match self.s.get(self.pos) {
                    None => return Err("unterminated string".into()),
                    Some(b'"') => {
                        self.pos += 1;
                        return Ok(out);
                    }
                    Some(_) => {
                        self.pos += 1;
                        let e = *self.s.get(self.pos).ok_or("unterminated escape")?;
                        self.pos += 1;
                        match e {
                            b'"' => out.push('"'),
                            b'\\' => out.push('\\'),
                            b'/' => out.push('/'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            b'n' => out.push('\n'),
                            b'r' => out.push('\r'),
                            b't' => out.push('\t'),
                            b'u' => {
                                let hi = self.hex4()?;
                                let c = if (0xD800..0xDC00).contains(&hi) {
                                    if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                        return Err("lone surrogate in \\u escape".into());
                                    }
                                    self.pos += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return Err("bad surrogate pair in \\u escape".into());
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    hi
                                };
                                out.push(char::from_u32(c).ok_or("invalid \\u escape")?);
                            }
                            other => return Err(format!("bad escape '\\{}'", other as char)),
                        }
                    }
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_the_header_subset() {
            let v = parse(r#" {"a":{"dtype":"F32","shape":[2, 3],"data_offsets":[0,24]}, "__metadata__":{"k":"v\"\u00e9\ud83d\ude00"}} "#)
                .unwrap();
            let Value::Object(items) = v else { panic!() };
            assert_eq!(items[0].0, "a");
            assert_eq!(
                items[1].1,
                Value::Object(vec![("k".into(), Value::String("v\"é😀".into()))])
            );
        }

        #[test]
        fn rejects_bad_json() {
            for bad in [
                "",
                "{",
                "{\"a\":1,}",
                "{\"a\":1.5}",
                "{\"a\":-1}",
                "{\"a\":1,\"a\":2}",
                "{\"a\":true}",
                "{\"a\":\"x}",
                "{} x",
                "[[[[[[[[[[1]]]]]]]]]]",
                "\"\\ud800\"",
            ] {
                assert!(parse(bad).is_err(), "{bad:?}");
            }
        }
    }
}
