//! The header's `auth` object (FORMAT.md section 10): key id, creation time, nonce and
//! signer of an authenticated or signed payload; written by [`super::write`], checked by
//! [`super::read`] against the preamble's `auth` byte and `signed` flag.

use serde::{Deserialize, Serialize};

use super::preamble::Preamble;
use crate::error::{Error, Result};
use crate::trust::keys::unhex;
use crate::trust::signature::hex;
use crate::trust::{parse_id, KeyId, PublicKey, NONCE_LEN};

/// The `auth` object as stored. Unknown keys are refused: the object is
/// security-relevant, a reader must understand all of it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthField {
    /// The shared key's id (16 lowercase hex digits); present iff the header hash is keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Creation time, unix milliseconds.
    pub created: u64,
    /// 16 random bytes, 32 lowercase hex digits.
    pub nonce: String,
    /// The Ed25519 public key (64 lowercase hex digits); present iff the payload is signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// Only the key id of an `auth` object, read before the keyed header hash is checked
/// (everything else waits until the header is authenticated).
#[derive(Deserialize)]
struct KeyIdOnly {
    #[serde(default)]
    key_id: Option<String>,
}

/// What the `auth` object says, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth {
    /// The shared key's id, for an authenticated payload.
    pub key_id: Option<KeyId>,
    /// Creation time, unix milliseconds.
    pub created: u64,
    /// The writer's random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The signer's public key, for a signed payload.
    pub signer: Option<PublicKey>,
}

impl Auth {
    /// The stored form.
    pub fn to_field(&self) -> AuthField {
        AuthField {
            key_id: self.key_id.as_ref().map(crate::trust::id_hex),
            created: self.created,
            nonce: hex(&self.nonce),
            signer: self.signer.as_ref().map(|s| hex(s)),
        }
    }

    /// The JSON of the stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_field()).expect("auth serialises")
    }
}

/// The key id named by the `auth` object `raw` of a payload whose header hash is keyed.
pub fn key_id_of(raw: Option<&str>) -> Result<KeyId> {
    let Some(raw) = raw else {
        return Err(Error::format(
            "the header hash is keyed but the header has no auth object",
        ));
    };
    let field: KeyIdOnly =
        serde_json::from_str(raw).map_err(|e| Error::format(format!("auth is not valid: {e}")))?;
    let Some(id) = field.key_id else {
        return Err(Error::format(
            "the header hash is keyed but auth has no key_id",
        ));
    };
    parse_id(&id).ok_or_else(|| {
        Error::format(format!(
            "auth.key_id is not 16 lowercase hex digits: {id:?}"
        ))
    })
}

/// Validate the `auth` object `raw` (its JSON, if present) against the preamble: it is
/// required when the header hash is keyed or the payload signed, `key_id` is present iff
/// keyed, `signer` iff signed. A present but malformed object is refused either way.
pub fn check(raw: Option<&str>, pre: &Preamble) -> Result<Option<Auth>> {
    let Some(raw) = raw else {
        if pre.keyed || pre.signed {
            return Err(Error::format(
                "the payload is authenticated or signed but its header has no auth object",
            ));
        }
        return Ok(None);
    };
    let field: AuthField =
        serde_json::from_str(raw).map_err(|e| Error::format(format!("auth is not valid: {e}")))?;
    if field.key_id.is_some() != pre.keyed {
        return Err(Error::format(if pre.keyed {
            "the header hash is keyed but auth has no key_id"
        } else {
            "auth has a key_id but the header hash is not keyed"
        }));
    }
    if field.signer.is_some() != pre.signed {
        return Err(Error::format(if pre.signed {
            "the payload is signed but auth has no signer"
        } else {
            "auth names a signer but the payload is not signed"
        }));
    }
    let key_id = match &field.key_id {
        Some(id) => Some(parse_id(id).ok_or_else(|| {
            Error::format(format!(
                "auth.key_id is not 16 lowercase hex digits: {id:?}"
            ))
        })?),
        None => None,
    };
    let nonce = unhex::<NONCE_LEN>(&field.nonce).ok_or_else(|| {
        Error::format(format!(
            "auth.nonce is not 32 lowercase hex digits: {:?}",
            field.nonce
        ))
    })?;
    let signer = match &field.signer {
        Some(s) => Some(unhex::<32>(s).ok_or_else(|| {
            Error::format(format!("auth.signer is not 64 lowercase hex digits: {s:?}"))
        })?),
        None => None,
    };
    Ok(Some(Auth {
        key_id,
        created: field.created,
        nonce,
        signer,
    }))
}

#[cfg(test)]
#[path = "auth_tests.rs"]
pub(super) mod tests;
