//! Encoding tensors into a payload and reading them back.
//!
//! [`prepare`] validates the inputs, runs every non-raw codec (in parallel) and lays
//! the payload out; [`Prepared::write_into`] then copies and hashes the tensors in one
//! pass straight into the caller's output buffer, and [`Prepared::write_to`] streams
//! them to a file. [`parse`] validates a payload's preamble and header without touching
//! tensor bytes (O(tensors)); [`Layout::verify`] and [`Layout::decode_into`] do the
//! per-tensor work, in parallel.

use std::borrow::Cow;
use std::io::{Seek, SeekFrom, Write};

use rayon::prelude::*;
use serde_json::value::RawValue;

use super::header::{
    align_up, hex32, json_depth, nbytes, parse_hex32, validate_entry, validate_metadata, Entry,
    Header, Preamble, TensorEntry, ALIGN, MAX_JSON_DEPTH, MAX_NAME_LEN, MAX_TENSORS, PREAMBLE_LEN,
    VERSION_MINOR,
};
use crate::codec::Pipeline;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::memory::{copy_and_hash, hash};

/// One tensor handed to [`prepare`]: little-endian, C-contiguous bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorInput<'a> {
    /// Unique name.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Shape, C order.
    pub shape: &'a [u64],
    /// The tensor's bytes (`numel * itemsize` of them).
    pub data: &'a [u8],
    /// Codec spec for this tensor.
    pub codec: &'a str,
    /// The base tensor's bytes, for delta codecs.
    pub base: Option<&'a [u8]>,
}

/// Payload-wide options of [`prepare`].
#[derive(Debug, Default, Clone)]
pub struct EncodeOptions<'a> {
    /// JSON of the structure tree (see FORMAT.md), if not a flat mapping.
    pub structure: Option<&'a str>,
    /// JSON of the user metadata.
    pub metadata: Option<&'a str>,
    /// Id of the base tensors, for deltas (lowercase hex).
    pub base_id: Option<&'a str>,
}

/// The stored bytes of one tensor: the input itself (raw) or what a codec produced.
pub(crate) enum Stored<'a> {
    Borrowed(&'a [u8]),
    Encoded(Vec<u8>),
}

impl Stored<'_> {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Stored::Borrowed(b) => b,
            Stored::Encoded(v) => v,
        }
    }
}

/// A payload laid out and ready to be written.
pub struct Prepared<'a> {
    pub(crate) header: Header<'a>,
    pub(crate) stored: Vec<Stored<'a>>,
    pub(crate) header_len: usize,
    pub(crate) data_len: u64,
}

/// Prefix an error's message with the tensor it concerns.
fn about(name: &str, e: Error) -> Error {
    e.context(format_args!("tensor {name:?}"))
}

