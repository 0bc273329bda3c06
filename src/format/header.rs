//! The fixed preamble, the JSON header, its limits and its validation.
//!
//! `docs/FORMAT.md` is the specification; this module is its executable form.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codec::Pipeline;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The first eight bytes of every payload (PNG-style: catches text-mode mangling).
pub const MAGIC: [u8; 8] = *b"\x89TWR\r\n\x1a\n";
/// Major version written and read. A different major version is refused.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version written. Newer minor versions of 1.x are read (they only add
/// fields a v1.0 reader may ignore).
pub const VERSION_MINOR: u16 = 0;
/// Size of the fixed preamble that precedes the JSON header.
pub const PREAMBLE_LEN: usize = 64;
/// Every tensor's stored bytes, and the data section, start at a multiple of this.
pub const ALIGN: usize = 64;

/// Largest accepted JSON header, in bytes (padding included).
pub const MAX_HEADER_LEN: u64 = 256 << 20;
/// Most tensors one payload may hold.
pub const MAX_TENSORS: usize = 1 << 20;
/// Most dimensions one tensor may have (numpy's own limit).
pub const MAX_RANK: usize = 64;
/// Longest tensor name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 65_535;
/// Deepest JSON nesting anywhere in the header (unknown keys included): room for a
/// structure of [`super::structure::MAX_DEPTH`] levels, three JSON levels each.
pub const MAX_JSON_DEPTH: usize = 256;
/// Deepest JSON nesting of the user metadata.
pub const MAX_METADATA_DEPTH: usize = 128;

/// Round `n` up to the next multiple of [`ALIGN`].
pub fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGN as u64 - 1)
        .map(|v| v & !(ALIGN as u64 - 1))
}

/// The 64-byte preamble: magic, version, section lengths and the header hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// Minor version of the writer.
    pub minor: u16,
    /// Length of the JSON header including its space padding (a multiple of 64).
    pub header_len: u64,
    /// Length of the data section that follows the header.
    pub data_len: u64,
    /// blake3 of preamble bytes 0..32 followed by the header bytes.
    pub header_hash: [u8; 32],
}

impl Preamble {
    /// Serialise bytes 0..32 (everything the header hash covers).
    pub fn fixed_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        // 12..16 reserved, zero.
        b[16..24].copy_from_slice(&self.header_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.data_len.to_le_bytes());
        b
    }

    /// Serialise the whole preamble.
    pub fn to_bytes(&self) -> [u8; PREAMBLE_LEN] {
        let mut b = [0u8; PREAMBLE_LEN];
        b[..32].copy_from_slice(&self.fixed_bytes());
        b[32..].copy_from_slice(&self.header_hash);
        b
    }

    /// Parse and check the preamble at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Preamble> {
        if buf.len() < 8 || buf[..8] != MAGIC {
            return Err(Error::format(
                "not a tensorwire payload: the magic bytes are missing",
            ));
        }
        if buf.len() < PREAMBLE_LEN {
            return Err(Error::integrity(format!(
                "payload truncated: {} bytes, the preamble alone needs {PREAMBLE_LEN}",
                buf.len()
            )));
        }
        let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let major = u16_at(8);
        if major != VERSION_MAJOR {
            return Err(Error::format(format!(
                "unsupported format version {major}.{} (this reader reads version {VERSION_MAJOR}.x)",
                u16_at(10)
            )));
        }
        if buf[12..16] != [0; 4] {
            return Err(Error::format("reserved preamble bytes 12..16 are not zero"));
        }
        let header_len = u64_at(16);
        if header_len == 0 || header_len % ALIGN as u64 != 0 || header_len > MAX_HEADER_LEN {
            return Err(Error::format(format!(
                "header length {header_len} is invalid (must be a non-zero multiple of {ALIGN}, at most {MAX_HEADER_LEN})"
            )));
        }
        let mut header_hash = [0u8; 32];
        header_hash.copy_from_slice(&buf[32..64]);
        Ok(Preamble {
            minor: u16_at(10),
            header_len,
            data_len: u64_at(24),
            header_hash,
        })
    }
}

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
}

