//! Writing a payload: [`prepare`] validates the inputs, runs every non-raw codec (in
//! parallel) and lays the payload out; [`Prepared::write_into`] then copies and hashes
//! the tensors in one pass straight into the caller's output buffer, and
//! [`Prepared::write_to`] streams them to a file.

use std::borrow::Cow;
use std::io::{Seek, SeekFrom, Write};

use rayon::prelude::*;
use serde_json::value::RawValue;

use super::auth::Auth;
use super::header::{validate_metadata, Header, TensorEntry, MAX_NAME_LEN, MAX_TENSORS};
use super::ids::{hex32, parse_hex32};
use super::preamble::{
    align_up, Preamble, ALIGN, PREAMBLE_LEN, VERSION_MINOR, VERSION_MINOR_TRUST,
};
use super::TensorView;
use crate::codec::Pipeline;
use crate::error::{Error, Kind, Limit, Result};
use crate::memory::{copy_and_hash, hash, nbytes};
use crate::trust::{Signer, Signing, Subkeys, SIGNATURE_LEN};

/// One tensor handed to [`prepare`]: the tensor, and how to encode it.
#[derive(Debug, Clone, Copy)]
pub struct TensorInput<'a> {
    /// The tensor (its name unique among the inputs).
    pub tensor: TensorView<'a>,
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
    /// How the payload is authenticated and signed (FORMAT.md section 10); None, or
    /// one that uses nothing: a plain payload.
    pub auth: Option<&'a Signing>,
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
    /// The shared key's subkeys, when the header hash is keyed.
    key: Option<Subkeys>,
    /// The signing key, when the payload is signed.
    signer: Option<Signer>,
    /// The signature trailer, once [`Self::finish_header`] made it.
    signature: Option<[u8; SIGNATURE_LEN]>,
}

