//! Verifying a finished payload (`docs/FORMAT.md`, "Verifying a finished payload"):
//! against its chunks' digest, and a tensorwire payload as a container, with the
//! receiver's shared keys and trusted signers ([`PayloadChecks`]).
//!
//! One user key serves the chunks and the payload through two subkeys (`K_piece` for
//! the chunks' tags, `K_mac` for the payload's keyed header hash), so a chunker or a
//! reassembler given keys reads an authenticated payload with the same keys.

use super::framing::PayloadKind;
use crate::error::{Error, Result};
use crate::format::{parse_with, Layout, Preamble, PREAMBLE_LEN};
use crate::trust::{Key, PublicKey, Verifier, SIGNATURE_LEN};

/// What a receiver (or a chunker deciding a payload's kind) accepts of a tensorwire
/// payload: its shared keys, for authenticated payloads, and, when it names them, the
/// only signers it trusts. A plain payload is read without the keys: the chunks'
/// tags (or CRCs) already cover its bytes, and its plain header hash is checked.
#[derive(Clone, Debug, Default)]
pub struct PayloadChecks {
    /// Reads authenticated payloads: the keys, and the trusted signers.
    keyed: Verifier,
    /// Reads plain payloads: the trusted signers alone.
    plain: Verifier,
}

/// How far a finished payload was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Everything its kind calls for.
    Fully,
    /// An authenticated tensorwire payload read without keys: its header hash cannot
    /// be checked, so only its preamble, its length and the digest of its chunks were.
    /// It is handed back for a reader with the key (`decode(key=)`) to verify.
    WithoutKey,
}

impl PayloadChecks {
    /// Accept payloads authenticated with one of `keys` and, when `trusted` is given,
    /// only payloads signed by one of those signers (an empty list: none at all).
    pub fn new(keys: &[Key], trusted: Option<&[PublicKey]>) -> PayloadChecks {
        let mut checks = PayloadChecks::default();
        for k in keys {
            checks.keyed.add_key(k);
        }
        if let Some(signers) = trusted {
            for v in [&mut checks.keyed, &mut checks.plain] {
                v.require_signers();
                for s in signers {
                    v.trust(*s);
                }
            }
        }
        checks
    }

    /// Whether shared keys were given.
    pub fn has_keys(&self) -> bool {
        self.keyed.has_keys()
    }

    /// The signers accepted, when only some are.
    pub fn trusted(&self) -> Option<&[PublicKey]> {
        self.plain.trusted()
    }

    /// Parse `payload` as a container: a plain one by its plain header hash, an
    /// authenticated one with the keys (the key it names must be among them, and the
    /// keyed hash must match). `Ok(None)`: authenticated, and there are no keys to
    /// check it with. A signature present is always checked, trusted or not.
    pub fn parse(&self, payload: &[u8]) -> Result<Option<Layout>> {
        let pre = Preamble::parse(payload)?;
        if !pre.keyed {
            return parse_with(payload, &self.plain).map(Some);
        }
        if !self.has_keys() {
            return Ok(None);
        }
        parse_with(payload, &self.keyed).map(Some)
    }
}

/// Check a reassembled payload against its chunks' kind and digest (see
/// [`PayloadKind`]) with no keys and any signer: [`verify_payload_with`].
pub fn verify_payload(
    payload: &[u8],
    kind: PayloadKind,
    digest: &[u8; 32],
    full: bool,
) -> Result<()> {
    verify_payload_with(payload, kind, digest, full, &PayloadChecks::default()).map(|_| ())
}

/// Check a reassembled payload against its chunks' kind and digest, reading a
/// tensorwire payload with `checks`. Kind 0: its blake3 (when `full`). Kind 1: it
/// parses as a container (see [`PayloadChecks::parse`]), its content id is the digest
/// unless that is zero, and (when `full`) every tensor checksum and the padding. With
/// trusted signers, a payload of either kind must also be a container signed by one of
/// them. An authenticated kind-1 payload without keys is [`Verified::WithoutKey`] (its
/// preamble, exact length and digest checked), unless signers are required.
pub fn verify_payload_with(
    payload: &[u8],
    kind: PayloadKind,
    digest: &[u8; 32],
    full: bool,
    checks: &PayloadChecks,
) -> Result<Verified> {
    let checked = match kind {
        PayloadKind::Bytes => {
            if full && crate::memory::hash(payload) != *digest {
                return Err(Error::integrity(
                    "its blake3 does not match the digest in its chunks",
                ));
            }
            if checks.trusted().is_some() {
                require_signed(payload, checks)?;
            }
            Verified::Fully
        }
        PayloadKind::Container => match checks.parse(payload)? {
            Some(layout) => {
                if *digest != [0; 32] && layout.content_id != *digest {
                    return Err(content_id_mismatch());
                }
                if full {
                    layout.verify(payload, None)?;
                }
                Verified::Fully
            }
            None => {
                let pre = Preamble::parse(payload)?;
                check_length(&pre, payload.len())?;
                if *digest != [0; 32] && pre.header_hash != *digest {
                    return Err(content_id_mismatch());
                }
                Verified::WithoutKey
            }
        },
    };
    if checked == Verified::WithoutKey && checks.trusted().is_some() {
        return Err(keyed_without_keys());
    }
    Ok(checked)
}

fn content_id_mismatch() -> Error {
    Error::integrity("its content id does not match the digest in its chunks")
}

/// A payload of kind 0 when signers are required: it must be a container they signed.
fn require_signed(payload: &[u8], checks: &PayloadChecks) -> Result<()> {
    match checks.parse(payload) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(keyed_without_keys()),
        Err(e) => Err(Error::authentication(format!(
            "only payloads signed by a trusted key are accepted, and this one is not a \
             tensorwire payload that can be read: {e}"
        ))),
    }
}

/// An authenticated payload whose signer cannot be checked without its key.
fn keyed_without_keys() -> Error {
    Error::authentication(
        "only payloads signed by a trusted key are accepted, and this one is authenticated \
         with a shared key the reassembler was not given (pass key= or keys=), so its \
         signer cannot be checked",
    )
}

/// The payload is exactly as long as its preamble says (the signature trailer included).
fn check_length(pre: &Preamble, len: usize) -> Result<()> {
    let trailer = if pre.signed { SIGNATURE_LEN as u64 } else { 0 };
    let want = (PREAMBLE_LEN as u64)
        .checked_add(pre.header_len)
        .and_then(|n| n.checked_add(pre.data_len))
        .and_then(|n| n.checked_add(trailer));
    if want != Some(len as u64) {
        return Err(Error::integrity(format!(
            "its preamble describes {} bytes, the payload has {len}",
            want.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
        )));
    }
    Ok(())
}
