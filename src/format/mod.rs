//! The container format (`docs/FORMAT.md`): a fixed preamble, a JSON header, the data
//! section.
//!
//! - [`preamble`]: the 64 fixed bytes (magic, version, auth byte and flags, section
//!   lengths, header hash).
//! - [`header`]: the JSON header's limits, entries and their validation.
//! - [`structure`]: the header's `structure` tree, walked without building a document.
//! - [`ids`]: hex digests and the id of a set of tensors (a delta's base id).
//! - [`write`]: [`prepare`] a payload, then write it into memory or stream it out.
//! - [`read`]: [`parse`] a payload into a [`Layout`] that verifies and decodes tensors
//!   ([`parse_with`]: with the keys and trusted signers of a [`crate::trust::Verifier`]).
//! - [`auth`]: the header's `auth` object (key id, creation time, nonce, signer).
//! - [`sealed`]: the sealed header of a payload encrypted whole.
//! - [`into_buffer`]: [`encoded_size`] and [`encode_into`], a payload in the caller's memory.
//! - [`file`]: atomic file writes ([`save_atomic`], [`write_atomic`]).

use crate::dtype::DType;

pub mod auth;
pub mod decode;
pub mod file;
pub mod header;
pub mod ids;
pub mod into_buffer;
pub mod preamble;
pub mod read;
pub mod sealed;
pub mod structure;
pub mod write;

#[cfg(test)]
mod encrypt_tests;

pub use auth::Auth;
pub use decode::DecodeJob;
pub use file::{save_atomic, write_atomic};
pub use header::{
    json_depth, validate_entry, validate_metadata, Entry, Header, SealedHeader, TensorEntry,
    MAX_JSON_DEPTH, MAX_METADATA_DEPTH, MAX_NAME_LEN, MAX_RANK, MAX_TENSORS,
};
pub use ids::{hex32, parse_hex32, tensors_id};
pub use into_buffer::{encode_into, encoded_size, EncodedSize};
pub use preamble::{
    align_up, Preamble, ALIGN, MAGIC, MAX_HEADER_LEN, PREAMBLE_LEN, VERSION_MAJOR, VERSION_MINOR,
    VERSION_MINOR_TRUST,
};
pub use read::{
    check_bools, default_max_decoded_bytes, parse, parse_with, Layout, DEFAULT_DECODED_SLACK,
    DEFAULT_EXPANSION,
};
pub use write::{prepare, EncodeOptions, Encrypt, Prepared, TensorInput, SEALED_HEADER_INDEX};

/// A tensor in memory: little-endian, C-contiguous bytes with their name, dtype and
/// shape (an update's tensor given as arrays, or the base of a delta).
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Shape, C order.
    pub shape: &'a [u64],
    /// The bytes (`numel * itemsize` of them).
    pub data: &'a [u8],
}