/// Validate the inputs, run their codecs in parallel, and lay the payload out.
pub fn prepare<'a>(inputs: &[TensorInput<'a>], opts: &EncodeOptions<'_>) -> Result<Prepared<'a>> {
    if inputs.len() > MAX_TENSORS {
        return Err(Error::input(format!(
            "{} tensors exceed the limit of {MAX_TENSORS}",
            inputs.len()
        )));
    }
    let mut names = std::collections::HashSet::with_capacity(inputs.len());
    for t in inputs {
        if !names.insert(t.name) {
            return Err(Error::input(format!(
                "tensor name {:?} appears twice",
                t.name
            )));
        }
        if t.name.len() > MAX_NAME_LEN {
            return Err(Error::input(format!(
                "tensor name of {} bytes exceeds the limit of {MAX_NAME_LEN}",
                t.name.len()
            )));
        }
        let expected = nbytes(t.dtype, t.shape).ok_or_else(|| {
            Error::input(format!(
                "tensor {:?}: shape {:?} is too large",
                t.name, t.shape
            ))
        })?;
        if t.data.len() != expected {
            return Err(Error::input(format!(
                "tensor {:?}: {} bytes given, shape {:?} of {} needs {expected}",
                t.name,
                t.data.len(),
                t.shape,
                t.dtype
            )));
        }
    }
    let structure = match opts.structure {
        Some(s) => {
            super::structure::validate(s, inputs.len()).map_err(|e| Error::input(e.to_string()))?;
            Some(RawValue::from_string(s.to_owned()).expect("validated JSON"))
        }
        None => None,
    };
    let metadata = match opts.metadata {
        Some(m) => {
            validate_metadata(m).map_err(|e| Error::input(e.to_string()))?;
            Some(RawValue::from_string(m.to_owned()).expect("validated JSON"))
        }
        None => None,
    };
    if let Some(id) = opts.base_id {
        if parse_hex32(id).is_none() {
            return Err(Error::input(format!(
                "base id must be 64 lowercase hex digits, got {id:?}"
            )));
        }
    }

    // Run codecs in parallel; raw tensors are borrowed, not copied.
    let encoded: Vec<(Pipeline, Stored<'a>)> = inputs
        .par_iter()
        .map(|t| {
            let pipeline = Pipeline::parse(t.codec)
                .and_then(|p| p.resolve(t.dtype, t.data))
                .map_err(|e| about(t.name, e))?;
            if pipeline.is_raw() {
                return Ok((pipeline, Stored::Borrowed(t.data)));
            }
            pipeline.check(t.dtype).map_err(|e| about(t.name, e))?;
            if pipeline.needs_base() && t.base.is_none() {
                return Err(about(
                    t.name,
                    Error::codec(format!("codec {pipeline} needs a base tensor")),
                ));
            }
            let bytes = pipeline
                .encode(t.dtype, t.shape, t.data, t.base)
                .map_err(|e| about(t.name, e))?;
            Ok((pipeline, Stored::Encoded(bytes)))
        })
        .collect::<Result<_>>()?;

    let mut offset = 0u64;
    let mut tensors = Vec::with_capacity(inputs.len());
    let mut stored = Vec::with_capacity(inputs.len());
    for (t, (pipeline, s)) in inputs.iter().zip(encoded) {
        let length = s.bytes().len() as u64;
        tensors.push(TensorEntry {
            name: Cow::Borrowed(t.name),
            dtype: Cow::Borrowed(t.dtype.name()),
            shape: t.shape.to_vec(),
            codec: Cow::Owned(pipeline.to_string()),
            offset,
            length,
            hash: Cow::Owned(hex32(&[0; 32])),
        });
        stored.push(s);
        offset = align_up(offset + length).expect("payload below 2^64 bytes");
    }
    // The data section ends at the last tensor's end, not its padding.
    let data_len = tensors.last().map_or(0, |t| t.offset + t.length);
    let header = Header {
        tensors,
        structure,
        metadata,
        base: opts.base_id.map(str::to_owned),
    };
    let header_len = align_up(serialize(&header).len() as u64).expect("small") as usize;
    Ok(Prepared {
        header,
        stored,
        header_len,
        data_len,
    })
}

fn serialize(header: &Header) -> Vec<u8> {
    serde_json::to_vec(header).expect("header serialises")
}

impl Prepared<'_> {
    /// Total size of the payload in bytes.
    pub fn total_len(&self) -> usize {
        PREAMBLE_LEN + self.header_len + self.data_len as usize
    }

    /// Write the header into `out[..PREAMBLE_LEN + header_len]` now that the hashes are known.
    pub(crate) fn finish_header(&mut self, hashes: &[[u8; 32]], out: &mut [u8]) {
        for (entry, h) in self.header.tensors.iter_mut().zip(hashes) {
            entry.hash = Cow::Owned(hex32(h));
        }
        let json = serialize(&self.header);
        assert!(
            json.len() <= self.header_len,
            "fixed-width hashes keep the length"
        );
        let (pre, rest) = out.split_at_mut(PREAMBLE_LEN);
        let header = &mut rest[..self.header_len];
        header[..json.len()].copy_from_slice(&json);
        header[json.len()..].fill(b' ');
        let mut preamble = Preamble {
            minor: VERSION_MINOR,
            header_len: self.header_len as u64,
            data_len: self.data_len,
            header_hash: [0; 32],
        };
        let mut h = blake3::Hasher::new();
        h.update(&preamble.fixed_bytes());
        h.update(header);
        preamble.header_hash = *h.finalize().as_bytes();
        pre.copy_from_slice(&preamble.to_bytes());
    }

    /// Write the whole payload into `out`, which must be exactly [`Self::total_len`]
    /// bytes and may be uninitialised garbage: every byte is written.
    pub fn write_into(mut self, out: &mut [u8]) {
        assert_eq!(
            out.len(),
            self.total_len(),
            "output buffer has the wrong size"
        );
        let (head, mut data) = out.split_at_mut(PREAMBLE_LEN + self.header_len);
        // Split the data section into disjoint per-tensor slices, zeroing the gaps.
        let mut jobs = Vec::with_capacity(self.stored.len());
        let mut pos = 0u64;
        for (entry, s) in self.header.tensors.iter().zip(&self.stored) {
            let gap = (entry.offset - pos) as usize;
            let (pad, rest) = data.split_at_mut(gap);
            pad.fill(0);
            let (dst, rest) = rest.split_at_mut(entry.length as usize);
            jobs.push((dst, s.bytes()));
            data = rest;
            pos = entry.offset + entry.length;
        }
        let hashes: Vec<[u8; 32]> = jobs
            .into_par_iter()
            .map(|(dst, src)| copy_and_hash(src, dst))
            .collect();
        self.finish_header(&hashes, head);
    }

    /// Stream the payload to `w` (a file): data first, then the header at the start.
    /// Raw tensors are written straight from the caller's memory, never copied whole.
    pub fn write_to<W: Write + Seek>(mut self, w: &mut W) -> Result<()> {
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| Error::Io { context, source }
        };
        let hashes: Vec<[u8; 32]> = self.stored.par_iter().map(|s| hash(s.bytes())).collect();
        let data_start = (PREAMBLE_LEN + self.header_len) as u64;
        w.seek(SeekFrom::Start(data_start))
            .map_err(io("seeking past the header"))?;
        let zeros = [0u8; ALIGN];
        let mut pos = 0u64;
        for (entry, s) in self.header.tensors.iter().zip(&self.stored) {
            w.write_all(&zeros[..(entry.offset - pos) as usize])
                .map_err(io("writing padding"))?;
            w.write_all(s.bytes())
                .map_err(|e| io(&format!("writing tensor {:?}", entry.name))(e))?;
            pos = entry.offset + entry.length;
        }
        let mut head = vec![0u8; data_start as usize];
        self.finish_header(&hashes, &mut head);
        w.seek(SeekFrom::Start(0))
            .map_err(io("seeking to the start"))?;
        w.write_all(&head).map_err(io("writing the header"))?;
        w.flush().map_err(io("flushing"))?;
        Ok(())
    }
}

