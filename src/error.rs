//! The one error type of the core: what kind of failure, what went wrong, and where
//! (tensor, update, chunk, codec block) as data. Bindings map each kind to a Python
//! exception and the places to its attributes.

use std::fmt;

/// What kind of failure an error is; it decides the Python exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The payload is malformed, unsupported, or violates a documented limit.
    Format,
    /// The bytes do not match their checksums, the payload is truncated, or a delta's
    /// base is missing or different.
    Integrity,
    /// A payload's origin could not be established: it is not authenticated, was made
    /// with another key or by an untrusted signer, or was altered (a kind of integrity
    /// failure: `AuthenticationError` derives from `IntegrityError`).
    Authentication,
    /// A codec spec is invalid or does not fit a tensor.
    Codec,
    /// The input cannot be encoded (unsupported dtype, inconsistent shape, bad option).
    Input,
    /// An I/O error while writing or reading a file.
    Io,
}

/// A documented limit an input can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Tensors in one payload (`MAX_TENSORS`).
    Tensors,
    /// Bytes of one tensor name (`MAX_NAME_LEN`).
    NameLen,
    /// Dimensions of one tensor (`MAX_RANK`).
    Rank,
    /// Nesting of the header's JSON (`MAX_JSON_DEPTH`).
    HeaderDepth,
    /// Nesting of the user metadata (`MAX_METADATA_DEPTH`).
    MetadataDepth,
    /// Bytes one read may allocate for decoded tensors (`max_decoded_bytes`).
    DecodedBytes,
    /// Bytes of one reassembled payload (`max_payload_bytes`).
    PayloadBytes,
}

impl Limit {
    /// The limit's name as the documentation and the Python API spell it.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Tensors => "MAX_TENSORS",
            Limit::NameLen => "MAX_NAME_LEN",
            Limit::Rank => "MAX_RANK",
            Limit::HeaderDepth => "MAX_JSON_DEPTH",
            Limit::MetadataDepth => "MAX_METADATA_DEPTH",
            Limit::DecodedBytes => "max_decoded_bytes",
            Limit::PayloadBytes => "max_payload_bytes",
        }
    }

    /// The message for `value` above the allowed `max`.
    fn describe(self, f: &mut fmt::Formatter<'_>, value: u64, max: u64) -> fmt::Result {
        match self {
            Limit::Tensors => write!(f, "{value} tensors exceed the limit of {max}"),
            Limit::NameLen => write!(f, "tensor name of {value} bytes exceeds the limit of {max}"),
            Limit::Rank => write!(f, "rank {value} exceeds the limit of {max}"),
            Limit::HeaderDepth => write!(
                f,
                "header is not valid: its JSON nests {value} levels deep, more than {max}"
            ),
            Limit::MetadataDepth => write!(
                f,
                "metadata is not valid: it nests {value} levels deep, more than {max}"
            ),
            Limit::DecodedBytes => write!(
                f,
                "decoding needs {value} bytes, more than max_decoded_bytes={max} allows \
                 (pass a larger max_decoded_bytes= if this payload is trusted)"
            ),
            Limit::PayloadBytes => write!(
                f,
                "a payload of {value} bytes exceeds max_payload_bytes={max}"
            ),
        }
    }
}

/// What a checksum that did not match covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checked {
    /// A tensor's stored bytes (blake3).
    TensorBytes,
    /// The preamble and header (blake3).
    Header,
    /// One chunk, header and body (CRC-32), with the stored and the computed value.
    Chunk {
        /// The CRC the chunk carries.
        stored: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
}

/// One chunk of a chunked payload: its payload id, index and the payload's chunk count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkAt {
    /// The payload id the chunk carries.
    pub payload: [u8; 16],
    /// The chunk's index.
    pub index: u32,
    /// How many chunks the payload has.
    pub count: u32,
}

