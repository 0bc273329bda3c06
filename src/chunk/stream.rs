//! Streaming encode: a payload produced chunk by chunk, never whole.
//!
//! A [`ChunkStream`] cuts the payload that a [`Prepared`] would write, producing each
//! chunk's body straight from the tensors' memory (raw tensors) or from the codec
//! output (encoded ones), copying, checksumming (CRC-32) and hashing (blake3, for the
//! container's per-tensor hashes) each byte in one pass. Chunks that hold only tensors
//! come first, in order; the chunks that hold the head (preamble and header) or the
//! tail (sealed header, signature) come last, once every tensor's hash is known. A [`super::reassemble::Reassembler`] accepts
//! chunks in any order, so this needs nothing from the receiver. The chunks are of
//! kind [`PayloadKind::Container`] with an all-zero digest (the content id is not
//! known when the first chunk leaves); the receiver verifies the container itself.

use super::auth::PieceKey;
use super::framing::{
    random_id, write_chunk, ChunkHeader, Geometry, PayloadId, PayloadKind, CHUNK_HEADER_LEN,
};
use crate::error::Result;
use crate::format::Prepared;
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
    /// Where the head ends and the tail starts.
    head_end: u64,
    tail_start: u64,
    /// Chunks `0..head_chunks` overlap the head and chunks `late_from..count` the tail:
    /// they are produced last, after the chunks in between.
    head_chunks: u32,
    late_from: u32,
    /// Position in production order, `0..count`.
    next: u32,
    extents: Vec<Extent>,
    hashers: Vec<blake3::Hasher>,
    /// The head and the tail, once the chunks in between are done.
    ends: Option<(Vec<u8>, Vec<u8>)>,
}

impl<'a> ChunkStream<'a> {
    /// Cut the payload `prepared` describes into chunks of at most `max_bytes` bytes,
    /// each authenticated with `key` when one is given.
    pub fn new(
        mut prepared: Prepared<'a>,
        max_bytes: u64,
        payload_id: Option<PayloadId>,
        key: Option<PieceKey>,
    ) -> Result<Self> {
        prepared.seal_stored()?;
        let total = prepared.total_len() as u64;
        let geometry = Geometry::plan(total, max_bytes, key.is_some())?;
        let payload_id = match payload_id {
            Some(id) => id,
            None => random_id()?,
        };
        let head_end = prepared.head_len() as u64;
        let tail_start = prepared.tail_start() as u64;
        let head_chunks = head_end.div_ceil(geometry.piece).min(geometry.count as u64) as u32;
        let tail_first = if tail_start < total {
            (tail_start / geometry.piece) as u32
        } else {
            geometry.count
        };
        let late_from = tail_first.max(head_chunks);
        let extents = prepared
            .header
            .tensors
            .iter()
            .enumerate()
            .map(|(tensor, e)| Extent {
                start: head_end + e.offset,
                tensor,
            })
            .collect();
        let hashers = vec![blake3::Hasher::new(); prepared.stored.len()];
        let mut stream = ChunkStream {
            prepared,
            payload_id,
            geometry,
            key,
            head_end,
            tail_start,
            head_chunks,
            late_from,
            next: 0,
            extents,
            hashers,
            ends: None,
        };
        // The tensor bytes inside the head chunks are hashed now, so that every tensor's
        // hasher sees its bytes in order (those inside the tail chunks are hashed last);
        // they are copied when the head chunks are made.
        let hashed_to = (head_chunks as u64 * geometry.piece).min(tail_start);
        if hashed_to > head_end {
            stream.hash_range(head_end, hashed_to);
        }
        Ok(stream)
    }

    /// Feed the tensor bytes of `start..end` to their hashers.
    fn hash_range(&mut self, start: u64, end: u64) {
        self.visit(start, end, |piece, hasher| {
            if let (Piece::Tensor(src), Some(h)) = (piece, hasher) {
                h.update(src);
            }
        });
    }

    /// Whether chunk `index` is produced last (it overlaps the head or the tail).
    fn is_late(&self, index: u32) -> bool {
        index < self.head_chunks || index >= self.late_from
    }

