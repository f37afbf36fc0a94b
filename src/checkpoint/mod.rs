//! Checkpoints (resume training exactly) and safetensors export (load the
//! trained model elsewhere).
//!
//! # Checkpoint file format, version 1
//!
//! All integers and floats little-endian; `str` is a `u32` byte length then
//! UTF-8 bytes; `f32s` is a `u64` count then that many `f32`.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0      | 8    | magic `b"RINGSGD\0"` |
//! | 8      | 4    | format version, `u32` = 1 |
//! | 12     | 4    | number of sections `S`, `u32` |
//! | 16     | 8    | total file length in bytes, `u64` (detects truncation) |
//! | 24     | ...  | `S` sections: 4-byte ASCII tag, `u64` body length `L`, `L` body bytes |
//! | end-4  | 4    | CRC-32 (IEEE 802.3, as `crc32fast`) of every byte before it, `u32` |
//!
//! Sections written by version 1, in this order:
//!
//! | tag    | body |
//! |--------|------|
//! | `META` | `str` model_spec; `u32` x3 input C, H, W; `u64` epoch (completed); `u64` step (global optimiser steps); `u64` step_in_epoch; `u64` seed; `u32` world size at save |
//! | `PARM` | `f32s` parameters (the model's flat order) |
//! | `OPTM` | `f32` lr; `f32` momentum; `f32` dampening; `f32` weight_decay; `u8` nesterov (0/1); `u64` optimiser steps; `u8` has momentum buffer (0/1); if 1: `f32s` momentum buffer |
//! | `RNGS` | `u64` length, then opaque generator state bytes |
//! | `CONF` | `u32` count, then count x (`str` key, `str` value) |
//! | `METR` | `u32` count, then count x (`str` name, `f64` value) |
//! | `DATA` | what the run was trained on ([`DataIdentity`](crate::data::DataIdentity)): `str` kind; `u64` training images; `u64` test images; `u32` x4 CRC-32 of the training pixels, training labels, test pixels, test labels |
//!
//! `META`, `PARM` and `OPTM` are required; a reader skips sections with tags
//! it does not know (room for additions that old readers may ignore) and
//! rejects duplicates. `DATA` is such an addition: builds before it skip
//! it, and a checkpoint without it (from those builds) is read with
//! `data: None`, which [`Checkpoint::check_data`] lets through with a
//! warning, so older checkpoints still resume. Incompatible changes bump the version, and a reader
//! rejects versions it does not know.
//!
//! [`Checkpoint::load`] checks, in order: magic ("not a ringsgd
//! checkpoint"), version ("unsupported checkpoint format version N"),
//! length ("truncated"), CRC ("checksum mismatch: file corrupted"), then
//! every section's structure and the contents' consistency, each failure an
//! [`Error::Checkpoint`](crate::Error::Checkpoint) naming the file.
//! [`Checkpoint::save_atomic`] writes `<path>.tmp`, syncs it, and renames
//! it over `path`, refusing a `path` that is not a regular file (see
//! [`crate::output`]); in a multi-rank run only rank 0 saves.
//!
//! ```
//! # fn main() -> ringsgd::Result<()> {
//! use ringsgd::checkpoint::{Checkpoint, OptimizerState};
//! let path = std::env::temp_dir().join(format!("ringsgd-doc-{}.ckpt", std::process::id()));
//! let ckpt = Checkpoint {
//!     model_spec: "conv8-pool-fc10".into(),
//!     input_chw: [3, 32, 32],
//!     params: vec![0.5, -1.25, 3.0],
//!     optimizer: OptimizerState { lr: 0.1, momentum: 0.9, ..Default::default() },
//!     epoch: 2,
//!     step: 780,
//!     seed: 42,
//!     world_size_at_save: 4,
//!     config: vec![("global_batch".into(), "128".into())],
//!     ..Default::default()
//! };
//! ckpt.save_atomic(&path)?;
//! assert_eq!(Checkpoint::load(&path)?, ckpt);
//! # std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```

mod format;
pub mod safetensors;

pub use format::{Checkpoint, OptimizerState, FORMAT_VERSION, MAGIC};
