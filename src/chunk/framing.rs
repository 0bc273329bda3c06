//! Chunk framing: the header every chunk starts with, its CRC, and the geometry of
//! cutting a payload into chunks.
//!
//! Every chunk is an 88-byte header followed by a slice of the payload (its "body") and,
//! when the chunk is authenticated, a 16-byte tag ([`super::auth`]); `docs/FORMAT.md`,
//! "Chunk framing", is the specification. [`super::split`] cuts an
//! in-memory payload; [`super::stream`] cuts a payload while it is being encoded;
//! [`super::reassemble`] puts the chunks back together.

use super::auth::{PieceKey, TAG_LEN};
use crate::error::{Checked, ChunkAt, Error, Result};

/// The first four bytes of every chunk.
pub const CHUNK_MAGIC: [u8; 4] = *b"\x89TWC";
/// Version of the chunk framing written and read.
pub const CHUNK_VERSION: u8 = 1;
/// Size of the header that precedes every chunk's body.
pub const CHUNK_HEADER_LEN: usize = 88;
/// Offset of the CRC-32 field in the header; the CRC covers the bytes before it and the body.
pub(crate) const CRC_AT: usize = 84;
/// Header byte 6, bit 0: the chunk ends with a [`TAG_LEN`]-byte tag after its body.
pub const FLAG_AUTHENTICATED: u8 = 1;
/// Largest body of one chunk (the body length is a u32).
pub const MAX_BODY_LEN: u64 = u32::MAX as u64;
/// Most chunks one payload may be cut into (the index and count are u32).
pub const MAX_CHUNKS: u64 = u32::MAX as u64;
/// A payload id: 16 bytes chosen by the sender, random unless given.
pub type PayloadId = [u8; 16];

/// How a reassembled payload is verified (header byte 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// Any bytes; the digest is the blake3 of the whole payload.
    Bytes,
    /// A tensorwire container, verified by its own checksums; the digest is its content
    /// id (preamble bytes 32..64), or all zero when the sender did not know it yet.
    Container,
}

impl PayloadKind {
    fn code(self) -> u8 {
        match self {
            PayloadKind::Bytes => 0,
            PayloadKind::Container => 1,
        }
    }

    fn from_code(c: u8) -> Result<Self> {
        match c {
            0 => Ok(PayloadKind::Bytes),
            1 => Ok(PayloadKind::Container),
            _ => Err(Error::format(format!(
                "chunk has unknown payload kind {c} (this reader knows 0 and 1)"
            ))),
        }
    }

    /// The kind's name, as documented.
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Bytes => "bytes",
            PayloadKind::Container => "tensorwire",
        }
    }
}

/// Lowercase hex of a payload id.
pub fn id_hex(id: &PayloadId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random payload id.
pub fn random_id() -> Result<PayloadId> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| Error::input(format!("no randomness for a payload id: {e}")))?;
    Ok(id)
}

/// The decoded header of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// How the finished payload is verified.
    pub kind: PayloadKind,
    /// The payload this chunk belongs to.
    pub payload_id: PayloadId,
    /// Position of this chunk, `0..count`.
    pub index: u32,
    /// Number of chunks of the payload.
    pub count: u32,
    /// Length of the whole payload.
    pub total: u64,
    /// Where this chunk's body starts in the payload.
    pub offset: u64,
    /// Length of this chunk's body.
    pub body_len: u32,
    /// Whole-payload digest (see [`PayloadKind`]).
    pub digest: [u8; 32],
    /// Whether a tag follows the body (header byte 6, [`FLAG_AUTHENTICATED`]).
    pub authenticated: bool,
}

impl ChunkHeader {
    /// Serialise bytes `0..84` (everything but the CRC).
    fn fields(&self) -> [u8; CRC_AT] {
        let mut b = [0u8; CRC_AT];
        b[..4].copy_from_slice(&CHUNK_MAGIC);
        b[4] = CHUNK_VERSION;
        b[5] = self.kind.code();
        b[6] = if self.authenticated {
            FLAG_AUTHENTICATED
        } else {
            0
        };
        // 7 reserved, zero.
        b[8..24].copy_from_slice(&self.payload_id);
        b[24..28].copy_from_slice(&self.index.to_le_bytes());
        b[28..32].copy_from_slice(&self.count.to_le_bytes());
        b[32..40].copy_from_slice(&self.total.to_le_bytes());
        b[40..48].copy_from_slice(&self.offset.to_le_bytes());
        b[48..52].copy_from_slice(&self.body_len.to_le_bytes());
        b[52..84].copy_from_slice(&self.digest);
        b
    }

    /// Length of the whole chunk: header, body and tag if any.
    pub fn chunk_len(&self) -> usize {
        chunk_len(self.body_len as usize, self.authenticated)
    }

