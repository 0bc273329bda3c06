//! Authenticated chunks: the 16-byte tag after the body of a chunk whose header flags it
//! (`docs/FORMAT.md`, "Chunk framing"): the first 16 bytes of BLAKE3 keyed with the
//! piece-MAC subkey of a user key over header bytes `0..88` and the body.

use super::framing::{ChunkHeader, CHUNK_HEADER_LEN};
use crate::error::{Error, Result};
use crate::trust::{id_hex, Key, KeyId, Subkeys};

/// Length of a chunk's tag.
pub const TAG_LEN: usize = 16;

/// Bodies at least this long are hashed with blake3's multi-threaded tree mode.
const RAYON_TAG_BYTES: usize = 1 << 20;

/// The key that tags and checks chunks: the piece-MAC subkey of one user key.
#[derive(Clone, Copy)]
pub struct PieceKey {
    mac: Key,
    id: KeyId,
}

impl PieceKey {
    /// The piece key of the user key `key`.
    pub fn new(key: &Key) -> PieceKey {
        let sub = Subkeys::derive(key);
        PieceKey {
            mac: sub.piece_mac,
            id: sub.id,
        }
    }

    /// The id of the user key this was derived from.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The tag of a chunk with header bytes `head` (all 88, the CRC included) and `body`.
    pub fn tag(&self, head: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        debug_assert_eq!(head.len(), CHUNK_HEADER_LEN);
        let mut h = blake3::Hasher::new_keyed(&self.mac);
        h.update(head);
        if body.len() >= RAYON_TAG_BYTES {
            h.update_rayon(body);
        } else {
            h.update(body);
        }
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
        tag
    }

    /// Whether `chunk` (whose header this is) carries a tag made with this key; the
    /// comparison takes the same time wherever the tags differ.
    fn made(&self, chunk: &[u8], header: &ChunkHeader) -> bool {
        let end = CHUNK_HEADER_LEN + header.body_len as usize;
        let expected = self.tag(&chunk[..CHUNK_HEADER_LEN], header.body(chunk));
        let stored: &[u8; TAG_LEN] = chunk[end..end + TAG_LEN].try_into().expect("parsed");
        constant_time_eq::constant_time_eq_16(&expected, stored)
    }
}

impl std::fmt::Debug for PieceKey {
    /// Names the key by its id only: secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PieceKey {{ id: {} }}", id_hex(&self.id))
    }
}

/// Check that `chunk` (whose header [`ChunkHeader::parse`] accepted) is authenticated
/// with one of `keys`: an [`Error::authentication`] when it carries no tag, or a tag
/// made by none of them (another key, or altered since).
pub fn authenticate(keys: &[PieceKey], chunk: &[u8], header: &ChunkHeader) -> Result<()> {
    if !header.authenticated {
        return Err(Error::authentication(
            "chunk is not authenticated, and this reassembler accepts only chunks tagged \
             with its keys (send with key=)",
        )
        .in_chunk(header.at()));
    }
    if keys.iter().any(|k| k.made(chunk, header)) {
        return Ok(());
    }
    let ids: Vec<String> = keys.iter().map(|k| id_hex(&k.id)).collect();
    Err(Error::authentication(format!(
        "chunk's tag matches none of the keys with ids {} (altered, forged, or made with \
         another key)",
        ids.join(", ")
    ))
    .in_chunk(header.at()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_pinned_and_keyed() {
        let k = PieceKey::new(&[3u8; 32]);
        let head = [7u8; CHUNK_HEADER_LEN];
        let mut input = head.to_vec();
        input.extend_from_slice(b"body");
        let sub = blake3::derive_key("tensorwire 1 piece mac", &[3u8; 32]);
        let full = blake3::keyed_hash(&sub, &input);
        assert_eq!(k.tag(&head, b"body"), full.as_bytes()[..16]);
        assert_ne!(
            k.tag(&head, b"body"),
            PieceKey::new(&[4u8; 32]).tag(&head, b"body")
        );
        let big = vec![9u8; RAYON_TAG_BYTES + 5];
        let mut input = head.to_vec();
        input.extend_from_slice(&big);
        assert_eq!(
            k.tag(&head, &big),
            blake3::keyed_hash(&sub, &input).as_bytes()[..16]
        );
        let shown = format!("{k:?}");
        assert!(shown.starts_with("PieceKey { id: ") && shown.len() < 40);
    }
}
