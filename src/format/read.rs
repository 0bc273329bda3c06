//! Reading a payload: [`parse`] validates its preamble and header without touching
//! tensor bytes (O(tensors)); [`Layout::verify`] checks the tensors, in parallel, and
//! `decode.rs` decodes them.

use rayon::prelude::*;

use serde_json::value::RawValue;

use super::auth::{self, Auth};
use super::header::{
    json_depth, validate_entry, validate_metadata, Entry, Header, MAX_JSON_DEPTH, MAX_TENSORS,
};
use super::ids::parse_hex32;
use super::preamble::{Preamble, PREAMBLE_LEN};
use super::sealed;
use super::write::Encrypt;
use crate::dtype::DType;
use crate::error::{Checked, Error, Kind, Limit, Result};
use crate::memory::hash;
use crate::trust::signature::{self, hex};
use crate::trust::{id_hex, Subkeys, Verifier, SIGNATURE_LEN};

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
            "element {i} of a bool tensor is {}, not 0 or 1",
            bytes[i]
        ))
        .in_tensor(name)),
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
    /// Who made the payload (its header's `auth` object), when it says.
    pub auth: Option<Auth>,
    /// The subkeys of the shared key an authenticated payload was made with (they open
    /// its sealed tensors).
    pub key: Option<Subkeys>,
    /// For a payload encrypted whole: where its sealed header starts (absolute); the
    /// tensors' padding ends there.
    pub sealed_header_at: Option<usize>,
}

/// Validate the preamble and header of `buf`, accepting no shared key and any valid
/// signature: [`parse_with`] and a default [`Verifier`].
pub fn parse(buf: &[u8]) -> Result<Layout> {
    parse_with(buf, &Verifier::default())
}

/// The header text of a payload: UTF-8 without its space padding, its nesting bounded
/// everywhere (unknown keys included) before anything is parsed.
fn header_text(header_bytes: &[u8]) -> Result<&str> {
    let text = std::str::from_utf8(header_bytes)
        .map_err(|e| Error::format(format!("header is not valid UTF-8: {e}")))?;
    let text = text.trim_end_matches(' ');
    let depth = json_depth(text);
    if depth > MAX_JSON_DEPTH {
        return Err(Error::limit(
            Kind::Format,
            Limit::HeaderDepth,
            depth as u64,
            MAX_JSON_DEPTH as u64,
        ));
    }
    Ok(text)
}

/// The parsed header.
fn header_of(text: &str) -> Result<Header<'_>> {
    serde_json::from_str(text).map_err(|e| Error::format(format!("header is not valid: {e}")))
}