/// Number of elements of `shape`, or an error if the product overflows.
pub fn numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Decoded size in bytes of a tensor, checked against overflow and the address space.
pub fn nbytes(dtype: DType, shape: &[u64]) -> Option<usize> {
    if shape.iter().any(|&d| d > isize::MAX as u64) {
        return None;
    }
    let n = numel(shape)?.checked_mul(dtype.itemsize() as u64)?;
    if n > isize::MAX as u64 {
        return None;
    }
    usize::try_from(n).ok()
}

/// Parse a 64-character lowercase hex digest.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    // Digit values by byte, 0xFF for anything that is not a lowercase hex digit; the
    // loop has no data-dependent branch (hashes are random, so branches mispredict).
    const VALUE: [u8; 256] = {
        let mut t = [0xFFu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let b: &[u8; 64] = s.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (VALUE[pair[0] as usize], VALUE[pair[1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | lo;
    }
    (bad & 0xF0 == 0).then_some(out)
}

/// Lowercase hex of a digest.
pub fn hex32(h: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for &b in h {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
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
    let who = || format!("tensor {:?}", e.name);
    if e.name.len() > MAX_NAME_LEN {
        return Err(Error::format(format!(
            "tensor name of {} bytes exceeds the limit of {MAX_NAME_LEN}",
            e.name.len()
        )));
    }
    let dtype = DType::parse(&e.dtype).map_err(|err| Error::format(format!("{}: {err}", who())))?;
    if e.shape.len() > MAX_RANK {
        return Err(Error::format(format!(
            "{}: rank {} exceeds the limit of {MAX_RANK}",
            who(),
            e.shape.len()
        )));
    }
    let nbytes = nbytes(dtype, &e.shape).ok_or_else(|| {
        Error::format(format!(
            "{}: shape {:?} of {} overflows the address space",
            who(),
            e.shape,
            dtype
        ))
    })?;
    let pipeline =
        Pipeline::parse(&e.codec).map_err(|err| Error::format(format!("{}: {err}", who())))?;
    if pipeline.is_raw() && e.length != nbytes as u64 {
        return Err(Error::format(format!(
            "{}: stored length {} does not match shape {:?} of {} ({} bytes)",
            who(),
            e.length,
            e.shape,
            dtype,
            nbytes
        )));
    }
    if e.offset % ALIGN as u64 != 0 {
        return Err(Error::format(format!(
            "{}: offset {} is not a multiple of {ALIGN}",
            who(),
            e.offset
        )));
    }
    if e.offset < min_offset {
        return Err(Error::format(format!(
            "{}: offset {} overlaps the previous tensor (which ends at {min_offset})",
            who(),
            e.offset
        )));
    }
    let end = e
        .offset
        .checked_add(e.length)
        .filter(|&end| end <= data_len);
    let Some(_) = end else {
        return Err(Error::format(format!(
            "{}: bytes {}..+{} lie outside the data section of {data_len} bytes",
            who(),
            e.offset,
            e.length
        )));
    };
    let hash = parse_hex32(&e.hash).ok_or_else(|| {
        Error::format(format!(
            "{}: hash is not 64 lowercase hex digits: {:?}",
            who(),
            e.hash
        ))
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
        return Err(Error::format(format!(
            "metadata is not valid: it nests {depth} levels deep, more than {MAX_METADATA_DEPTH}"
        )));
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
    fn hex_round_trip() {
        let h = *blake3::hash(b"abc").as_bytes();
        assert_eq!(parse_hex32(&hex32(&h)), Some(h));
        assert_eq!(parse_hex32(&hex32(&h).to_uppercase()), None);
        assert_eq!(parse_hex32("00"), None);
    }

    #[test]
    fn json_depth_skips_strings() {
        assert_eq!(json_depth(r#"{"a": [1, {"b": "]]]["}], "c\\"[": []}"#), 3);
        assert_eq!(json_depth("7"), 0);
        validate_metadata(&("[".repeat(128) + &"]".repeat(128))).unwrap();
        assert!(validate_metadata(&("[".repeat(129) + &"]".repeat(129))).is_err());
        assert!(validate_metadata("[1, 2").is_err());
    }

    #[test]
    fn overflowing_shape_is_refused() {
        assert_eq!(nbytes(DType::F32, &[u64::MAX, 2]), None);
        assert_eq!(nbytes(DType::F64, &[1 << 62]), None);
        assert_eq!(nbytes(DType::F32, &[0, u64::MAX]), None);
        assert_eq!(nbytes(DType::F32, &[0, 7]), Some(0));
    }
}
