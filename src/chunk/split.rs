//! Cutting an in-memory payload into chunks: [`ChunkPlan`].

use super::auth::PieceKey;
use super::framing::{random_id, write_chunk, ChunkHeader, Geometry, PayloadId, PayloadKind};
use super::verify::PayloadChecks;
use crate::error::Result;
use crate::memory::{copy_and_crc, hash};
use crate::trust::Key;

/// How to cut one in-memory payload into chunks.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPlan {
    /// Payload id written into every chunk.
    pub payload_id: PayloadId,
    /// How the payload is verified.
    pub kind: PayloadKind,
    /// Whole-payload digest written into every chunk.
    pub digest: [u8; 32],
    /// Chunk sizes.
    pub geometry: Geometry,
    /// The key every chunk is tagged with, if any.
    pub key: Option<PieceKey>,
}

impl ChunkPlan {
    /// Plan the chunks of `payload`, each at most `max_bytes` long. A payload that
    /// parses as a tensorwire container (header checks only, O(header)) is sent as
    /// [`PayloadKind::Container`] with its content id as the digest; any other bytes as
    /// [`PayloadKind::Bytes`] with their blake3 (computed here, in parallel). With a
    /// `key` (the user key), every chunk is authenticated with its piece subkey (its
    /// body 16 bytes shorter, for the tag), and a payload authenticated with the same
    /// key is read as a container with it; one authenticated with another key, or
    /// without a `key` here, cannot be read, so it is sent as bytes.
    pub fn new(
        payload: &[u8],
        max_bytes: u64,
        payload_id: Option<PayloadId>,
        key: Option<&Key>,
    ) -> Result<Self> {
        let geometry = Geometry::plan(payload.len() as u64, max_bytes, key.is_some())?;
        let payload_id = match payload_id {
            Some(id) => id,
            None => random_id()?,
        };
        let checks = PayloadChecks::new(key.map_or(&[], std::slice::from_ref), None);
        let (kind, digest) = match checks.parse(payload) {
            Ok(Some(layout)) => (PayloadKind::Container, layout.content_id),
            Ok(None) | Err(_) => (PayloadKind::Bytes, hash(payload)),
        };
        Ok(ChunkPlan {
            payload_id,
            kind,
            digest,
            geometry,
            key: key.map(PieceKey::new),
        })
    }

    /// Length of chunk `i`, header and tag included.
    pub fn chunk_len(&self, i: u32) -> usize {
        self.geometry.chunk_len(i, self.key.is_some())
    }

    /// The header of chunk `i`.
    pub fn header(&self, i: u32) -> ChunkHeader {
        let (offset, len) = self.geometry.range(i);
        ChunkHeader {
            kind: self.kind,
            payload_id: self.payload_id,
            index: i,
            count: self.geometry.count,
            total: self.geometry.total,
            offset,
            body_len: len as u32,
            digest: self.digest,
            authenticated: self.key.is_some(),
        }
    }

    /// Write chunk `i` of `payload` (the bytes this plan was made for) into `out`, which
    /// must be exactly [`Self::chunk_len`] bytes; every byte is written.
    pub fn write(&self, payload: &[u8], i: u32, out: &mut [u8]) {
        let h = self.header(i);
        let start = h.offset as usize;
        let src = &payload[start..start + h.body_len as usize];
        write_chunk(&h, self.key.as_ref(), out, |body, crc| {
            copy_and_crc(src, body, crc)
        });
    }

    /// All chunks of `payload`, as new vectors (for tests and small payloads).
    pub fn to_vecs(&self, payload: &[u8]) -> Vec<Vec<u8>> {
        (0..self.geometry.count)
            .map(|i| {
                let mut v = vec![0u8; self.chunk_len(i)];
                self.write(payload, i, &mut v);
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::fixtures::{chunks_of, Rng};
    use crate::chunk::framing::{CHUNK_HEADER_LEN, CRC_AT};
    use crate::chunk::Reassembler;

    #[test]
    fn large_chunks_use_the_parallel_checksum() {
        let payload = Rng(5).bytes(5 << 20);
        let chunks = chunks_of(&payload, 2 << 20, 6);
        // The parallel CRC is the plain CRC-32 of the spec.
        let mut h = crc32fast::Hasher::new();
        h.update(&chunks[0][..CRC_AT]);
        h.update(&chunks[0][CHUNK_HEADER_LEN..]);
        assert_eq!(
            h.finalize().to_le_bytes(),
            chunks[0][CRC_AT..CHUNK_HEADER_LEN]
        );
    }

    #[test]
    fn empty_payload_is_one_chunk() {
        let chunks = chunks_of(b"", 100, 1);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), CHUNK_HEADER_LEN);
        let mut r = Reassembler::new(Default::default()).unwrap();
        assert_eq!(r.add(&chunks[0], 0.0).unwrap(), Some(vec![]));
    }

    #[test]
    fn max_bytes_too_small() {
        let e = ChunkPlan::new(b"abc", CHUNK_HEADER_LEN as u64, None, None).unwrap_err();
        assert!((e.kind() == crate::error::Kind::Input));
        assert!(e.to_string().contains("too small"), "{e}");
        assert!(ChunkPlan::new(b"abc", CHUNK_HEADER_LEN as u64 + 1, None, None).is_ok());
    }
}
