//! Bindings of trust: key ids, signing keys and their public keys, and the keys and
//! trusted signers a reader is given (secrets are never part of a message).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::{to_py, InputError};
use crate::format::Encrypt;
use crate::trust::{self, Key, PublicKey, Signing, Verifier, KEY_LEN, PUBLIC_KEY_LEN};

/// A 32-byte key or signing key from the caller's bytes; `what` names it in the error.
pub(super) fn key_arg(bytes: &[u8], what: &str) -> PyResult<Key> {
    bytes.try_into().map_err(|_| {
        InputError::new_err(format!(
            "{what} must be {KEY_LEN} bytes, not {} (make one with os.urandom({KEY_LEN}))",
            bytes.len()
        ))
    })
}

/// What an encoder signs with: a shared `key` and/or a `signing_key` (each 32 bytes).
pub(super) fn signing(key: Option<&[u8]>, signing_key: Option<&[u8]>) -> PyResult<Signing> {
    let key = key.map(|k| key_arg(k, "key")).transpose()?;
    let signing_key = signing_key.map(|k| key_arg(k, "signing_key")).transpose()?;
    Ok(Signing::new(key.as_ref(), signing_key.as_ref()))
}

/// `encrypt=` of an encoder: None (nothing), "tensors" or "all".
pub(super) fn encrypt_arg(encrypt: Option<&str>) -> PyResult<Encrypt> {
    match encrypt {
        None => Ok(Encrypt::Nothing),
        Some("tensors") => Ok(Encrypt::Tensors),
        Some("all") => Ok(Encrypt::All),
        Some(other) => Err(InputError::new_err(format!(
            "encrypt must be False, True or \"all\", not {other:?}"
        ))),
    }
}

/// What a reader accepts: `keys` as (key id the caller expects or None, key) pairs,
/// and the `trusted_keys` (public keys, 32 bytes each) when only some signers are.
pub(super) fn verifier(
    keys: Option<Vec<(Option<String>, Vec<u8>)>>,
    trusted_keys: Option<Vec<Vec<u8>>>,
) -> PyResult<Verifier> {
    let mut v = Verifier::default();
    for (id, key) in keys.into_iter().flatten() {
        let key = key_arg(&key, "a key")?;
        let actual = trust::id_hex(&trust::key_id(&key));
        if let Some(id) = id {
            if id != actual {
                return Err(InputError::new_err(format!(
                    "keys: the key given under id {id:?} has id {actual}"
                )));
            }
        }
        v.add_key(&key);
    }
    if let Some(trusted) = trusted_keys {
        v.require_signers();
        for pk in trusted {
            let pk: [u8; PUBLIC_KEY_LEN] = pk.as_slice().try_into().map_err(|_| {
                InputError::new_err(format!(
                    "a trusted key is a {PUBLIC_KEY_LEN}-byte public key (tw.public_key), not {} bytes",
                    pk.len()
                ))
            })?;
            v.trust(pk);
        }
    }
    Ok(v)
}

/// `trusted_keys=` of a reader that takes them from Python directly (the Reassembler):
/// an iterable of public keys, each 32 bytes or 64 hex digits; None when not given.
pub(super) fn trusted_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<PublicKey>>> {
    let Some(obj) = obj else {
        return Ok(None);
    };
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyString>() {
        return Err(InputError::new_err(
            "trusted_keys= takes a list of public keys, not one key",
        ));
    }
    let items = obj
        .try_iter()
        .map_err(|_| InputError::new_err("trusted_keys= must be an iterable of public keys"))?;
    let mut out = Vec::new();
    for item in items {
        let item = item?;
        let bytes: Vec<u8> = if let Ok(s) = item.cast::<PyString>() {
            let s = s.to_cow()?;
            parse_hex(&s).ok_or_else(|| {
                InputError::new_err("a trusted key given as str must be 64 hex digits")
            })?
        } else {
            item.extract().map_err(|_| {
                InputError::new_err("a trusted key is 32 bytes (tw.public_key) or 64 hex digits")
            })?
        };
        let pk: PublicKey = bytes.as_slice().try_into().map_err(|_| {
            InputError::new_err(format!(
                "a trusted key is a {PUBLIC_KEY_LEN}-byte public key (tw.public_key), not {} bytes",
                bytes.len()
            ))
        })?;
        out.push(pk);
    }
    Ok(Some(out))
}

/// The bytes of an even number of hex digits (either case), or None.
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The id of the 32-byte key `key`: 16 lowercase hex digits.
#[pyfunction]
fn key_id(key: &[u8]) -> PyResult<String> {
    Ok(trust::id_hex(&trust::key_id(&key_arg(key, "key")?)))
}

/// A new random Ed25519 signing key: its 32-byte secret.
#[pyfunction]
fn generate_signing_key(py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
    let secret = trust::generate_signing_key().map_err(to_py)?;
    Ok(PyBytes::new(py, &secret))
}

/// The 32-byte public key of the signing key `signing_key`.
#[pyfunction]
fn public_key<'py>(py: Python<'py>, signing_key: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let secret = key_arg(signing_key, "signing_key")?;
    Ok(PyBytes::new(py, &trust::public_key(&secret)))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(key_id, m)?)?;
    m.add_function(wrap_pyfunction!(generate_signing_key, m)?)?;
    m.add_function(wrap_pyfunction!(public_key, m)?)?;
    Ok(())
}
