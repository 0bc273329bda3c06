//! The JSON header: its limits, its entries, and their validation.
//!
//! `docs/FORMAT.md` is the specification; this module and [`super::preamble`] are its
//! executable form.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ids::parse_hex32;
use super::preamble::ALIGN;
use super::structure::MAX_DEPTH;
use crate::codec::Pipeline;
use crate::dtype::DType;
use crate::error::{Error, Kind, Limit, Result};
use crate::memory::nbytes;
use crate::trust::plain_len;

/// Most tensors one payload may hold.
pub const MAX_TENSORS: usize = 1 << 20;
/// Most dimensions one tensor may have (numpy's own limit).
pub const MAX_RANK: usize = 64;
/// Longest tensor name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 65_535;
/// Deepest JSON nesting anywhere in the header (unknown keys included): room for a
/// structure of [`MAX_DEPTH`] levels, three JSON levels each, and the levels around it.
pub const MAX_JSON_DEPTH: usize = 4 * MAX_DEPTH;
/// Deepest JSON nesting of the user metadata.
pub const MAX_METADATA_DEPTH: usize = 128;

/// One tensor's entry in the header, as stored. Strings borrow from the header text
/// when they hold no JSON escapes (parsing 10,000 entries allocates little).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorEntry<'a> {
    /// Unique name (the flattened path for nested structures).
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// Element type of the decoded tensor.
    #[serde(borrow)]
    pub dtype: Cow<'a, str>,
    /// Decoded shape, C order.
    pub shape: Vec<u64>,
    /// Codec pipeline that produced the stored bytes (`"raw"`: they are the tensor bytes).
    #[serde(borrow)]
    pub codec: Cow<'a, str>,
    /// Offset of the stored bytes from the start of the data section.
    pub offset: u64,
    /// Length of the stored bytes.
    pub length: u64,
    /// blake3 of the stored bytes, lowercase hex.
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
    /// Whether the stored bytes are sealed (FORMAT.md section 10, "Encryption"): the
    /// codec's output encrypted block by block. Only in authenticated payloads.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sealed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a payload encrypted whole (`encrypt="all"`) keeps its real header: a sealed
/// stream at the start of the data section (FORMAT.md section 10, "Encryption").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedHeader<'a> {
    /// Length of the sealed stream, in bytes.
    pub length: u64,
    /// blake3 of the sealed stream, lowercase hex.
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
}

/// The JSON header.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header<'a> {
    /// Tensors in storage order.
    #[serde(borrow)]
    pub tensors: Vec<TensorEntry<'a>>,
    /// How the tensors nest (see FORMAT.md); absent: a flat mapping by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<Box<RawValue>>,
    /// User metadata, any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<RawValue>>,
    /// For deltas: the id of the base tensors (see FORMAT.md), lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Who made the payload (FORMAT.md section 10): its JSON, checked by
    /// [`super::auth::check`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Box<RawValue>>,
    /// For a payload encrypted whole: where its real header is (then `tensors` is
    /// empty and `structure`, `metadata` and `base` are absent).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedHeader<'a>>,
}

/// A tensor entry after validation: typed, with absolute offsets.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Unique name.
    pub name: String,
    /// Element type of the decoded tensor.
    pub dtype: DType,
    /// Decoded shape.
    pub shape: Vec<u64>,
    /// Parsed codec pipeline.
    pub pipeline: Pipeline,
    /// Absolute offset of the stored bytes in the payload.
    pub start: usize,
    /// Length of the stored bytes.
    pub length: usize,
    /// Expected blake3 of the stored bytes.
    pub hash: [u8; 32],
    /// Decoded size in bytes (product of the shape times the itemsize).
    pub nbytes: usize,
    /// Whether the stored bytes are sealed (encrypted).
    pub sealed: bool,
}

impl Entry {
    /// Whether the stored bytes are the tensor's bytes themselves (raw and not sealed):
    /// then they can be read in place.
    pub fn is_stored_raw(&self) -> bool {
        self.pipeline.is_raw() && !self.sealed
    }
}

