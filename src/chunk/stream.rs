//! Streaming encode: a payload produced chunk by chunk, never whole.
//!
//! A [`ChunkStream`] cuts the payload that a [`Prepared`] would write, producing each
//! chunk's body straight from the tensors' memory (raw tensors) or from the codec
//! output (encoded ones), copying, checksumming (CRC-32) and hashing (blake3, for the
//! container's per-tensor hashes) each byte in one pass. Chunks that hold the data
//! section come first, in order; the chunks that hold the preamble and header come
//! last, once every tensor's hash is known. A [`super::reassemble::Reassembler`] accepts
//! chunks in any order, so this needs nothing from the receiver. The chunks are of
//! kind [`PayloadKind::Container`] with an all-zero digest (the content id is not
//! known when the first chunk leaves); the receiver verifies the container itself.

use super::auth::PieceKey;
use super::framing::{
    random_id, write_chunk, ChunkHeader, Geometry, PayloadId, PayloadKind, CHUNK_HEADER_LEN,
};
use crate::error::Result;
use crate::format::Prepared;
use crate::format::PREAMBLE_LEN;
use crate::memory::{copy_and_crc, copy_crc_and_hash};

/// One tensor's stored bytes within the payload.
struct Extent {
    /// Absolute offset of the first byte.
    start: u64,
    /// Index into `Prepared::stored`.
    tensor: usize,
}

/// The chunks of one payload, produced one at a time; see the module documentation.
pub struct ChunkStream<'a> {
    prepared: Prepared<'a>,
    payload_id: PayloadId,
    geometry: Geometry,
    key: Option<PieceKey>,
    data_start: u64,
    /// Chunks `0..head_chunks` overlap the preamble or header and are produced last.
    head_chunks: u32,
    /// Position in production order, `0..count`.
    next: u32,
    extents: Vec<Extent>,
    hashers: Vec<blake3::Hasher>,
    /// Preamble and header, once the data chunks are done.
    head: Option<Vec<u8>>,
}

impl<'a> ChunkStream<'a> {
    /// Cut the payload `prepared` describes into chunks of at most `max_bytes` bytes,
    /// each authenticated with `key` when one is given.
    pub fn new(
        prepared: Prepared<'a>,
        max_bytes: u64,
        payload_id: Option<PayloadId>,
        key: Option<PieceKey>,
    ) -> Result<Self> {
        let total = prepared.total_len() as u64;
        let geometry = Geometry::plan(total, max_bytes, key.is_some())?;
        let payload_id = match payload_id {
            Some(id) => id,
            None => random_id()?,
        };
        let data_start = (PREAMBLE_LEN + prepared.header_len) as u64;
        let head_chunks = data_start
            .div_ceil(geometry.piece)
            .min(geometry.count as u64) as u32;
        let extents = prepared
            .header
            .tensors
            .iter()
            .enumerate()
            .map(|(tensor, e)| Extent {
                start: data_start + e.offset,
                tensor,
            })
            .collect();
        let hashers = vec![blake3::Hasher::new(); prepared.stored.len()];
        let mut stream = ChunkStream {
            prepared,
            payload_id,
            geometry,
            key,
            data_start,
            head_chunks,
            next: 0,
            extents,
            hashers,
            head: None,
        };
        // The data bytes inside the head chunks are hashed now, so that every tensor's
        // hasher sees its bytes in order; they are copied when the head chunks are made.
        let head_end = (head_chunks as u64 * geometry.piece).min(total);
        if head_end > data_start {
            stream.visit(data_start, head_end, |piece, hasher| {
                if let (Piece::Tensor(src), Some(h)) = (piece, hasher) {
                    h.update(src);
                }
            });
        }
        Ok(stream)
    }

    /// The payload's id.
    pub fn payload_id(&self) -> PayloadId {
        self.payload_id
    }

    /// How the payload is cut.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Length of the whole payload.
    pub fn total_len(&self) -> u64 {
        self.geometry.total
    }

    /// Chunks not produced yet.
    pub fn remaining(&self) -> u32 {
        self.geometry.count - self.next
    }

    /// Index of the chunk produced at position `pos`: data chunks first, then head chunks.
    fn index_at(&self, pos: u32) -> u32 {
        let data_chunks = self.geometry.count - self.head_chunks;
        if pos < data_chunks {
            self.head_chunks + pos
        } else {
            pos - data_chunks
        }
    }

    /// Length of the next chunk, or `None` when all were produced.
    pub fn next_len(&self) -> Option<usize> {
        let authenticated = self.key.is_some();
        (self.next < self.geometry.count).then(|| {
            self.geometry
                .chunk_len(self.index_at(self.next), authenticated)
        })
    }

