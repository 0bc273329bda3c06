//! Ed25519 signatures of payloads (FORMAT.md section 10, "Signature"): the signed
//! message is a fixed context followed by the header hash, which covers every tensor's
//! hash, so one signature covers the whole payload.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use super::keys::{Key, KEY_LEN};
use crate::error::{Error, Result};

/// Length of an Ed25519 public key (the header's `auth.signer`), in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of the signature trailer, in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// What precedes the header hash in the signed message (24 bytes).
pub const SIGNATURE_CONTEXT: &[u8; 24] = b"tensorwire 1 signature\0\0";

/// An Ed25519 public key: who signed a payload.
pub type PublicKey = [u8; PUBLIC_KEY_LEN];

/// The 56-byte message a payload's signature signs.
pub fn message(header_hash: &[u8; 32]) -> [u8; 56] {
    let mut m = [0u8; 56];
    m[..24].copy_from_slice(SIGNATURE_CONTEXT);
    m[24..].copy_from_slice(header_hash);
    m
}

/// A fresh random Ed25519 signing key (its 32-byte secret).
pub fn generate_signing_key() -> Result<Key> {
    let mut secret = [0u8; KEY_LEN];
    getrandom::fill(&mut secret)
        .map_err(|e| Error::input(format!("no randomness for a signing key: {e}")))?;
    Ok(secret)
}

/// The public key of the signing key `secret`.
pub fn public_key(secret: &Key) -> PublicKey {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// A signing key, held for as long as a payload is written (its secret is zeroed when
/// it is dropped, and never printed).
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    /// The signer of the 32-byte secret `secret`.
    pub fn new(secret: &Key) -> Signer {
        Signer {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// Its public key.
    pub fn public_key(&self) -> PublicKey {
        self.key.verifying_key().to_bytes()
    }

    /// The signature trailer of a payload whose header hash is `header_hash`.
    pub fn sign(&self, header_hash: &[u8; 32]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(&message(header_hash)).to_bytes()
    }
}

impl std::fmt::Debug for Signer {
    /// Names the signer by its public key only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ public: {} }}", hex(&self.public_key()))
    }
}

/// Lowercase hex of some bytes (public keys, nonces).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check the signature `trailer` by `signer` of the payload whose header hash is
/// `header_hash` (strict verification: no malleable or small-order encodings).
pub fn verify(signer: &PublicKey, header_hash: &[u8; 32], trailer: &[u8]) -> Result<()> {
    let failed = |why: &str| {
        Error::authentication(format!(
            "the signature by {} does not verify: {why}",
            hex(signer)
        ))
    };
    let key = VerifyingKey::from_bytes(signer)
        .map_err(|_| failed("the signer is not a valid public key"))?;
    let signature = Signature::from_slice(trailer).map_err(|_| failed("malformed signature"))?;
    key.verify_strict(&message(header_hash), &signature)
        .map_err(|_| failed("the payload was altered, or signed by another key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let secret = [5u8; 32];
        let signer = Signer::new(&secret);
        assert_eq!(signer.public_key(), public_key(&secret));
        let hash = [9u8; 32];
        let sig = signer.sign(&hash);
        verify(&signer.public_key(), &hash, &sig).unwrap();
        let mut other = hash;
        other[0] ^= 1;
        let e = verify(&signer.public_key(), &other, &sig).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Authentication);
        let stranger = public_key(&[6u8; 32]);
        assert!(verify(&stranger, &hash, &sig).is_err());
        assert!(verify(&signer.public_key(), &hash, &sig[..63]).is_err());
        assert_eq!(message(&hash).len(), 56);
        assert_ne!(
            generate_signing_key().unwrap(),
            generate_signing_key().unwrap()
        );
        let shown = format!("{signer:?}");
        assert!(
            shown.contains(&hex(&signer.public_key())) && !shown.contains(&hex(&secret)),
            "{shown}"
        );
    }
}