/// Check one stored entry against every rule of FORMAT.md except the data hash.
///
/// `data_start` is the absolute offset of the data section; `data_len` its length;
/// `min_offset` the first offset this entry may use (end of the previous one).
pub fn validate_entry(
    e: TensorEntry<'_>,
    data_start: usize,
    data_len: u64,
    min_offset: u64,
) -> Result<Entry> {
    if e.name.len() > MAX_NAME_LEN {
        return Err(Error::limit(
            Kind::Format,
            Limit::NameLen,
            e.name.len() as u64,
            MAX_NAME_LEN as u64,
        ));
    }
    let name = e.name.clone();
    checked_entry(e, data_start, data_len, min_offset).map_err(|err| err.in_tensor(name))
}

/// [`validate_entry`] after the name's length, its errors not yet naming the tensor.
fn checked_entry(
    e: TensorEntry<'_>,
    data_start: usize,
    data_len: u64,
    min_offset: u64,
) -> Result<Entry> {
    let dtype = DType::parse(&e.dtype)?;
    if e.shape.len() > MAX_RANK {
        return Err(Error::limit(
            Kind::Format,
            Limit::Rank,
            e.shape.len() as u64,
            MAX_RANK as u64,
        ));
    }
    let nbytes = nbytes(dtype, &e.shape).ok_or_else(|| {
        Error::format(format!(
            "shape {:?} of {} overflows the address space",
            e.shape, dtype
        ))
    })?;
    let pipeline = Pipeline::parse(&e.codec).map_err(|err| err.with_kind(Kind::Format))?;
    // A sealed tensor's stored length is that of its sealed stream.
    let plain = if e.sealed {
        plain_len(usize::try_from(e.length).unwrap_or(usize::MAX))? as u64
    } else {
        e.length
    };
    if pipeline.is_raw() && plain != nbytes as u64 {
        return Err(Error::format(format!(
            "stored length {plain} does not match shape {:?} of {} ({} bytes)",
            e.shape, dtype, nbytes
        )));
    }
    if e.offset % ALIGN as u64 != 0 {
        return Err(Error::format(format!(
            "offset {} is not a multiple of {ALIGN}",
            e.offset
        )));
    }
    if e.offset < min_offset {
        return Err(Error::format(format!(
            "offset {} overlaps the previous tensor (which ends at {min_offset})",
            e.offset
        )));
    }
    let end = e
        .offset
        .checked_add(e.length)
        .filter(|&end| end <= data_len);
    let Some(_) = end else {
        return Err(Error::format(format!(
            "bytes {}..+{} lie outside the data section of {data_len} bytes",
            e.offset, e.length
        )));
    };
    let hash = parse_hex32(&e.hash).ok_or_else(|| {
        Error::format(format!("hash is not 64 lowercase hex digits: {:?}", e.hash))
    })?;
    // data_start + offset + length <= buffer length was established by the caller
    // (data_start + data_len == buffer length), so these conversions cannot truncate.
    Ok(Entry {
        name: e.name.into_owned(),
        dtype,
        shape: e.shape,
        pipeline,
        start: data_start + e.offset as usize,
        length: e.length as usize,
        hash,
        nbytes,
        sealed: e.sealed,
    })
}

/// The deepest nesting of arrays and objects in `json` (which must be valid JSON: the
/// scan only skips strings). One pass, no allocation.
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut bytes = json.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => {
                while let Some(c) = bytes.next() {
                    match c {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    max
}

/// Check that user metadata is valid JSON nesting at most [`MAX_METADATA_DEPTH`] levels,
/// so every reader can load it without exhausting its stack. No document is built.
pub fn validate_metadata(json: &str) -> Result<()> {
    let depth = json_depth(json);
    if depth > MAX_METADATA_DEPTH {
        return Err(Error::limit(
            Kind::Format,
            Limit::MetadataDepth,
            depth as u64,
            MAX_METADATA_DEPTH as u64,
        ));
    }
    let mut de = serde_json::Deserializer::from_str(json);
    de.disable_recursion_limit();
    serde::de::IgnoredAny::deserialize(&mut de)
        .and_then(|_| de.end())
        .map_err(|e| Error::format(format!("metadata is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_skips_strings() {
        assert_eq!(json_depth(r#"{"a": [1, {"b": "]]]["}], "c\\"[": []}"#), 3);
        assert_eq!(json_depth("7"), 0);
        validate_metadata(&("[".repeat(128) + &"]".repeat(128))).unwrap();
        assert!(validate_metadata(&("[".repeat(129) + &"]".repeat(129))).is_err());
        assert!(validate_metadata("[1, 2").is_err());
    }
}