/// Validate the inputs, run their codecs in parallel, and lay the payload out.
pub fn prepare<'a>(inputs: &[TensorInput<'a>], opts: &EncodeOptions<'_>) -> Result<Prepared<'a>> {
    if inputs.len() > MAX_TENSORS {
        return Err(Error::limit(
            Kind::Input,
            Limit::Tensors,
            inputs.len() as u64,
            MAX_TENSORS as u64,
        ));
    }
    let mut names = std::collections::HashSet::with_capacity(inputs.len());
    for t in inputs.iter().map(|input| &input.tensor) {
        if !names.insert(t.name) {
            return Err(Error::input(format!(
                "tensor name {:?} appears twice",
                t.name
            )));
        }
        if t.name.len() > MAX_NAME_LEN {
            return Err(Error::limit(
                Kind::Input,
                Limit::NameLen,
                t.name.len() as u64,
                MAX_NAME_LEN as u64,
            ));
        }
        let expected = nbytes(t.dtype, t.shape).ok_or_else(|| {
            Error::input(format!("shape {:?} is too large", t.shape)).in_tensor(t.name)
        })?;
        if t.data.len() != expected {
            return Err(Error::input(format!(
                "{} bytes given, shape {:?} of {} needs {expected}",
                t.data.len(),
                t.shape,
                t.dtype
            ))
            .in_tensor(t.name));
        }
    }
    let structure = match opts.structure {
        Some(s) => {
            super::structure::validate(s, inputs.len()).map_err(|e| e.with_kind(Kind::Input))?;
            Some(RawValue::from_string(s.to_owned()).expect("validated JSON"))
        }
        None => None,
    };
    let metadata = match opts.metadata {
        Some(m) => {
            validate_metadata(m).map_err(|e| e.with_kind(Kind::Input))?;
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
        .map(|input| {
            let t = &input.tensor;
            let pipeline = Pipeline::parse(input.codec)
                .and_then(|p| p.resolve(t.dtype, t.data))
                .map_err(|e| e.in_tensor(t.name))?;
            if pipeline.is_raw() {
                return Ok((pipeline, Stored::Borrowed(t.data)));
            }
            pipeline.check(t.dtype).map_err(|e| e.in_tensor(t.name))?;
            if pipeline.needs_base() && input.base.is_none() {
                return Err(
                    Error::codec(format!("codec {pipeline} needs a base tensor")).in_tensor(t.name),
                );
            }
            let bytes = pipeline
                .encode(t.dtype, t.shape, t.data, input.base)
                .map_err(|e| e.in_tensor(t.name))?;
            Ok((pipeline, Stored::Encoded(bytes)))
        })
        .collect::<Result<_>>()?;

    let mut offset = 0u64;
    let mut tensors = Vec::with_capacity(inputs.len());
    let mut stored = Vec::with_capacity(inputs.len());
    for (t, (pipeline, s)) in inputs.iter().map(|input| &input.tensor).zip(encoded) {
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
    let signing = opts.auth.filter(|s| s.is_used());
    let auth = match signing {
        Some(s) => {
            let auth = Auth {
                key_id: s.key.as_ref().map(|k| k.id),
                created: s.created_ms(),
                nonce: s.nonce_bytes()?,
                signer: s.signer.as_ref().map(Signer::public_key),
            };
            Some(RawValue::from_string(auth.to_json()).expect("valid JSON"))
        }
        None => None,
    };
    let header = Header {
        tensors,
        structure,
        metadata,
        base: opts.base_id.map(str::to_owned),
        auth,
    };
    let header_len = align_up(serialize(&header).len() as u64).expect("small") as usize;
    Ok(Prepared {
        header,
        stored,
        header_len,
        data_len,
        key: signing.and_then(|s| s.key.clone()),
        signer: signing.and_then(|s| s.signer.clone()),
        signature: None,
    })
}

fn serialize(header: &Header) -> Vec<u8> {
    serde_json::to_vec(header).expect("header serialises")
}

impl Prepared<'_> {
    /// Total size of the payload in bytes (the signature trailer included).
    pub fn total_len(&self) -> usize {
        PREAMBLE_LEN + self.header_len + self.data_len as usize + self.trailer_len()
    }

    /// Length of the signature trailer after the data section: 64 when signed, else 0.
    pub fn trailer_len(&self) -> usize {
        if self.signer.is_some() {
            SIGNATURE_LEN
        } else {
            0
        }
    }

    /// The signature trailer, once [`Self::finish_header`] wrote the header (None for
    /// an unsigned payload).
    pub fn trailer(&self) -> Option<&[u8; SIGNATURE_LEN]> {
        self.signature.as_ref()
    }

    /// Write the header into `out[..PREAMBLE_LEN + header_len]` now that the hashes are
    /// known (keyed, when the payload is authenticated), and sign it when it is signed
    /// (see [`Self::trailer`]).
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
        let (keyed, signed) = (self.key.is_some(), self.signer.is_some());
        let mut preamble = Preamble {
            minor: if keyed || signed {
                VERSION_MINOR_TRUST
            } else {
                VERSION_MINOR
            },
            keyed,
            signed,
            header_len: self.header_len as u64,
            data_len: self.data_len,
            header_hash: [0; 32],
        };
        let mut h = match &self.key {
            Some(k) => blake3::Hasher::new_keyed(&k.payload_mac),
            None => blake3::Hasher::new(),
        };
        h.update(&preamble.fixed_bytes());
        h.update(header);
        preamble.header_hash = *h.finalize().as_bytes();
        pre.copy_from_slice(&preamble.to_bytes());
        self.signature = self.signer.as_ref().map(|s| s.sign(&preamble.header_hash));
    }

    /// Write the whole payload into `out`, which must be exactly [`Self::total_len`]
    /// bytes and may be uninitialised garbage: every byte is written.
    pub fn write_into(mut self, out: &mut [u8]) {
        assert_eq!(
            out.len(),
            self.total_len(),
            "output buffer has the wrong size"
        );
        let trailer_at = out.len() - self.trailer_len();
        let (out, trailer) = out.split_at_mut(trailer_at);
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
        if let Some(sig) = self.signature {
            trailer.copy_from_slice(&sig);
        }
    }

    /// Stream the payload to `w` (a file): data first, then the signature trailer (when
    /// signed) after it, then the header at the start.
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
        if let Some(sig) = self.signature {
            w.write_all(&sig)
                .map_err(io("writing the signature trailer"))?;
        }
        w.seek(SeekFrom::Start(0))
            .map_err(io("seeking to the start"))?;
        w.write_all(&head).map_err(io("writing the header"))?;
        w.flush().map_err(io("flushing"))?;
        Ok(())
    }
}