/// One tensor to decode: its index, the output buffer, and the base tensor for deltas.
pub type DecodeJob<'a> = (usize, &'a mut [u8], Option<TensorView<'a>>);

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

/// By default a payload may decode to this many bytes beyond [`DEFAULT_EXPANSION`]
/// times its own length (see [`default_max_decoded_bytes`]).
pub const DEFAULT_DECODED_SLACK: u64 = 1 << 30;
/// By default a payload may decode to this many times its own length (plus
/// [`DEFAULT_DECODED_SLACK`]).
pub const DEFAULT_EXPANSION: u64 = 256;

/// The default limit on the bytes decoding a payload of `len` bytes may allocate:
/// `DEFAULT_EXPANSION * len + DEFAULT_DECODED_SLACK` (256 times the payload, plus 1 GiB).
pub fn default_max_decoded_bytes(len: usize) -> u64 {
    DEFAULT_EXPANSION
        .saturating_mul(len as u64)
        .saturating_add(DEFAULT_DECODED_SLACK)
}

/// Check that the bytes of a `bool` tensor are all 0 or 1 (the only values the format allows).
pub fn check_bools(name: &str, bytes: &[u8]) -> Result<()> {
    match bytes.iter().position(|&b| b > 1) {
        None => Ok(()),
        Some(i) => Err(Error::integrity(format!(
            "tensor {name:?}: element {i} of a bool tensor is {}, not 0 or 1",
            bytes[i]
        ))),
    }
}

