//! Shared keys and what is derived from them: one subkey per role (the header MAC, the
//! MAC of chunk pieces, encryption) and the key id a receiver with several keys picks by.
//! Each subkey is BLAKE3's `derive_key` of the user key under its own context string, so
//! no two roles ever share a key.

use crate::error::{Error, Result};

/// Length of a shared key, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key id, in bytes (written as 16 lowercase hex digits).
pub const KEY_ID_LEN: usize = 8;

/// A shared key.
pub type Key = [u8; KEY_LEN];
/// The id of a shared key: what a payload names so a receiver can pick its key.
pub type KeyId = [u8; KEY_ID_LEN];

/// Context of the header MAC's subkey.
const PAYLOAD_MAC: &str = "tensorwire 1 payload mac";
/// Context of the chunk pieces' MAC subkey.
const PIECE_MAC: &str = "tensorwire 1 piece mac";
/// Context of the encryption subkey.
const ENCRYPTION: &str = "tensorwire 1 encryption";
/// Context of the key id.
const KEY_ID: &str = "tensorwire 1 key id";

/// The subkeys of one shared key, derived once.
#[derive(Clone)]
pub struct Subkeys {
    /// Keys the BLAKE3 header hash of an authenticated payload.
    pub payload_mac: Key,
    /// Keys the MAC of each chunk piece.
    pub piece_mac: Key,
    /// The XChaCha20-Poly1305 key of encrypted tensor data.
    pub encryption: Key,
    /// The key's id.
    pub id: KeyId,
}

impl Subkeys {
    /// Every subkey of `key`.
    pub fn derive(key: &Key) -> Subkeys {
        Subkeys {
            payload_mac: blake3::derive_key(PAYLOAD_MAC, key),
            piece_mac: blake3::derive_key(PIECE_MAC, key),
            encryption: blake3::derive_key(ENCRYPTION, key),
            id: key_id(key),
        }
    }
}

impl std::fmt::Debug for Subkeys {
    /// Names the key by its id only: secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subkeys {{ id: {} }}", id_hex(&self.id))
    }
}

/// The id of `key`: the first [`KEY_ID_LEN`] bytes of its derived key-id subkey.
pub fn key_id(key: &Key) -> KeyId {
    let full = blake3::derive_key(KEY_ID, key);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&full[..KEY_ID_LEN]);
    id
}

/// A key id as the header writes it: 16 lowercase hex digits.
pub fn id_hex(id: &KeyId) -> String {
    super::signature::hex(id)
}

/// A key id from its 16 lowercase hex digits, or None.
pub fn parse_id(s: &str) -> Option<KeyId> {
    unhex(s)
}

/// Exactly `N` bytes from their `2 * N` lowercase hex digits, or None.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A key from caller-given bytes, which must be exactly [`KEY_LEN`] long.
pub fn key_from(bytes: &[u8]) -> Result<Key> {
    bytes.try_into().map_err(|_| {
        Error::input(format!(
            "a key is {KEY_LEN} bytes, this one is {} (make one with os.urandom({KEY_LEN}))",
            bytes.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_differ_by_role_and_by_key() {
        let a = Subkeys::derive(&[1u8; 32]);
        let b = Subkeys::derive(&[2u8; 32]);
        let roles = [a.payload_mac, a.piece_mac, a.encryption];
        assert!(roles.iter().all(|k| k != &[1u8; 32]));
        assert_ne!(roles[0], roles[1]);
        assert_ne!(roles[1], roles[2]);
        assert_ne!(roles[0], roles[2]);
        assert_ne!(a.payload_mac, b.payload_mac);
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn the_key_id_is_pinned() {
        // Changing a context string changes every authenticated payload: pin one value.
        let id = key_id(&[0u8; 32]);
        let expected = &blake3::derive_key("tensorwire 1 key id", &[0u8; 32])[..8];
        assert_eq!(&id[..], expected);
        assert_eq!(parse_id(&id_hex(&id)), Some(id));
        assert_eq!(parse_id("0123456789ABCDEF"), None);
        assert_eq!(parse_id("0123456789abcde"), None);
    }

    #[test]
    fn keys_are_exactly_32_bytes_and_never_printed() {
        assert!(key_from(&[0u8; 31]).is_err());
        assert!(key_from(&[0u8; 33]).is_err());
        assert_eq!(key_from(&[7u8; 32]).unwrap(), [7u8; 32]);
        let shown = format!("{:?}", Subkeys::derive(&[7u8; 32]));
        assert!(
            shown.starts_with("Subkeys { id: ") && shown.len() < 40,
            "{shown}"
        );
    }
}