    /// The head and the tail, made once every tensor's hash is known: the tensor bytes
    /// of the tail chunks are hashed first (they are each tensor's last bytes).
    fn finish(&mut self) -> Result<()> {
        let from = (self.late_from as u64 * self.geometry.piece).max(self.head_end);
        if from < self.tail_start {
            self.hash_range(from, self.tail_start);
        }
        let hashes: Vec<[u8; 32]> = self
            .hashers
            .iter()
            .map(|h| *h.finalize().as_bytes())
            .collect();
        let mut head = vec![0u8; self.head_end as usize];
        let mut tail = vec![0u8; (self.geometry.total - self.tail_start) as usize];
        self.prepared.finish(&hashes, &mut head, &mut tail)?;
        self.ends = Some((head, tail));
        Ok(())
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

    /// Index of the chunk produced at position `pos`: the chunks between the head and
    /// the tail first, then the head chunks, then the tail chunks.
    fn index_at(&self, pos: u32) -> u32 {
        let middle = self.late_from - self.head_chunks;
        if pos < middle {
            self.head_chunks + pos
        } else if pos - middle < self.head_chunks {
            pos - middle
        } else {
            pos + self.late_from - self.head_chunks - middle
        }
    }

    /// Index of the next chunk (not the next position: see [`Self::index_at`]), or
    /// `None` when all were produced.
    pub fn next_index(&self) -> Option<u32> {
        (self.next < self.geometry.count).then(|| self.index_at(self.next))
    }

    /// Length of the next chunk, or `None` when all were produced.
    pub fn next_len(&self) -> Option<usize> {
        let authenticated = self.key.is_some();
        self.next_index()
            .map(|i| self.geometry.chunk_len(i, authenticated))
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
                // Padding after the last tensor (before a sealed header).
                f(Piece::Zeros((end - pos) as usize), None);
                break;
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
    /// written) and return its index. Fails only when sealing the header fails.
    ///
    /// # Panics
    /// When every chunk was produced already, or `out` has the wrong length.
    pub fn write_next(&mut self, out: &mut [u8]) -> Result<u32> {
        assert!(self.next < self.geometry.count, "every chunk was produced");
        let index = self.index_at(self.next);
        let late = self.is_late(index);
        if late && self.ends.is_none() {
            self.finish()?;
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
        if pos < self.head_end {
            let (head, _) = self.ends.as_ref().expect("made above");
            let n = (self.head_end.min(end) - pos) as usize;
            let src = &head[pos as usize..pos as usize + n];
            copy_and_crc(src, &mut body[..n], &mut crc);
            at = n;
            pos += n as u64;
        }
        let middle_end = end.min(self.tail_start);
        if pos < middle_end {
            self.visit(pos, middle_end, |piece, hasher| match piece {
                Piece::Zeros(n) => {
                    let dst = &mut body[at..at + n];
                    dst.fill(0);
                    crc.update(dst);
                    at += n;
                }
                Piece::Tensor(src) => {
                    let dst = &mut body[at..at + src.len()];
                    // Late chunks' tensor bytes were hashed before the head was made.
                    match hasher.filter(|_| !late) {
                        Some(h) => copy_crc_and_hash(src, dst, &mut crc, h),
                        None => copy_and_crc(src, dst, &mut crc),
                    }
                    at += src.len();
                }
            });
            pos = middle_end;
        }
        if pos < end {
            let (_, tail) = self.ends.as_ref().expect("made above");
            let from = (pos - self.tail_start) as usize;
            let n = (end - pos) as usize;
            copy_and_crc(&tail[from..from + n], &mut body[at..at + n], &mut crc);
            at += n;
        }
        debug_assert_eq!(at, len);
        let body_crc = crc;
        write_chunk(&header, self.key.as_ref(), out, |_, crc| {
            crc.combine(&body_crc)
        });
        Ok(index)
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
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        let mut v = vec![0u8; self.next_len()?];
        Some(self.write_next(&mut v).map(|_| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::fixtures::{container, with_prepared};
    use crate::chunk::{Limits, PieceKey, Reassembler};

    #[test]
    fn streamed_chunks_reassemble_to_the_encoded_payload() {
        for max_bytes in [89u64, 100, 150, 300, 1000, 4096, 100_000] {
            let (payload, _) = container(max_bytes);
            let ((total, chunks), _) = with_prepared(max_bytes, |prepared| {
                let mut stream = ChunkStream::new(prepared, max_bytes, None, None).unwrap();
                let stream_total = stream.total_len();
                let mut chunks = Vec::new();
                while let Some(index) = stream.next_index() {
                    let mut c = vec![0u8; stream.next_len().unwrap()];
                    assert_eq!(stream.write_next(&mut c).unwrap(), index);
                    assert_eq!(ChunkHeader::parse(&c).unwrap().index, index);
                    chunks.push(c);
                }
                (stream_total, chunks)
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

    /// The payload the chunks carry, each body put at its offset.
    fn laid_out(chunks: &[Vec<u8>]) -> Vec<u8> {
        let first = ChunkHeader::parse(&chunks[0]).unwrap();
        let mut out = vec![0u8; first.total as usize];
        for c in chunks {
            let h = ChunkHeader::parse(c).unwrap();
            let body = &c[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + h.body_len as usize];
            out[h.offset as usize..][..body.len()].copy_from_slice(body);
        }
        out
    }

    #[test]
    fn signed_and_encrypted_payloads_stream_their_tail_last() {
        use crate::format::{prepare, EncodeOptions, Encrypt, TensorInput, TensorView};
        use crate::trust::Signing;
        let big: Vec<u8> = (0..600_000u32)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        let small: Vec<u8> = (0..999u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let input = |name, shape, data, codec| TensorInput {
            tensor: TensorView {
                name,
                dtype: crate::dtype::DType::F32,
                shape,
                data,
            },
            codec,
            base: None,
        };
        let inputs = [
            input("big", &[600_000][..], &big[..], "raw"),
            input("small", &[999][..], &small[..], "shuffle+zstd"),
        ];
        for (key, sk, encrypt) in [
            (None, Some([2u8; 32]), Encrypt::Nothing),
            (Some([1u8; 32]), None, Encrypt::Tensors),
            (Some([1u8; 32]), Some([2u8; 32]), Encrypt::All),
        ] {
            let mut signing = Signing::new(key.as_ref(), sk.as_ref());
            signing.nonce = Some([5; 16]);
            signing.created = Some(1);
            let opts = EncodeOptions {
                auth: Some(&signing),
                encrypt,
                ..Default::default()
            };
            let p = prepare(&inputs, &opts).unwrap();
            let mut blob = vec![0u8; p.total_len()];
            p.write_into(&mut blob).unwrap();
            for max_bytes in [300u64, 70_000, 1 << 20, 8 << 20] {
                let piece = key.as_ref().map(PieceKey::new);
                let p = prepare(&inputs, &opts).unwrap();
                let chunks: Vec<Vec<u8>> = ChunkStream::new(p, max_bytes, None, piece)
                    .unwrap()
                    .collect::<Result<_>>()
                    .unwrap();
                assert!(chunks.iter().all(|c| c.len() as u64 <= max_bytes));
                let last = ChunkHeader::parse(chunks.last().unwrap()).unwrap();
                let has_tail = sk.is_some() || encrypt == Encrypt::All;
                assert!(
                    !has_tail || last.offset + last.body_len as u64 == last.total,
                    "the tail chunk comes last"
                );
                assert!(laid_out(&chunks) == blob, "{encrypt:?} {max_bytes}");
                if key.is_none() {
                    let mut r = Reassembler::new(Limits::default()).unwrap();
                    let mut done = None;
                    for c in &chunks {
                        done = done.or(r.add(c, 0.0).unwrap());
                    }
                    assert!(done.as_deref() == Some(&blob[..]));
                }
            }
        }
    }
}