/// A validated payload header: everything needed to find, check and decode tensors.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Validated tensor entries, in storage order.
    pub entries: Vec<Entry>,
    /// Structure JSON, if the payload is not a flat mapping.
    pub structure: Option<String>,
    /// User metadata JSON, if any.
    pub metadata: Option<String>,
    /// Base id for deltas, if any.
    pub base: Option<[u8; 32]>,
    /// The header hash: the payload's content id.
    pub content_id: [u8; 32],
    /// Minor version of the writer.
    pub minor: u16,
    /// Absolute offset of the data section.
    pub data_start: usize,
}

/// Validate the preamble and header of `buf`. Costs O(header), never touches tensor bytes.
pub fn parse(buf: &[u8]) -> Result<Layout> {
    let pre = Preamble::parse(buf)?;
    let avail = (buf.len() - PREAMBLE_LEN) as u64;
    if pre.header_len > avail {
        return Err(Error::integrity(format!(
            "payload truncated: the header needs {} bytes, {avail} remain",
            pre.header_len
        )));
    }
    let header_len = pre.header_len as usize;
    let data_start = PREAMBLE_LEN + header_len;
    let header_bytes = &buf[PREAMBLE_LEN..data_start];
    let mut h = blake3::Hasher::new();
    h.update(&pre.fixed_bytes());
    h.update(header_bytes);
    if *h.finalize().as_bytes() != pre.header_hash {
        return Err(Error::integrity(
            "header checksum mismatch: the preamble or header is corrupt",
        ));
    }
    let have = (buf.len() - data_start) as u64;
    if have < pre.data_len {
        return Err(Error::integrity(format!(
            "payload truncated: the data section needs {} bytes, {have} remain",
            pre.data_len
        )));
    }
    if have > pre.data_len {
        return Err(Error::format(format!(
            "{} unexpected bytes after the end of the payload",
            have - pre.data_len
        )));
    }
    let text = std::str::from_utf8(header_bytes)
        .map_err(|e| Error::format(format!("header is not valid UTF-8: {e}")))?;
    let text = text.trim_end_matches(' ');
    // Bound the nesting everywhere, unknown keys included, before parsing anything.
    let depth = json_depth(text);
    if depth > MAX_JSON_DEPTH {
        return Err(Error::format(format!(
            "header is not valid: its JSON nests {depth} levels deep, more than {MAX_JSON_DEPTH}"
        )));
    }
    let header: Header = serde_json::from_str(text)
        .map_err(|e| Error::format(format!("header is not valid: {e}")))?;
    if header.tensors.len() > MAX_TENSORS {
        return Err(Error::format(format!(
            "{} tensors exceed the limit of {MAX_TENSORS}",
            header.tensors.len()
        )));
    }
    let mut entries = Vec::with_capacity(header.tensors.len());
    let mut min_offset = 0u64;
    for t in header.tensors {
        let end = t.offset.saturating_add(t.length);
        entries.push(validate_entry(t, data_start, pre.data_len, min_offset)?);
        min_offset = end;
    }
    // Prove every coded tensor's decoded size from its framing before anyone allocates.
    for e in &entries {
        if !e.pipeline.is_raw() {
            e.pipeline
                .check_stored(
                    e.dtype,
                    &e.shape,
                    e.nbytes,
                    &buf[e.start..e.start + e.length],
                )
                .map_err(|err| about(&e.name, err))?;
        }
    }
    let mut names = std::collections::HashSet::with_capacity(entries.len());
    if let Some(e) = entries.iter().find(|e| !names.insert(e.name.as_str())) {
        return Err(Error::format(format!(
            "tensor name {:?} appears twice",
            e.name
        )));
    }
    if min_offset != pre.data_len {
        return Err(Error::format(format!(
            "data section is {} bytes but the tensors end at {min_offset}",
            pre.data_len
        )));
    }
    if let Some(s) = &header.structure {
        super::structure::validate(s.get(), entries.len())?;
    }
    if let Some(m) = &header.metadata {
        validate_metadata(m.get())?;
    }
    let base = match &header.base {
        Some(b) => Some(parse_hex32(b).ok_or_else(|| {
            Error::format(format!("base id is not 64 lowercase hex digits: {b:?}"))
        })?),
        None => None,
    };
    Ok(Layout {
        entries,
        // The parsed JSON text becomes the layout's, without another copy.
        structure: header.structure.map(|s| Box::<str>::from(s).into_string()),
        metadata: header.metadata.map(|m| Box::<str>::from(m).into_string()),
        base,
        content_id: pre.header_hash,
        minor: pre.minor,
        data_start,
    })
}