/// Validate the preamble and header of `buf`, and establish who made it (FORMAT.md
/// section 10, "Reading") with `verifier`'s keys and trusted signers: all of it before
/// any tensor byte is read. Costs O(header), never touches tensor bytes.
pub fn parse_with(buf: &[u8], verifier: &Verifier) -> Result<Layout> {
    let pre = Preamble::parse(buf)?;
    let avail = (buf.len() - PREAMBLE_LEN) as u64;
    if pre.header_len > avail {
        return Err(Error::integrity(format!(
            "payload truncated: the header needs {} bytes, {avail} remain",
            pre.header_len
        )));
    }
    if verifier.has_keys() && !pre.keyed {
        return Err(Error::authentication(
            "payload is not authenticated (its header hash is plain BLAKE3), \
             but a key was given: only payloads authenticated with it are accepted",
        ));
    }
    let header_len = pre.header_len as usize;
    let data_start = PREAMBLE_LEN + header_len;
    let header_bytes = &buf[PREAMBLE_LEN..data_start];
    let keyed_header = if pre.keyed {
        // The header names its key; nothing else of it is read before the keyed hash
        // is checked, and what fails until then is a failure to authenticate.
        let unauthenticated =
            |e: Error| Error::authentication(format!("the header cannot be authenticated: {e}"));
        let text = header_text(header_bytes).map_err(unauthenticated)?;
        let header = header_of(text).map_err(unauthenticated)?;
        let id =
            auth::key_id_of(header.auth.as_deref().map(RawValue::get)).map_err(unauthenticated)?;
        let Some(key) = verifier.key(&id) else {
            return Err(Error::authentication(format!(
                "payload authenticated with key id {}; pass key= or keys=",
                id_hex(&id)
            )));
        };
        let mut h = blake3::Hasher::new_keyed(&key.payload_mac);
        h.update(&pre.fixed_bytes());
        h.update(header_bytes);
        // blake3::Hash compares in constant time.
        if h.finalize() != blake3::Hash::from_bytes(pre.header_hash) {
            return Err(Error::authentication(format!(
                "header MAC mismatch for key id {}: the payload was altered, or made with another key",
                id_hex(&id)
            )));
        }
        Some((header, key.clone()))
    } else {
        let mut h = blake3::Hasher::new();
        h.update(&pre.fixed_bytes());
        h.update(header_bytes);
        if *h.finalize().as_bytes() != pre.header_hash {
            return Err(Error::checksum(Checked::Header));
        }
        None
    };
    let trailer_len = if pre.signed { SIGNATURE_LEN as u64 } else { 0 };
    let have = (buf.len() - data_start) as u64;
    if have < pre.data_len {
        return Err(Error::integrity(format!(
            "payload truncated: the data section needs {} bytes, {have} remain",
            pre.data_len
        )));
    }
    if have < pre.data_len + trailer_len {
        return Err(Error::authentication(format!(
            "the signature trailer is truncated: {} of {SIGNATURE_LEN} bytes",
            have - pre.data_len
        )));
    }
    if have > pre.data_len + trailer_len {
        return Err(Error::format(format!(
            "{} unexpected bytes after the end of the payload",
            have - pre.data_len - trailer_len
        )));
    }
    let (mut header, key) = match keyed_header {
        Some((h, key)) => (h, Some(key)),
        None => (header_of(header_text(header_bytes)?)?, None),
    };
    let auth = auth::check(header.auth.as_deref().map(RawValue::get), &pre)?;
    check_signature(buf, &pre, auth.as_ref(), verifier)?;
    // A payload encrypted whole: its real header is sealed at the end of the data section.
    let opened: String;
    let mut sealed_header_at = None;
    if let Some(cover) = header.sealed.take() {
        let (Some(key), Some(auth)) = (&key, &auth) else {
            return Err(Error::format(
                "the header is sealed but the payload is not authenticated",
            ));
        };
        let at = sealed::header_start(&header, &cover, data_start, pre.data_len)?;
        opened = sealed::open_header(&buf[at..at + cover.length as usize], &cover, key, auth)?;
        header = header_of(header_text(opened.as_bytes())?)?;
        if header.auth.is_some() || header.sealed.is_some() {
            return Err(Error::format(
                "a sealed header holds neither auth nor another sealed header",
            ));
        }
        if let Some(t) = header.tensors.iter().find(|t| !t.sealed) {
            return Err(Error::format(format!(
                "tensor {:?} is not sealed in a payload whose header is",
                t.name
            )));
        }
        sealed_header_at = Some(at);
    }
    if header.tensors.len() > MAX_TENSORS {
        return Err(Error::limit(
            Kind::Format,
            Limit::Tensors,
            header.tensors.len() as u64,
            MAX_TENSORS as u64,
        ));
    }
    if let Some(t) = header.tensors.iter().find(|t| t.sealed && key.is_none()) {
        return Err(Error::format(format!(
            "tensor {:?} is sealed but the payload is not authenticated",
            t.name
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
    // (A sealed tensor's framing is inside its ciphertext: it is proved once opened.)
    for e in &entries {
        if !e.pipeline.is_raw() && !e.sealed {
            e.pipeline
                .check_stored(
                    e.dtype,
                    &e.shape,
                    e.nbytes,
                    &buf[e.start..e.start + e.length],
                )
                .map_err(|err| err.in_tensor(&e.name))?;
        }
    }
    let mut names = std::collections::HashSet::with_capacity(entries.len());
    if let Some(e) = entries.iter().find(|e| !names.insert(e.name.as_str())) {
        return Err(Error::format(format!(
            "tensor name {:?} appears twice",
            e.name
        )));
    }
    // The tensors end the data section, or their padding meets the sealed header.
    let tensors_end = match sealed_header_at {
        Some(at) => (at - data_start) as u64,
        None => pre.data_len,
    };
    let expected = match sealed_header_at {
        Some(_) => super::preamble::align_up(min_offset),
        None => Some(min_offset),
    };
    if expected != Some(tensors_end) {
        return Err(Error::format(format!(
            "the tensors end at {min_offset}, which does not meet the end of the data \
             section's tensors at {tensors_end}"
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
        auth,
        key,
        sealed_header_at,
    })
}

/// The signature of a signed payload, which must verify whoever the reader trusts; and,
/// when the reader trusts only some signers, that it is signed by one of them.
fn check_signature(
    buf: &[u8],
    pre: &Preamble,
    auth: Option<&Auth>,
    verifier: &Verifier,
) -> Result<()> {
    let signer = auth.and_then(|a| a.signer);
    match (signer, verifier.trusted()) {
        (None, None) => return Ok(()),
        (None, Some(_)) => {
            return Err(Error::authentication(
                "payload is not signed, and trusted_keys accepts only signed payloads",
            ))
        }
        (Some(s), Some(trusted)) if !trusted.contains(&s) => {
            return Err(Error::authentication(format!(
                "payload signed by {}, which is not among the trusted keys",
                hex(&s)
            )))
        }
        _ => {}
    }
    let signer = signer.expect("matched above");
    let trailer = &buf[buf.len() - SIGNATURE_LEN..];
    signature::verify(&signer, &pre.header_hash, trailer)
}

impl Layout {
    /// What of the payload is encrypted.
    pub fn encrypted(&self) -> Encrypt {
        if self.sealed_header_at.is_some() {
            Encrypt::All
        } else if self.entries.iter().any(|e| e.sealed) {
            Encrypt::Tensors
        } else {
            Encrypt::Nothing
        }
    }

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
    pub(super) fn check_hash(&self, buf: &[u8], i: usize) -> Result<()> {
        let e = &self.entries[i];
        if hash(self.stored(buf, i)) != e.hash {
            return Err(Error::checksum(Checked::TensorBytes).in_tensor(&e.name));
        }
        self.check_raw_values(buf, i)
    }

    /// For a raw tensor, check the values the format restricts (bool: 0 or 1); O(bytes)
    /// for bool tensors, nothing for the others.
    pub fn check_raw_values(&self, buf: &[u8], i: usize) -> Result<()> {
        let e = &self.entries[i];
        if e.dtype == DType::Bool && e.is_stored_raw() {
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
            if copied || !e.is_stored_raw() {
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
            return Err(Error::limit(
                Kind::Format,
                Limit::DecodedBytes,
                total,
                limit,
            ));
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
        if let Some(at) = self.sealed_header_at {
            if buf[pos..at].iter().any(|&b| b != 0) {
                return Err(Error::integrity(
                    "padding before the sealed header is not zero: the payload is corrupt",
                ));
            }
        }
        Ok(())
    }

    /// Verify the checksums of the tensors `indices` (all when `None`), in parallel.
    /// Verifying all also checks that the alignment padding is zero, so that every
    /// byte of the payload is covered.
    pub fn verify(&self, buf: &[u8], indices: Option<&[usize]>) -> Result<()> {
        self.verify_where(buf, indices, |_| true)
    }

    /// [`Self::verify`], and for a selection also the alignment padding when `padding`:
    /// a payload verified in parts (to report progress) is covered as by one call.
    pub fn verify_padded(
        &self,
        buf: &[u8],
        indices: Option<&[usize]>,
        padding: bool,
    ) -> Result<()> {
        if padding && indices.is_some() {
            self.check_padding(buf)?;
        }
        self.verify(buf, indices)
    }

    /// What decoding the tensors `indices` (all when `None`) checks before it allocates:
    /// as [`Self::verify`], except sealed tensors, whose every block is authenticated as
    /// it is opened (a stronger check than their checksum, which would be a second pass).
    pub fn verify_before_decode(&self, buf: &[u8], indices: Option<&[usize]>) -> Result<()> {
        self.verify_where(buf, indices, |e| !e.sealed)
    }

    fn verify_where(
        &self,
        buf: &[u8],
        indices: Option<&[usize]>,
        hashed: impl Fn(&Entry) -> bool + Sync,
    ) -> Result<()> {
        let check = |i: usize| match hashed(&self.entries[i]) {
            true => self.check_hash(buf, i),
            false => Ok(()),
        };
        match indices {
            Some(ix) => ix.par_iter().try_for_each(|&i| check(i)),
            None => {
                self.check_padding(buf)?;
                (0..self.entries.len()).into_par_iter().try_for_each(check)
            }
        }
    }
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