    /// Walk the payload bytes `start..end` (at or past the data section) as pieces:
    /// zero padding or tensor bytes, with the tensor's hasher.
    fn visit(
        &mut self,
        start: u64,
        end: u64,
        mut f: impl FnMut(Piece<'_>, Option<&mut blake3::Hasher>),
    ) {
        let mut pos = start;
        // First tensor that ends after `pos`.
        let mut k = self.extents.partition_point(|x| {
            x.start + self.prepared.stored[x.tensor].bytes().len() as u64 <= pos
        });
        while pos < end {
            let Some(x) = self.extents.get(k) else {
                unreachable!("the data section ends with the last tensor")
            };
            if pos < x.start {
                let n = (x.start.min(end) - pos) as usize;
                f(Piece::Zeros(n), None);
                pos += n as u64;
                continue;
            }
            let bytes = self.prepared.stored[x.tensor].bytes();
            let from = (pos - x.start) as usize;
            let to = ((end - x.start) as usize).min(bytes.len());
            f(
                Piece::Tensor(&bytes[from..to]),
                Some(&mut self.hashers[x.tensor]),
            );
            pos += (to - from) as u64;
            if to == bytes.len() {
                k += 1;
            }
        }
    }

    /// Write the next chunk into `out` (exactly [`Self::next_len`] bytes; every byte is
    /// written) and return its index.
    ///
    /// # Panics
    /// When every chunk was produced already, or `out` has the wrong length.
    pub fn write_next(&mut self, out: &mut [u8]) -> u32 {
        assert!(self.next < self.geometry.count, "every chunk was produced");
        let index = self.index_at(self.next);
        let is_head = index < self.head_chunks;
        if is_head && self.head.is_none() {
            let hashes: Vec<[u8; 32]> = self
                .hashers
                .iter()
                .map(|h| *h.finalize().as_bytes())
                .collect();
            let mut head = vec![0u8; self.data_start as usize];
            self.prepared.finish_header(&hashes, &mut head);
            self.head = Some(head);
        }
        self.next += 1;
        let (offset, len) = self.geometry.range(index);
        let header = ChunkHeader {
            kind: PayloadKind::Container,
            payload_id: self.payload_id,
            index,
            count: self.geometry.count,
            total: self.geometry.total,
            offset,
            body_len: len as u32,
            digest: [0; 32],
            authenticated: self.key.is_some(),
        };
        assert_eq!(
            out.len(),
            header.chunk_len(),
            "chunk buffer has the wrong size"
        );
        let end = offset + len as u64;
        // The body is filled below, outside `write_chunk`, because `visit` needs
        // `&mut self`; the CRC is computed over it in the same pass.
        let mut crc = crc32fast::Hasher::new();
        let body = &mut out[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + len];
        let mut at = 0usize;
        let mut pos = offset;
        if pos < self.data_start {
            let head = self.head.as_ref().expect("built above");
            let n = (self.data_start.min(end) - pos) as usize;
            let src = &head[pos as usize..pos as usize + n];
            copy_and_crc(src, &mut body[..n], &mut crc);
            at = n;
            pos += n as u64;
        }
        if pos < end {
            self.visit(pos, end, |piece, hasher| match piece {
                Piece::Zeros(n) => {
                    let dst = &mut body[at..at + n];
                    dst.fill(0);
                    crc.update(dst);
                    at += n;
                }
                Piece::Tensor(src) => {
                    let dst = &mut body[at..at + src.len()];
                    // Head chunks' data bytes were hashed in `new`.
                    let hasher = hasher.filter(|_| !is_head);
                    match hasher {
                        Some(h) => copy_crc_and_hash(src, dst, &mut crc, h),
                        None => copy_and_crc(src, dst, &mut crc),
                    }
                    at += src.len();
                }
            });
        }
        debug_assert_eq!(at, len);
        let body_crc = crc;
        write_chunk(&header, self.key.as_ref(), out, |_, crc| {
            crc.combine(&body_crc)
        });
        index
    }
}

/// A stretch of the data section.
enum Piece<'s> {
    /// Alignment padding.
    Zeros(usize),
    /// Stored bytes of a tensor.
    Tensor(&'s [u8]),
}

impl Iterator for ChunkStream<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut v = vec![0u8; self.next_len()?];
        self.write_next(&mut v);
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::fixtures::{container, with_prepared};
    use crate::chunk::{Limits, Reassembler};

    #[test]
    fn streamed_chunks_reassemble_to_the_encoded_payload() {
        for max_bytes in [89u64, 100, 150, 300, 1000, 4096, 100_000] {
            let (payload, _) = container(max_bytes);
            let ((total, chunks), _) = with_prepared(max_bytes, |prepared| {
                let stream = ChunkStream::new(prepared, max_bytes, None, None).unwrap();
                (stream.total_len(), stream.collect::<Vec<Vec<u8>>>())
            });
            assert_eq!(total, payload.len() as u64);
            assert!(chunks.iter().all(|c| c.len() as u64 <= max_bytes));
            let first = ChunkHeader::parse(&chunks[0]).unwrap();
            assert!(
                first.index > 0 || chunks.len() == 1,
                "data chunks come first"
            );
            let mut r = Reassembler::new(Limits::default()).unwrap();
            let mut done = None;
            for c in &chunks {
                done = done.or(r.add(c, 0.0).unwrap());
            }
            assert_eq!(done.as_deref(), Some(&payload[..]), "max_bytes={max_bytes}");
        }
    }
}
