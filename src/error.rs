//! The one error type of the core. Bindings map each variant to a Python exception.

/// Everything that can go wrong while encoding, parsing or verifying a payload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload is malformed, unsupported, or violates a documented limit.
    #[error("{0}")]
    Format(String),
    /// The bytes do not match their checksums, the payload is truncated, or a
    /// delta's base is missing or different.
    #[error("{0}")]
    Integrity(String),
    /// A codec spec is invalid or does not fit a tensor.
    #[error("{0}")]
    Codec(String),
    /// The input cannot be encoded (unsupported dtype, inconsistent shape).
    #[error("{0}")]
    Input(String),
    /// An I/O error while writing or reading a file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand constructors, so call sites read as sentences.
impl Error {
    /// A [`Error::Format`] from anything printable.
    pub fn format(msg: impl Into<String>) -> Self {
        Error::Format(msg.into())
    }
    /// An [`Error::Integrity`] from anything printable.
    pub fn integrity(msg: impl Into<String>) -> Self {
        Error::Integrity(msg.into())
    }
    /// An [`Error::Codec`] from anything printable.
    pub fn codec(msg: impl Into<String>) -> Self {
        Error::Codec(msg.into())
    }
    /// An [`Error::Input`] from anything printable.
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }

    /// The same kind of error with its message rewritten by `f` (I/O errors keep theirs).
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            Error::Format(m) => Error::Format(f(m)),
            Error::Integrity(m) => Error::Integrity(f(m)),
            Error::Codec(m) => Error::Codec(f(m)),
            Error::Input(m) => Error::Input(f(m)),
            io @ Error::Io { .. } => io,
        }
    }

    /// The same error with `what: ` in front of its message, e.g. `tensor "w": ...`.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        self.map_message(|m| format!("{what}: {m}"))
    }
}
