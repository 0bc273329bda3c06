//! What a writer authenticates a payload with ([`Signing`]: a shared key, a signing key)
//! and what a reader accepts ([`Verifier`]: its shared keys by id, the signers it trusts).

use super::keys::{id_hex, Key, KeyId, Subkeys};
use super::signature::{hex, PublicKey, Signer};
use crate::error::{Error, Result};

/// Length of a payload's nonce, in bytes.
pub const NONCE_LEN: usize = 16;

/// How a writer authenticates a payload. With neither a key nor a signing key it writes
/// a plain payload. `created` (unix milliseconds) and `nonce` are chosen by the writer
/// (now, and 16 random bytes) unless given (tests, reproducible fixtures).
#[derive(Clone, Default)]
pub struct Signing {
    /// The shared key: the header hash becomes BLAKE3 keyed with its payload-MAC subkey.
    pub key: Option<Subkeys>,
    /// The signing key: the payload ends with an Ed25519 signature trailer.
    pub signer: Option<Signer>,
    /// Creation time in unix milliseconds; None: now.
    pub created: Option<u64>,
    /// The nonce; None: random.
    pub nonce: Option<[u8; NONCE_LEN]>,
}

impl Signing {
    /// A shared key (`key`) and/or a signing key's secret (`signing_key`).
    pub fn new(key: Option<&Key>, signing_key: Option<&Key>) -> Signing {
        Signing {
            key: key.map(Subkeys::derive),
            signer: signing_key.map(Signer::new),
            created: None,
            nonce: None,
        }
    }

    /// Whether it authenticates anything (else the payload is plain).
    pub fn is_used(&self) -> bool {
        self.key.is_some() || self.signer.is_some()
    }

    /// The creation time to write: the given one, or now.
    pub fn created_ms(&self) -> u64 {
        self.created.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        })
    }

    /// The nonce to write: the given one, or fresh random bytes.
    pub fn nonce_bytes(&self) -> Result<[u8; NONCE_LEN]> {
        if let Some(n) = self.nonce {
            return Ok(n);
        }
        let mut n = [0u8; NONCE_LEN];
        getrandom::fill(&mut n)
            .map_err(|e| Error::input(format!("no randomness for a payload nonce: {e}")))?;
        Ok(n)
    }
}

impl std::fmt::Debug for Signing {
    /// Names the keys by their id and public key only: secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("key_id", &self.key.as_ref().map(|k| id_hex(&k.id)))
            .field(
                "signer",
                &self.signer.as_ref().map(|s| hex(&s.public_key())),
            )
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// What a reader accepts. Without keys it refuses authenticated (keyed) payloads, whose
/// header hash it cannot check; with keys it refuses every payload that is not
/// authenticated with one of them. Without trusted signers it accepts any valid
/// signature (and unsigned payloads); with them only payloads signed by one of them.
#[derive(Clone, Default)]
pub struct Verifier {
    keys: Vec<Subkeys>,
    trusted: Option<Vec<PublicKey>>,
}

impl Verifier {
    /// Accept `key` (a payload names its key by id).
    pub fn add_key(&mut self, key: &Key) {
        let sub = Subkeys::derive(key);
        if self.key(&sub.id).is_none() {
            self.keys.push(sub);
        }
    }

    /// Accept signatures by `signer` (and, from now on, only signed payloads).
    pub fn trust(&mut self, signer: PublicKey) {
        self.trusted.get_or_insert_with(Vec::new).push(signer);
    }

    /// Require signatures by one of the signers `trusted` (none: no signed payload is
    /// accepted), even when the list is empty.
    pub fn require_signers(&mut self) {
        self.trusted.get_or_insert_with(Vec::new);
    }

    /// Whether any key was given (then only authenticated payloads are accepted).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The subkeys of the key with id `id`, if the reader has it.
    pub fn key(&self, id: &KeyId) -> Option<&Subkeys> {
        self.keys.iter().find(|k| &k.id == id)
    }

    /// The signers accepted, when only some are.
    pub fn trusted(&self) -> Option<&[PublicKey]> {
        self.trusted.as_deref()
    }
}

impl std::fmt::Debug for Verifier {
    /// Names the keys by their id only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| id_hex(&k.id)).collect();
        let trusted: Option<Vec<String>> = self
            .trusted
            .as_ref()
            .map(|t| t.iter().map(|k| hex(k)).collect());
        f.debug_struct("Verifier")
            .field("key_ids", &ids)
            .field("trusted", &trusted)
            .finish()
    }
}