impl Layout {
    /// Index of the tensor called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// Stored bytes of tensor `i` within `buf` (the buffer [`parse`] validated).
    pub fn stored<'b>(&self, buf: &'b [u8], i: usize) -> &'b [u8] {
        let e = &self.entries[i];
        &buf[e.start..e.start + e.length]
    }

    /// Check tensor `i`'s checksum (and, for a raw bool tensor, that its values are 0 or 1).
    fn check_hash(&self, buf: &[u8], i: usize) -> Result<()> {
        let e = &self.entries[i];
        if hash(self.stored(buf, i)) != e.hash {
            return Err(Error::integrity(format!(
                "tensor {:?}: checksum mismatch, its bytes are corrupt",
                e.name
            )));
        }
        self.check_raw_values(buf, i)
    }

    /// For a raw tensor, check the values the format restricts (bool: 0 or 1); O(bytes)
    /// for bool tensors, nothing for the others.
    pub fn check_raw_values(&self, buf: &[u8], i: usize) -> Result<()> {
        let e = &self.entries[i];
        if e.dtype == DType::Bool && e.pipeline.is_raw() {
            check_bools(&e.name, self.stored(buf, i))?;
        }
        Ok(())
    }

    /// Bytes that decoding the tensors `indices` (all when `None`) allocates: the decoded
    /// size of every coded tensor, and of raw ones too when they are `copied`. An error
    /// when that exceeds `limit` (see [`default_max_decoded_bytes`]).
    pub fn check_decoded_bytes(
        &self,
        indices: Option<&[usize]>,
        copied: bool,
        limit: u64,
    ) -> Result<u64> {
        let size = |i: usize| {
            let e = &self.entries[i];
            if copied || !e.pipeline.is_raw() {
                e.nbytes as u64
            } else {
                0
            }
        };
        let total: u64 = match indices {
            Some(ix) => ix.iter().map(|&i| size(i)).fold(0u64, u64::saturating_add),
            None => (0..self.entries.len())
                .map(size)
                .fold(0u64, u64::saturating_add),
        };
        if total > limit {
            return Err(Error::format(format!(
                "decoding needs {total} bytes, more than max_decoded_bytes={limit} allows \
                 (pass a larger max_decoded_bytes= if this payload is trusted)"
            )));
        }
        Ok(total)
    }

    /// Check that the alignment padding between the stored tensors is zero (with every
    /// tensor's checksum, that covers every byte of the payload).
    pub fn check_padding(&self, buf: &[u8]) -> Result<()> {
        let mut pos = self.data_start;
        for e in &self.entries {
            if buf[pos..e.start].iter().any(|&b| b != 0) {
                return Err(Error::integrity(format!(
                    "padding before tensor {:?} is not zero: the payload is corrupt",
                    e.name
                )));
            }
            pos = e.start + e.length;
        }
        Ok(())
    }

    /// Verify the checksums of the tensors `indices` (all when `None`), in parallel.
    /// Verifying all also checks that the alignment padding is zero, so that every
    /// byte of the payload is covered.
    pub fn verify(&self, buf: &[u8], indices: Option<&[usize]>) -> Result<()> {
        match indices {
            Some(ix) => ix.par_iter().try_for_each(|&i| self.check_hash(buf, i)),
            None => {
                self.check_padding(buf)?;
                (0..self.entries.len())
                    .into_par_iter()
                    .try_for_each(|i| self.check_hash(buf, i))
            }
        }
    }

    /// Decode tensor `i` into `out` (exactly its decoded size), checking its hash first
    /// when `verify` is set. `base` is the base tensor for delta codecs: it must have the
    /// tensor's dtype and shape.
    pub fn decode_into(
        &self,
        buf: &[u8],
        i: usize,
        out: &mut [u8],
        base: Option<TensorView<'_>>,
        verify: bool,
    ) -> Result<()> {
        let e = &self.entries[i];
        if out.len() != e.nbytes {
            return Err(Error::input(format!(
                "tensor {:?}: output buffer of {} bytes, {} needed",
                e.name,
                out.len(),
                e.nbytes
            )));
        }
        if verify {
            self.check_hash(buf, i)?;
        }
        let stored = self.stored(buf, i);
        if e.pipeline.is_raw() {
            out.copy_from_slice(stored);
            return self.check_raw_values(buf, i);
        }
        let base = if e.pipeline.needs_base() {
            let Some(b) = base else {
                return Err(Error::integrity(format!(
                    "tensor {:?}: codec {} is a delta and needs the base it was encoded against",
                    e.name, e.pipeline
                )));
            };
            if b.dtype != e.dtype || b.shape != e.shape.as_slice() {
                return Err(Error::integrity(format!(
                    "tensor {:?}: the base tensor is {}{:?}, this delta was encoded against {}{:?}",
                    e.name, b.dtype, b.shape, e.dtype, e.shape
                )));
            }
            Some(b.data)
        } else {
            None
        };
        e.pipeline
            .decode(e.dtype, &e.shape, stored, base, out)
            .map_err(|err| about(&e.name, err))?;
        if e.dtype == DType::Bool {
            check_bools(&e.name, out)?;
        }
        Ok(())
    }

    /// Decode several tensors in parallel: `jobs` pairs an index with its output buffer
    /// and optional base bytes.
    pub fn decode_many(&self, buf: &[u8], jobs: Vec<DecodeJob<'_>>, verify: bool) -> Result<()> {
        jobs.into_par_iter()
            .try_for_each(|(i, out, base)| self.decode_into(buf, i, out, base, verify))
    }
}

