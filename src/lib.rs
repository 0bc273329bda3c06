//! tensorwire: a fast, safe, self-describing wire format for model weights.
//!
//! The core (everything but `bindings`) is plain Rust with no Python dependency:
//! `cargo test` exercises it directly. `docs/FORMAT.md` specifies the format.
#![deny(missing_docs)]

pub mod chunk;
pub mod codec;
pub mod dtype;
pub mod error;
pub mod fedavg;
pub mod format;
pub mod memory;
pub mod trust;

#[cfg(feature = "python")]
mod bindings;

pub use dtype::DType;
pub use error::{Error, Result};
pub use format::{
    parse, prepare, tensors_id, EncodeOptions, Layout, Prepared, TensorInput, TensorView,
};