    /// The body of `chunk` (whose header this is, as [`ChunkHeader::parse`] accepted it).
    pub fn body<'c>(&self, chunk: &'c [u8]) -> &'c [u8] {
        &chunk[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + self.body_len as usize]
    }

    /// Parse the header of `chunk` and check what one chunk can show by itself: magic,
    /// version, flags, reserved byte, that the length matches the body length (and the
    /// tag, when authenticated), and that index, count,
    /// offset and lengths describe a valid piece of a payload ([`Geometry::of`]). The
    /// CRC is not checked here (see [`check_crc`]).
    pub fn parse(chunk: &[u8]) -> Result<ChunkHeader> {
        if chunk.len() < 4 || chunk[..4] != CHUNK_MAGIC {
            return Err(Error::format(
                "not a tensorwire chunk: the magic bytes are missing",
            ));
        }
        if chunk.len() < CHUNK_HEADER_LEN {
            return Err(Error::integrity(format!(
                "chunk truncated: {} bytes, the header alone needs {CHUNK_HEADER_LEN}",
                chunk.len()
            )));
        }
        if chunk[4] != CHUNK_VERSION {
            return Err(Error::format(format!(
                "unsupported chunk version {} (this reader reads version {CHUNK_VERSION})",
                chunk[4]
            )));
        }
        let kind = PayloadKind::from_code(chunk[5])?;
        if chunk[6] & !FLAG_AUTHENTICATED != 0 {
            return Err(Error::format(format!(
                "chunk flags {:#04x} hold unknown bits (this reader knows bit 0, authenticated)",
                chunk[6]
            )));
        }
        if chunk[7] != 0 {
            return Err(Error::format("reserved chunk header byte 7 is not zero"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(chunk[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(chunk[i..i + 8].try_into().expect("8 bytes"));
        let mut payload_id = [0u8; 16];
        payload_id.copy_from_slice(&chunk[8..24]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&chunk[52..84]);
        let h = ChunkHeader {
            kind,
            payload_id,
            index: u32_at(24),
            count: u32_at(28),
            total: u64_at(32),
            offset: u64_at(40),
            body_len: u32_at(48),
            digest,
            authenticated: chunk[6] & FLAG_AUTHENTICATED != 0,
        };
        let tag = if h.authenticated { TAG_LEN } else { 0 };
        let body = chunk.len() - CHUNK_HEADER_LEN;
        if body as u64 != h.body_len as u64 + tag as u64 {
            let tagged = if h.authenticated { " and a tag" } else { "" };
            return Err(Error::integrity(format!(
                "the header announces {} body bytes{tagged}, {} are present",
                h.body_len,
                body.saturating_sub(tag)
            ))
            .in_chunk(h.at()));
        }
        Geometry::of(&h)?;
        Ok(h)
    }

    /// Which chunk this is, for errors about it.
    pub(crate) fn at(&self) -> ChunkAt {
        ChunkAt {
            payload: self.payload_id,
            index: self.index,
            count: self.count,
        }
    }
}

/// The stored CRC-32 of a chunk and the one computed over its bytes.
fn crcs(chunk: &[u8], body: &[u8]) -> (u32, u32) {
    let stored = u32::from_le_bytes(chunk[CRC_AT..CHUNK_HEADER_LEN].try_into().expect("4"));
    let mut h = crc32fast::Hasher::new();
    h.update(&chunk[..CRC_AT]);
    crate::memory::crc(body, &mut h);
    (stored, h.finalize())
}

/// Check the CRC-32 of a chunk whose header [`ChunkHeader::parse`] accepted (it covers
/// header bytes `0..84` and the body, not the tag).
pub fn check_crc(chunk: &[u8], header: &ChunkHeader) -> Result<()> {
    let (stored, computed) = crcs(chunk, header.body(chunk));
    if stored != computed {
        return Err(crc_error(header, stored, computed));
    }
    Ok(())
}

pub(crate) fn crc_error(h: &ChunkHeader, stored: u32, computed: u32) -> Error {
    Error::checksum(Checked::Chunk { stored, computed }).in_chunk(h.at())
}

/// How a payload is cut: every chunk but the last has a body of `piece` bytes; chunk
/// `i` starts at `i * piece`; the last one ends at `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Length of the payload.
    pub total: u64,
    /// Body length of every chunk but the last (0 only for an empty payload).
    pub piece: u64,
    /// Number of chunks.
    pub count: u32,
}

impl Geometry {
    /// The geometry of cutting `total` bytes into chunks of at most `max_bytes` bytes,
    /// headers (and tags, when `authenticated`) included.
    pub fn plan(total: u64, max_bytes: u64, authenticated: bool) -> Result<Geometry> {
        let overhead = chunk_len(0, authenticated) as u64;
        let min = overhead + 1;
        if max_bytes < min {
            let tag = if authenticated {
                " and a 16-byte tag"
            } else {
                ""
            };
            return Err(Error::input(format!(
                "max_bytes={max_bytes} is too small: a chunk needs {CHUNK_HEADER_LEN} header bytes\
                 {tag} and at least one payload byte (at least {min})"
            )));
        }
        let piece = (max_bytes - overhead).min(MAX_BODY_LEN);
        if total == 0 {
            return Ok(Geometry {
                total,
                piece: 0,
                count: 1,
            });
        }
        let count = total.div_ceil(piece);
        if count > MAX_CHUNKS {
            return Err(Error::input(format!(
                "a payload of {total} bytes needs {count} chunks of {max_bytes} bytes, \
                 more than the limit of {MAX_CHUNKS}: use larger chunks"
            )));
        }
        Ok(Geometry {
            total,
            piece,
            count: count as u32,
        })
    }

    /// The geometry a single chunk header implies, after checking that its index,
    /// count, offset and body length fit one.
    pub fn of(h: &ChunkHeader) -> Result<Geometry> {
        let bad = |what: String| Error::format(what).in_chunk(h.at());
        if h.count == 0 {
            return Err(bad("the chunk count is zero".into()));
        }
        if h.index >= h.count {
            return Err(bad(format!(
                "index {} is not below the chunk count {}",
                h.index, h.count
            )));
        }
        let body = h.body_len as u64;
        let end = h
            .offset
            .checked_add(body)
            .filter(|&e| e <= h.total)
            .ok_or_else(|| {
                bad(format!(
                    "body at offset {} of {body} bytes runs past the payload's {} bytes",
                    h.offset, h.total
                ))
            })?;
        if h.total == 0 {
            if h.count != 1 || body != 0 {
                return Err(bad(
                    "an empty payload is one chunk with an empty body".into()
                ));
            }
            return Ok(Geometry {
                total: 0,
                piece: 0,
                count: 1,
            });
        }
        if body == 0 {
            return Err(bad("the body is empty".into()));
        }
        let index = h.index as u64;
        let piece = if index + 1 < h.count as u64 {
            if index.checked_mul(body) != Some(h.offset) {
                return Err(bad(format!(
                    "offset {} is not index * body length ({index} * {body})",
                    h.offset
                )));
            }
            body
        } else {
            if end != h.total {
                return Err(bad(format!(
                    "the last chunk ends at {end}, not at the payload's end {}",
                    h.total
                )));
            }
            match h.offset.checked_div(index) {
                None => body,
                Some(piece) if h.offset % index == 0 && body <= piece => piece,
                Some(_) => {
                    return Err(bad(format!(
                        "the last chunk's offset {} and length {body} fit no chunk size",
                        h.offset
                    )))
                }
            }
        };
        if h.total.div_ceil(piece) != h.count as u64 {
            return Err(bad(format!(
                "{} chunks of {piece} bytes do not make a payload of {} bytes",
                h.count, h.total
            )));
        }
        Ok(Geometry {
            total: h.total,
            piece,
            count: h.count,
        })
    }

    /// Offset and length of chunk `i`'s body.
    pub fn range(&self, i: u32) -> (u64, usize) {
        let start = i as u64 * self.piece;
        let len = self.piece.min(self.total - start);
        (start, len as usize)
    }

    /// Length of chunk `i`, header (and tag, when `authenticated`) included.
    pub fn chunk_len(&self, i: u32, authenticated: bool) -> usize {
        chunk_len(self.range(i).1, authenticated)
    }
}

/// Length of a chunk with a body of `body` bytes.
fn chunk_len(body: usize, authenticated: bool) -> usize {
    CHUNK_HEADER_LEN + body + if authenticated { TAG_LEN } else { 0 }
}

/// Writes one chunk: the header, then the body produced by `fill_body` (which is handed
/// the body's slice and a CRC hasher to feed with it, block by block, while it is hot
/// in cache), then the CRC, then the tag made with `key` (which must be given exactly
/// when the header says the chunk is authenticated).
pub(crate) fn write_chunk(
    header: &ChunkHeader,
    key: Option<&PieceKey>,
    out: &mut [u8],
    fill_body: impl FnOnce(&mut [u8], &mut crc32fast::Hasher),
) {
    assert_eq!(
        out.len(),
        header.chunk_len(),
        "chunk buffer has the wrong size"
    );
    assert_eq!(key.is_some(), header.authenticated, "a tag needs a key");
    let fields = header.fields();
    let (head, rest) = out.split_at_mut(CHUNK_HEADER_LEN);
    let (body, tag) = rest.split_at_mut(header.body_len as usize);
    head[..CRC_AT].copy_from_slice(&fields);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&fields);
    fill_body(body, &mut crc);
    head[CRC_AT..].copy_from_slice(&crc.finalize().to_le_bytes());
    if let Some(key) = key {
        tag.copy_from_slice(&key.tag(head, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::fixtures::{bad_chunks, chunks_of};

    #[test]
    fn header_errors() {
        let chunks = chunks_of(&[5u8; 1000], 300, 3);
        for (bytes, integrity, text) in bad_chunks(&chunks[1]) {
            let e = ChunkHeader::parse(&bytes)
                .and_then(|h| check_crc(&bytes, &h))
                .unwrap_err();
            assert_eq!(
                (e.kind() == crate::error::Kind::Integrity),
                integrity,
                "{e}"
            );
            assert!(e.to_string().contains(text), "{e:?} lacks {text:?}");
        }
        let c = &chunks[1];
        let h = ChunkHeader::parse(c).unwrap();
        check_crc(c, &h).unwrap();
        assert_eq!((h.index, h.count, h.offset, h.body_len), (1, 5, 212, 212));
    }
}
