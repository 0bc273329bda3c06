//! Writing a payload: [`prepare`] validates the inputs, runs every non-raw codec (in
//! parallel) and lays the payload out; [`Prepared::write_into`] then copies (or seals)
//! and hashes the tensors in one pass straight into the caller's output buffer, and
//! [`Prepared::write_to`] streams them to a file.
//!
//! A payload has three parts a writer fills at different times: the *head* (preamble
//! and header, known once every tensor's hash is), the *body* (the tensors and their
//! padding, written first) and the *tail* (for a payload encrypted whole, its sealed
//! header; for a signed one, the signature), known last.

use std::borrow::Cow;
use std::io::{Seek, SeekFrom, Write};

use rayon::prelude::*;
use serde_json::value::RawValue;

use super::auth::Auth;
use super::header::SealedHeader;
use super::header::{validate_metadata, Header, TensorEntry, MAX_NAME_LEN, MAX_TENSORS};
use super::ids::{hex32, parse_hex32};
use super::preamble::{
    align_up, Preamble, ALIGN, PREAMBLE_LEN, VERSION_MINOR, VERSION_MINOR_TRUST,
};
use super::TensorView;
use crate::codec::Pipeline;
use crate::error::{Error, Kind, Limit, Result};
use crate::memory::{copy_and_hash, hash, nbytes};
use crate::trust::SIGNATURE_LEN;
use crate::trust::{seal_into, sealed_len, Key, PayloadNonce, Signer, Signing, Subkeys};

/// The stream index a payload encrypted whole seals its real header under (tensors use
/// their own index, below [`MAX_TENSORS`]).
pub const SEALED_HEADER_INDEX: u32 = u32::MAX;

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
    /// What is encrypted (needs a shared key in `auth`).
    pub encrypt: Encrypt,
}

/// What of a payload is encrypted (FORMAT.md section 10, "Encryption"), with the
/// encryption subkey of the payload's shared key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Encrypt {
    /// Nothing.
    #[default]
    Nothing,
    /// Every tensor's stored bytes (after its codec).
    Tensors,
    /// The tensors, and the header too: names, dtypes, shapes, codecs, structure,
    /// metadata and base id. What stays visible is the preamble and the `auth` object.
    All,
}

impl Encrypt {
    /// The name the Python API and the CLI use: None, "tensors" or "all".
    pub fn name(self) -> Option<&'static str> {
        match self {
            Encrypt::Nothing => None,
            Encrypt::Tensors => Some("tensors"),
            Encrypt::All => Some("all"),
        }
    }
}

/// The encryption of a payload being written: the subkey, and the payload's nonce.
#[derive(Clone)]
struct Sealing {
    key: Key,
    nonce: PayloadNonce,
    /// Whether `Prepared::stored` still holds plaintext (sealed as it is written).
    pending: bool,
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
    /// The header that lists the tensors (sealed into the tail when the payload is
    /// encrypted whole).
    pub(crate) header: Header<'a>,
    /// The visible header of a payload encrypted whole.
    cover: Option<Header<'a>>,
    pub(crate) stored: Vec<Stored<'a>>,
    pub(crate) header_len: usize,
    pub(crate) data_len: u64,
    /// The encryption, when the payload is encrypted.
    sealing: Option<Sealing>,
    /// The shared key's subkeys, when the header hash is keyed.
    key: Option<Subkeys>,
    /// The signing key, when the payload is signed.
    signer: Option<Signer>,
}

/// What [`check`] made of the payload-wide options.
pub(crate) struct Checked<'o> {
    structure: Option<Box<RawValue>>,
    metadata: Option<Box<RawValue>>,
    signing: Option<&'o Signing>,
    shared_key: Option<&'o Subkeys>,
    sealed: bool,
}

/// Validate the inputs, run their codecs in parallel, and lay the payload out.
pub fn prepare<'a>(inputs: &[TensorInput<'a>], opts: &EncodeOptions<'_>) -> Result<Prepared<'a>> {
    let checked = check(inputs, opts)?;
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

    let (pipelines, stored): (Vec<Pipeline>, Vec<Stored<'a>>) = encoded.into_iter().unzip();
    let lengths: Vec<usize> = stored.iter().map(|s| s.bytes().len()).collect();
    let mut prepared = lay_out(inputs, opts, checked, pipelines, &lengths)?;
    prepared.stored = stored;
    Ok(prepared)
}

/// Validate the tensors (names, sizes) and the payload-wide options.
pub(crate) fn check<'o>(
    inputs: &[TensorInput<'_>],
    opts: &EncodeOptions<'o>,
) -> Result<Checked<'o>> {
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

    let signing = opts.auth.filter(|s| s.is_used());
    let shared_key = signing.and_then(|s| s.key.as_ref());
    if opts.encrypt != Encrypt::Nothing && shared_key.is_none() {
        return Err(Error::input(
            "encrypt needs key=: tensors are encrypted with a subkey of the shared key",
        ));
    }
    let sealed = opts.encrypt != Encrypt::Nothing;
    Ok(Checked {
        structure,
        metadata,
        signing,
        shared_key,
        sealed,
    })
}

