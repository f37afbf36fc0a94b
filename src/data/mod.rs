//! CIFAR-10 data: loading and synthetic stand-in data.
//!
//! [`cifar::load`] reads the CIFAR-10 binary version (folder or `.tar.gz`)
//! into a [`CifarData`] of u8 [`Dataset`]s, validating every file.
//! [`synthetic`] makes learnable stand-in data of the same shape and writes
//! it in the official layout.

pub mod cifar;
mod dataset;
mod rng;
pub mod synthetic;

pub use dataset::{
    CifarData, Dataset, CHANNELS, CLASS_NAMES, HEIGHT, IMAGE_BYTES, NUM_CLASSES, WIDTH,
};