impl ChunkAt {
    /// The payload id in hex, as messages and the Python API show it.
    pub fn payload_hex(&self) -> String {
        self.payload.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Everything that can go wrong while encoding, parsing or verifying a payload: a
/// failure (`Failed`, `Limit`, `Checksum`, `BufferTooSmall`, `Io`) possibly wrapped in the places it
/// happened (`InTensor`, `InUpdate`, `InChunk`, `InBlock`). `Display` writes the places
/// outermost first, e.g. `update 1: tensor "w": checksum mismatch, its bytes are corrupt`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure of `kind`, described in words.
    #[error("{message}")]
    Failed {
        /// What kind of failure.
        kind: Kind,
        /// What was wrong.
        message: String,
    },
    /// A documented limit was broken: `value` where at most `max` is allowed.
    #[error("{}", LimitText(*limit, *value, *max))]
    Limit {
        /// Format for input read, Input for what a caller asked to write.
        kind: Kind,
        /// Which limit.
        limit: Limit,
        /// What the input has or needs.
        value: u64,
        /// The most the limit allows.
        max: u64,
    },
    /// Bytes do not match their checksum (an integrity failure).
    #[error("{}", CheckedText(*what))]
    Checksum {
        /// What the checksum covered.
        what: Checked,
    },
    /// A payload of `needed` bytes does not fit the caller's buffer of `available`.
    #[error("the payload needs {needed} bytes, the buffer holds {available}")]
    BufferTooSmall {
        /// The payload's length.
        needed: u64,
        /// The buffer's length.
        available: u64,
    },
    /// An I/O error while writing or reading a file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `source` happened in the tensor `name`.
    #[error("tensor {name:?}: {source}")]
    InTensor {
        /// The tensor's name.
        name: String,
        /// What went wrong there.
        source: Box<Error>,
    },
    /// `source` happened in update number `index` of an aggregation.
    #[error("update {index}: {source}")]
    InUpdate {
        /// The update's number, counted from 0 in the order given.
        index: usize,
        /// What went wrong there.
        source: Box<Error>,
    },
    /// `source` happened in one chunk of a chunked payload.
    #[error("chunk {} of {} of payload {}: {source}", at.index, at.count, at.payload_hex())]
    InChunk {
        /// Which chunk.
        at: ChunkAt,
        /// What went wrong there.
        source: Box<Error>,
    },
    /// `source`, and `what` followed from it.
    #[error("{what}: {source}")]
    Explained {
        /// What followed.
        what: &'static str,
        /// What went wrong.
        source: Box<Error>,
    },
    /// `source` happened in codec block number `index` of a tensor.
    #[error("block {index}: {source}")]
    InBlock {
        /// The block's number.
        index: usize,
        /// What went wrong there.
        source: Box<Error>,
    },
}

struct LimitText(Limit, u64, u64);
impl fmt::Display for LimitText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.describe(f, self.1, self.2)
    }
}