/// Id of a set of tensors, independent of how they are encoded: blake3 over each
/// tensor's name, dtype, shape and the blake3 of its bytes (see FORMAT.md, "Base id").
pub fn tensors_id(tensors: &[(&str, DType, &[u64], &[u8])]) -> [u8; 32] {
    let hashes: Vec<[u8; 32]> = tensors.par_iter().map(|t| hash(t.3)).collect();
    let mut h = blake3::Hasher::new();
    h.update(b"tensorwire-tensors-id-v1");
    h.update(&(tensors.len() as u64).to_le_bytes());
    for (t, th) in tensors.iter().zip(&hashes) {
        h.update(&(t.0.len() as u64).to_le_bytes());
        h.update(t.0.as_bytes());
        h.update(&(t.1.name().len() as u64).to_le_bytes());
        h.update(t.1.name().as_bytes());
        h.update(&(t.2.len() as u64).to_le_bytes());
        for d in t.2 {
            h.update(&d.to_le_bytes());
        }
        h.update(th);
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(inputs: &[TensorInput<'_>], opts: &EncodeOptions<'_>) -> Vec<u8> {
        let prepared = prepare(inputs, opts).unwrap();
        let mut out = vec![0xAAu8; prepared.total_len()]; // garbage: every byte must be written
        prepared.write_into(&mut out);
        out
    }

    fn input<'a>(
        name: &'a str,
        shape: &'a [u64],
        data: &'a [u8],
        codec: &'a str,
    ) -> TensorInput<'a> {
        TensorInput {
            name,
            dtype: DType::F32,
            shape,
            data,
            codec,
            base: None,
        }
    }

    fn floats(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect()
    }

    #[test]
    fn round_trip_raw_and_coded() {
        let (a, b) = (floats(1000), floats(3));
        let inputs = [
            input("a", &[10, 100], &a, "raw"),
            input("b", &[3], &b, "shuffle+zstd"),
        ];
        let blob = encode(
            &inputs,
            &EncodeOptions {
                metadata: Some("{\"k\":1}"),
                ..Default::default()
            },
        );
        let layout = parse(&blob).unwrap();
        layout.verify(&blob, None).unwrap();
        assert_eq!(layout.entries.len(), 2);
        assert_eq!(layout.metadata.as_deref(), Some("{\"k\":1}"));
        assert_eq!(layout.stored(&blob, 0), &a[..]);
        assert_eq!(layout.entries[0].start % ALIGN, 0);
        assert_eq!(layout.entries[1].start % ALIGN, 0);
        let mut out = vec![0u8; b.len()];
        layout.decode_into(&blob, 1, &mut out, None, true).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn write_to_matches_write_into() {
        let a = floats(77);
        let inputs = [input("a", &[77], &a, "raw"), input("z", &[0], &[], "lz4")];
        let blob = encode(&inputs, &EncodeOptions::default());
        let mut file = std::io::Cursor::new(Vec::new());
        prepare(&inputs, &EncodeOptions::default())
            .unwrap()
            .write_to(&mut file)
            .unwrap();
        assert_eq!(file.into_inner(), blob);
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_an_error() {
        let a = floats(20);
        let inputs = [
            input("a", &[20], &a, "raw"),
            input("b", &[5], &a[..20], "zstd"),
        ];
        let blob = encode(&inputs, &EncodeOptions::default());
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x40;
            let result = parse(&bad).and_then(|l| l.verify(&bad, None));
            assert!(result.is_err(), "flip at {i} went unnoticed");
        }
        for n in 0..blob.len() {
            assert!(
                parse(&blob[..n]).is_err(),
                "truncation to {n} went unnoticed"
            );
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        let a = floats(4);
        let short = input("a", &[5], &a, "raw");
        assert!(matches!(
            prepare(&[short], &EncodeOptions::default()),
            Err(Error::Input(_))
        ));
        let dup = [input("a", &[4], &a, "raw"), input("a", &[4], &a, "raw")];
        assert!(matches!(
            prepare(&dup, &EncodeOptions::default()),
            Err(Error::Input(_))
        ));
        let bad_codec = input("a", &[4], &a, "gzip");
        match prepare(&[bad_codec], &EncodeOptions::default()) {
            Err(Error::Codec(m)) => assert!(m.contains("\"a\"") && m.contains("gzip"), "{m}"),
            other => panic!("{:?}", other.map(|p| p.total_len())),
        }
        let opts = EncodeOptions {
            structure: Some("{\"list\":[1]}"),
            ..Default::default()
        };
        assert!(prepare(&[input("a", &[4], &a, "raw")], &opts).is_err());
    }

    #[test]
    fn decode_with_wrong_output_size_is_refused() {
        let a = floats(4);
        let blob = encode(&[input("a", &[4], &a, "raw")], &EncodeOptions::default());
        let layout = parse(&blob).unwrap();
        let mut out = vec![0u8; 3];
        assert!(layout.decode_into(&blob, 0, &mut out, None, true).is_err());
    }

    #[test]
    fn legal_nesting_round_trips_and_deeper_is_refused() {
        let a = floats(1);
        let mut structure = "0".to_string();
        for _ in 0..64 {
            structure = format!(r#"{{"dict":[["k",{structure}]]}}"#);
        }
        let meta = "[".repeat(128) + &"]".repeat(128);
        let opts = EncodeOptions {
            structure: Some(&structure),
            metadata: Some(&meta),
            ..Default::default()
        };
        let blob = encode(&[input("k", &[1], &a, "raw")], &opts);
        let layout = parse(&blob).unwrap();
        assert_eq!(layout.structure.as_deref(), Some(structure.as_str()));
        let deeper = format!("[{meta}]");
        let opts = EncodeOptions {
            metadata: Some(&deeper),
            ..Default::default()
        };
        assert!(matches!(
            prepare(&[input("k", &[1], &a, "raw")], &opts),
            Err(Error::Input(_))
        ));
    }

    #[test]
    fn tensors_id_depends_on_every_field() {
        let a = floats(4);
        let id = |name: &str, dtype: DType, shape: &[u64], data: &[u8]| {
            tensors_id(&[(name, dtype, shape, data)])
        };
        let base = id("a", DType::F32, &[4], &a);
        assert_eq!(base, id("a", DType::F32, &[4], &a));
        assert_ne!(base, id("b", DType::F32, &[4], &a));
        assert_ne!(base, id("a", DType::I32, &[4], &a));
        assert_ne!(base, id("a", DType::F32, &[2, 2], &a));
        assert_ne!(base, id("a", DType::F32, &[4], &floats(5)[4..]));
    }
}
