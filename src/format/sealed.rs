//! The sealed header of a payload encrypted whole (FORMAT.md section 10, "Encryption"):
//! where it is, and its opening, for [`super::read`].

use super::auth::Auth;
use super::header::{Header, SealedHeader};
use super::ids::parse_hex32;
use super::preamble::MAX_HEADER_LEN;
use super::write::SEALED_HEADER_INDEX;
use crate::error::{Error, Result};
use crate::memory::{hash, try_zeroed};
use crate::trust::{open_into, plain_len, Subkeys};

/// Where the sealed header `cover` of a payload encrypted whole starts (absolute): the
/// last `cover.length` bytes of the data section. The visible header must hold nothing
/// else of the payload.
pub(super) fn header_start(
    visible: &Header<'_>,
    cover: &SealedHeader<'_>,
    data_start: usize,
    data_len: u64,
) -> Result<usize> {
    if !visible.tensors.is_empty()
        || visible.structure.is_some()
        || visible.metadata.is_some()
        || visible.base.is_some()
    {
        return Err(Error::format(
            "a payload whose header is sealed shows no tensors, structure, metadata or base",
        ));
    }
    if cover.length > data_len {
        return Err(Error::format(format!(
            "the sealed header of {} bytes is longer than the data section ({data_len})",
            cover.length
        )));
    }
    Ok(data_start + (data_len - cover.length) as usize)
}

/// The real header of a payload encrypted whole, from its sealed stream `sealed`
/// (checked against its hash, then opened: every block authenticated).
pub(super) fn open_header(
    sealed: &[u8],
    cover: &SealedHeader<'_>,
    key: &Subkeys,
    auth: &Auth,
) -> Result<String> {
    let want = parse_hex32(&cover.hash).ok_or_else(|| {
        Error::format(format!(
            "sealed.hash is not 64 lowercase hex digits: {:?}",
            cover.hash
        ))
    })?;
    if hash(sealed) != want {
        return Err(Error::integrity(
            "the sealed header does not match its hash",
        ));
    }
    let len = plain_len(sealed.len())?;
    if len as u64 > MAX_HEADER_LEN {
        return Err(Error::format(format!(
            "the sealed header is {len} bytes, more than a header may be ({})",
            MAX_HEADER_LEN
        )));
    }
    let mut plain: Vec<u8> = try_zeroed(len, "the sealed header")?;
    open_into(
        &key.encryption,
        &auth.nonce,
        SEALED_HEADER_INDEX,
        sealed,
        &mut plain,
    )
    .map_err(|e| e.explained("the sealed header"))?;
    String::from_utf8(plain)
        .map_err(|e| Error::format(format!("the sealed header is not UTF-8: {e}")))
}