struct CheckedText(Checked);
impl fmt::Display for CheckedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Checked::TensorBytes => f.write_str("checksum mismatch, its bytes are corrupt"),
            Checked::Header => {
                f.write_str("header checksum mismatch: the preamble or header is corrupt")
            }
            Checked::Chunk { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:08x}, computed {computed:08x}), the chunk is corrupt"
            ),
        }
    }
}

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Constructors and wrappers, so call sites read as sentences:
/// `Error::integrity("...").in_tensor(name).in_update(3)`.
impl Error {
    /// A format failure: the payload is malformed or unsupported.
    pub fn format(message: impl Into<String>) -> Self {
        Self::failed(Kind::Format, message)
    }
    /// An integrity failure: corrupt or truncated bytes, a missing or other base.
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::failed(Kind::Integrity, message)
    }
    /// An authentication failure: who made the payload cannot be established.
    pub fn authentication(message: impl Into<String>) -> Self {
        Self::failed(Kind::Authentication, message)
    }
    /// A codec failure: an invalid spec, or a stage that does not fit a tensor.
    pub fn codec(message: impl Into<String>) -> Self {
        Self::failed(Kind::Codec, message)
    }
    /// An input failure: what the caller gave cannot be encoded or used.
    pub fn input(message: impl Into<String>) -> Self {
        Self::failed(Kind::Input, message)
    }
    /// A failure of `kind` described by `message`.
    pub fn failed(kind: Kind, message: impl Into<String>) -> Self {
        Error::Failed {
            kind,
            message: message.into(),
        }
    }
    /// `value` breaks `limit`, which allows at most `max`.
    pub fn limit(kind: Kind, limit: Limit, value: u64, max: u64) -> Self {
        Error::Limit {
            kind,
            limit,
            value,
            max,
        }
    }
    /// The checksum over `what` does not match.
    pub fn checksum(what: Checked) -> Self {
        Error::Checksum { what }
    }

    /// This error, as having happened in the tensor `name` (unless it already names one).
    pub fn in_tensor(self, name: impl Into<String>) -> Self {
        if self.tensor().is_some() {
            return self;
        }
        Error::InTensor {
            name: name.into(),
            source: Box::new(self),
        }
    }
    /// This error, as having happened in update `index` (unless it already names one).
    pub fn in_update(self, index: usize) -> Self {
        if self.update().is_some() {
            return self;
        }
        Error::InUpdate {
            index,
            source: Box::new(self),
        }
    }
    /// This error, as having happened in the chunk `at` (unless it already names one).
    pub fn in_chunk(self, at: ChunkAt) -> Self {
        if self.chunk().is_some() {
            return self;
        }
        Error::InChunk {
            at,
            source: Box::new(self),
        }
    }
    /// This error, as having happened in codec block `index`.
    pub fn in_block(self, index: usize) -> Self {
        Error::InBlock {
            index,
            source: Box::new(self),
        }
    }

    /// This error, with `what` followed from it (e.g. what became unusable).
    pub fn explained(self, what: &'static str) -> Self {
        Error::Explained {
            what,
            source: Box::new(self),
        }
    }

    /// The same error, of another kind (I/O errors stay I/O errors): e.g. a codec
    /// failure found in a stored header is a format failure of the payload.
    pub fn with_kind(mut self, kind: Kind) -> Self {
        if let Some(inner) = self.wrapped_mut() {
            let failure = std::mem::replace(inner, Error::failed(kind, String::new()));
            *inner = failure.with_kind(kind);
            return self;
        }
        match self {
            Error::Failed { message, .. } => Error::Failed { kind, message },
            Error::Limit {
                limit, value, max, ..
            } => Error::Limit {
                kind,
                limit,
                value,
                max,
            },
            e => e,
        }
    }

    /// The error this one wraps, when it is a place (or an explanation).
    fn wrapped(&self) -> Option<&Error> {
        match self {
            Error::InTensor { source, .. }
            | Error::InUpdate { source, .. }
            | Error::InChunk { source, .. }
            | Error::InBlock { source, .. }
            | Error::Explained { source, .. } => Some(source),
            _ => None,
        }
    }

    fn wrapped_mut(&mut self) -> Option<&mut Error> {
        match self {
            Error::InTensor { source, .. }
            | Error::InUpdate { source, .. }
            | Error::InChunk { source, .. }
            | Error::InBlock { source, .. }
            | Error::Explained { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The failure itself, under every place it is wrapped in.
    pub fn root(&self) -> &Error {
        let mut e = self;
        while let Some(inner) = e.wrapped() {
            e = inner;
        }
        e
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> Kind {
        match self.root() {
            Error::Failed { kind, .. } | Error::Limit { kind, .. } => *kind,
            Error::Checksum { .. } => Kind::Integrity,
            Error::BufferTooSmall { .. } => Kind::Input,
            _ => Kind::Io,
        }
    }

    /// The places this error is wrapped in, outermost first.
    fn places(&self) -> impl Iterator<Item = &Error> {
        std::iter::successors(Some(self), |e| e.wrapped())
    }

    /// The tensor the error happened in, if known.
    pub fn tensor(&self) -> Option<&str> {
        self.places().find_map(|e| match e {
            Error::InTensor { name, .. } => Some(name.as_str()),
            _ => None,
        })
    }
    /// The number of the update the error happened in, if known.
    pub fn update(&self) -> Option<usize> {
        self.places().find_map(|e| match e {
            Error::InUpdate { index, .. } => Some(*index),
            _ => None,
        })
    }
    /// The chunk the error happened in, if known.
    pub fn chunk(&self) -> Option<&ChunkAt> {
        self.places().find_map(|e| match e {
            Error::InChunk { at, .. } => Some(at),
            _ => None,
        })
    }
    /// The codec block the error happened in, if known.
    pub fn block(&self) -> Option<usize> {
        self.places().find_map(|e| match e {
            Error::InBlock { index, .. } => Some(*index),
            _ => None,
        })
    }
    /// For a buffer too small for a payload: the bytes needed and those available.
    pub fn buffer_sizes(&self) -> Option<(u64, u64)> {
        match self.root() {
            Error::BufferTooSmall { needed, available } => Some((*needed, *available)),
            _ => None,
        }
    }
    /// The limit that was broken, with the value found and the most allowed.
    pub fn broken_limit(&self) -> Option<(Limit, u64, u64)> {
        match self.root() {
            Error::Limit {
                limit, value, max, ..
            } => Some((*limit, *value, *max)),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
