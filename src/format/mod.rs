//! The container format (`docs/FORMAT.md`): preamble, JSON header, data section.
//!
//! [`prepare`] validates tensors, runs their codecs and lays a payload out; the
//! [`Prepared`] payload is then written into memory or streamed to a file
//! ([`save_atomic`]). [`parse`] validates a payload's preamble and header without
//! touching tensor bytes; the [`Layout`] it returns verifies and decodes tensors.

pub mod container;
pub mod file;
pub mod header;
pub mod structure;

pub use container::{
    check_bools, default_max_decoded_bytes, parse, prepare, tensors_id, DecodeJob, EncodeOptions,
    Layout, Prepared, TensorInput, TensorView, DEFAULT_DECODED_SLACK, DEFAULT_EXPANSION,
};
pub use file::save_atomic;
pub use header::{
    align_up, hex32, json_depth, nbytes, numel, parse_hex32, validate_entry, validate_metadata,
    Entry, Header, Preamble, TensorEntry, ALIGN, MAGIC, MAX_HEADER_LEN, MAX_JSON_DEPTH,
    MAX_METADATA_DEPTH, MAX_NAME_LEN, MAX_RANK, MAX_TENSORS, PREAMBLE_LEN, VERSION_MAJOR,
    VERSION_MINOR,
};