/// The payload's layout for tensors stored under `pipelines` in `lengths` bytes each
/// (before sealing); its `stored` is left for the caller to fill.
pub(crate) fn lay_out<'a>(
    inputs: &[TensorInput<'a>],
    opts: &EncodeOptions<'_>,
    checked: Checked<'_>,
    pipelines: Vec<Pipeline>,
    lengths: &[usize],
) -> Result<Prepared<'a>> {
    let Checked {
        structure,
        metadata,
        signing,
        shared_key,
        sealed,
    } = checked;
    let mut offset = 0u64;
    let mut tensors = Vec::with_capacity(inputs.len());
    let tensor_inputs = inputs.iter().map(|input| &input.tensor);
    for ((t, pipeline), &len) in tensor_inputs.zip(pipelines).zip(lengths) {
        let length = if sealed {
            sealed_len(len).ok_or_else(|| {
                Error::input(format!("{len} bytes are too many to seal")).in_tensor(t.name)
            })? as u64
        } else {
            len as u64
        };
        tensors.push(TensorEntry {
            name: Cow::Borrowed(t.name),
            dtype: Cow::Borrowed(t.dtype.name()),
            shape: t.shape.to_vec(),
            codec: Cow::Owned(pipeline.to_string()),
            offset,
            length,
            hash: Cow::Owned(hex32(&[0; 32])),
            sealed,
        });
        offset = align_up(offset + length).expect("payload below 2^64 bytes");
    }
    // The data section ends at the last tensor's end, not its padding (or, encrypted
    // whole, with the sealed header after the tensors' padding).
    let tensors_end = tensors.last().map_or(0, |t| t.offset + t.length);
    let (auth, nonce) = match signing {
        Some(s) => {
            let auth = Auth {
                key_id: s.key.as_ref().map(|k| k.id),
                created: s.created_ms(),
                nonce: s.nonce_bytes()?,
                signer: s.signer.as_ref().map(Signer::public_key),
            };
            let json = RawValue::from_string(auth.to_json()).expect("valid JSON");
            (Some(json), auth.nonce)
        }
        None => (None, [0; 16]),
    };
    let mut header = Header {
        tensors,
        structure,
        metadata,
        base: opts.base_id.map(str::to_owned),
        auth: None,
        sealed: None,
    };
    let (cover, data_len) = if opts.encrypt == Encrypt::All {
        // Hashes are fixed-width hex, so the real header's length is known now.
        let inner = sealed_len(serialize(&header).len())
            .ok_or_else(|| Error::input("the header is too long to seal"))?;
        let at = align_up(tensors_end).expect("payload below 2^64 bytes");
        let cover = Header {
            tensors: Vec::new(),
            structure: None,
            metadata: None,
            base: None,
            auth,
            sealed: Some(SealedHeader {
                length: inner as u64,
                hash: Cow::Owned(hex32(&[0; 32])),
            }),
        };
        (Some(cover), at + inner as u64)
    } else {
        header.auth = auth;
        (None, tensors_end)
    };
    let visible = cover.as_ref().unwrap_or(&header);
    let header_len = align_up(serialize(visible).len() as u64).expect("small") as usize;
    Ok(Prepared {
        header,
        cover,
        stored: Vec::new(),
        header_len,
        data_len,
        key: signing.and_then(|s| s.key.clone()),
        signer: signing.and_then(|s| s.signer.clone()),
        sealing: shared_key.filter(|_| sealed).map(|k| Sealing {
            key: k.encryption,
            nonce,
            pending: true,
        }),
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

    /// Length of the head: the preamble and the header.
    pub fn head_len(&self) -> usize {
        PREAMBLE_LEN + self.header_len
    }

    /// Offset of the tail in the payload: the sealed header of a payload encrypted
    /// whole, then the signature trailer of a signed one. Everything between the head
    /// and the tail is tensors and zero padding.
    pub fn tail_start(&self) -> usize {
        self.total_len() - self.trailer_len() - self.sealed_header_len()
    }

    /// Length of the sealed header, for a payload encrypted whole (else 0).
    fn sealed_header_len(&self) -> usize {
        self.cover
            .as_ref()
            .and_then(|c| c.sealed.as_ref())
            .map_or(0, |s| s.length as usize)
    }

    /// Length of the signature trailer after the data section: 64 when signed, else 0.
    pub fn trailer_len(&self) -> usize {
        if self.signer.is_some() {
            SIGNATURE_LEN
        } else {
            0
        }
    }

    /// Seal every tensor's stored bytes now (in parallel), for writers that read
    /// [`Self::stored`] piece by piece; [`Self::write_into`] seals straight into its
    /// output instead. Does nothing when the payload is not encrypted.
    pub(crate) fn seal_stored(&mut self) -> Result<()> {
        let Some(sealing) = self.sealing.as_mut().filter(|s| s.pending) else {
            return Ok(());
        };
        let (key, nonce) = (sealing.key, sealing.nonce);
        let sealed: Vec<Vec<u8>> = self
            .stored
            .par_iter()
            .zip(&self.header.tensors)
            .enumerate()
            .map(|(i, (s, entry))| {
                let mut out = crate::memory::try_zeroed(entry.length as usize, "a sealed tensor")?;
                seal_into(&key, &nonce, i as u32, s.bytes(), &mut out)?;
                Ok(out)
            })
            .collect::<Result<_>>()?;
        self.stored = sealed.into_iter().map(Stored::Encoded).collect();
        sealing.pending = false;
        Ok(())
    }

    /// Write the head (`head`: [`Self::head_len`] bytes) and the tail (`tail`: from
    /// [`Self::tail_start`] to the end) now that the tensors' hashes (of their stored,
    /// sealed when encrypted, bytes) are known: the sealed header, the header, its hash
    /// (keyed when the payload is authenticated), and the signature.
    pub(crate) fn finish(
        &mut self,
        hashes: &[[u8; 32]],
        head: &mut [u8],
        tail: &mut [u8],
    ) -> Result<()> {
        for (entry, h) in self.header.tensors.iter_mut().zip(hashes) {
            entry.hash = Cow::Owned(hex32(h));
        }
        let (sealed_header, signature) = tail.split_at_mut(self.sealed_header_len());
        if let Some(cover) = self.cover.as_mut() {
            let sealing = self.sealing.as_ref().expect("encrypted whole");
            let inner = serialize(&self.header);
            seal_into(
                &sealing.key,
                &sealing.nonce,
                SEALED_HEADER_INDEX,
                &inner,
                sealed_header,
            )?;
            let s = cover
                .sealed
                .as_mut()
                .expect("a cover names its sealed header");
            s.hash = Cow::Owned(hex32(&hash(sealed_header)));
        }
        let json = serialize(self.cover.as_ref().unwrap_or(&self.header));
        assert!(
            json.len() <= self.header_len,
            "fixed-width hashes keep the length"
        );
        let (pre, rest) = head.split_at_mut(PREAMBLE_LEN);
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
        if let Some(s) = &self.signer {
            signature.copy_from_slice(&s.sign(&preamble.header_hash));
        }
        Ok(())
    }

    /// Write the whole payload into `out`, which must be exactly [`Self::total_len`]
    /// bytes and may be uninitialised garbage: every byte is written. Encrypted tensors
    /// are sealed straight from their bytes into `out`.
    pub fn write_into(mut self, out: &mut [u8]) -> Result<()> {
        assert_eq!(
            out.len(),
            self.total_len(),
            "output buffer has the wrong size"
        );
        let (out, tail) = out.split_at_mut(self.tail_start());
        let (head, mut data) = out.split_at_mut(self.head_len());
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
        // Up to the sealed header of a payload encrypted whole.
        data.fill(0);
        let sealing = self.sealing.as_ref().filter(|s| s.pending);
        let hashes: Vec<[u8; 32]> = jobs
            .into_par_iter()
            .enumerate()
            .map(|(i, (dst, src))| match sealing {
                Some(s) => {
                    seal_into(&s.key, &s.nonce, i as u32, src, dst)?;
                    Ok(hash(dst))
                }
                None => Ok(copy_and_hash(src, dst)),
            })
            .collect::<Result<_>>()?;
        self.finish(&hashes, head, tail)
    }

    /// Stream the payload to `w` (a file): the tensors first, then the tail, then the
    /// head at the start. Raw tensors are written straight from the caller's memory,
    /// never copied whole (encrypted ones are sealed first).
    pub fn write_to<W: Write + Seek>(mut self, w: &mut W) -> Result<()> {
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| Error::Io { context, source }
        };
        self.seal_stored()?;
        let hashes: Vec<[u8; 32]> = self.stored.par_iter().map(|s| hash(s.bytes())).collect();
        let data_start = self.head_len() as u64;
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
        let tail_at = (self.tail_start() - self.head_len()) as u64;
        w.write_all(&zeros[..(tail_at - pos) as usize])
            .map_err(io("writing padding"))?;
        let mut head = vec![0u8; data_start as usize];
        let mut tail = vec![0u8; self.total_len() - self.tail_start()];
        self.finish(&hashes, &mut head, &mut tail)?;
        w.write_all(&tail).map_err(io("writing the tail"))?;
        w.seek(SeekFrom::Start(0))
            .map_err(io("seeking to the start"))?;
        w.write_all(&head).map_err(io("writing the header"))?;
        w.flush().map_err(io("flushing"))?;
        Ok(())
    }
}
