//! Sealed tensor bytes (FORMAT.md section 10, "Encryption"): XChaCha20-Poly1305 over
//! blocks of [`BLOCK`] bytes, each block bound by its associated data to the payload's
//! nonce, the tensor's index, its own index and the block count, so blocks cannot be
//! altered, reordered, moved between tensors or payloads, dropped or truncated.
//!
//! A sealed stream is, for each block `i` of `n` (the last may be shorter, an empty input
//! is zero blocks): `ciphertext_i ‖ tag_i` (16 bytes), with
//!
//! * `nonce_i` = the first 24 bytes of BLAKE3 keyed with the encryption subkey over
//!   `b"nonce" ‖ payload nonce (16) ‖ tensor u32 LE ‖ i u32 LE`;
//! * `AD_i` = `payload nonce ‖ tensor u32 LE ‖ i u32 LE ‖ n u32 LE`.
//!
//! Blocks are sealed and opened straight from the input into the output (no copy, no
//! allocation per block), several blocks at once when there are [`PARALLEL_BLOCKS`].
//!
//! The block count in every AD comes from the stream's length, so a stream cut at a
//! block boundary, or with a block dropped, fails on every block left. A stream cut to
//! nothing is an empty stream, which opens: the length itself must come from something
//! authenticated (the payload's header, whose hash is keyed).

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, XChaCha20Poly1305, XNonce};
use rayon::prelude::*;

use super::keys::Key;
use crate::error::{Error, Result};

/// Plaintext bytes per block; the last block of a stream may be shorter.
pub const BLOCK: usize = 1 << 20;
/// Length of each block's Poly1305 tag, in bytes.
pub const TAG: usize = 16;
/// Length of the payload nonce (header `auth.nonce`) the blocks are bound to.
pub const PAYLOAD_NONCE_LEN: usize = 16;
/// Length of a block's XChaCha20 nonce.
const BLOCK_NONCE_LEN: usize = 24;
/// A sealed block at most: a full block of ciphertext and its tag.
const SEALED_BLOCK: usize = BLOCK + TAG;
/// Streams of at least this many blocks are sealed and opened by several threads. One
/// block is about a millisecond of work per core, three orders of magnitude above
/// rayon's cost of a task, so any second block is worth a thread.
pub const PARALLEL_BLOCKS: usize = 2;

/// A payload's nonce: 16 random bytes, written as header `auth.nonce`.
pub type PayloadNonce = [u8; PAYLOAD_NONCE_LEN];

/// Number of blocks of a plaintext of `plain_len` bytes, or None past `u32::MAX`.
fn block_count(plain_len: usize) -> Option<u32> {
    u32::try_from(plain_len.div_ceil(BLOCK)).ok()
}

/// Length of the sealed stream of a plaintext of `plain_len` bytes: the plaintext and a
/// tag per block. None when that overflows or needs more than `u32::MAX` blocks.
pub fn sealed_len(plain_len: usize) -> Option<usize> {
    let blocks = block_count(plain_len)? as usize;
    plain_len.checked_add(blocks.checked_mul(TAG)?)
}

/// Length of the plaintext of a sealed stream of `sealed_len` bytes. Refuses (format
/// error) every length no sealing produces: a final block of a tag alone or less, or
/// more than `u32::MAX` blocks.
pub fn plain_len(sealed_len: usize) -> Result<usize> {
    let blocks = sealed_len.div_ceil(SEALED_BLOCK);
    let last = sealed_len - blocks.saturating_sub(1) * SEALED_BLOCK;
    if blocks > 0 && last <= TAG {
        return Err(Error::format(format!(
            "a sealed tensor of {sealed_len} bytes is impossible: its last block holds \
             {last} bytes, a tag ({TAG} bytes) and at least one byte of data are needed"
        )));
    }
    if u32::try_from(blocks).is_err() {
        return Err(Error::format(format!(
            "a sealed tensor of {sealed_len} bytes has {blocks} blocks, more than {}",
            u32::MAX
        )));
    }
    Ok(sealed_len - blocks * TAG)
}

/// The XChaCha20 nonce of block `index` of tensor `tensor` of the payload `payload`.
pub fn block_nonce(key: &Key, payload: &PayloadNonce, tensor: u32, index: u32) -> [u8; 24] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(b"nonce");
    h.update(payload);
    h.update(&tensor.to_le_bytes());
    h.update(&index.to_le_bytes());
    let mut nonce = [0u8; BLOCK_NONCE_LEN];
    h.finalize_xof().fill(&mut nonce);
    nonce
}

/// The associated data of block `index` of `count` of tensor `tensor` of `payload`.
pub fn block_ad(payload: &PayloadNonce, tensor: u32, index: u32, count: u32) -> [u8; 28] {
    let mut ad = [0u8; PAYLOAD_NONCE_LEN + 12];
    ad[..16].copy_from_slice(payload);
    ad[16..20].copy_from_slice(&tensor.to_le_bytes());
    ad[20..24].copy_from_slice(&index.to_le_bytes());
    ad[24..28].copy_from_slice(&count.to_le_bytes());
    ad
}

/// One stream's blocks: the cipher, the payload, the tensor and the block count.
struct Stream {
    cipher: XChaCha20Poly1305,
    key: Key,
    payload: PayloadNonce,
    tensor: u32,
    count: u32,
}

impl Stream {
    fn new(key: &Key, payload: &PayloadNonce, tensor: u32, count: u32) -> Stream {
        Stream {
            cipher: XChaCha20Poly1305::new(&(*key).into()),
            key: *key,
            payload: *payload,
            tensor,
            count,
        }
    }

    fn nonce(&self, index: usize) -> XNonce {
        block_nonce(&self.key, &self.payload, self.tensor, index as u32).into()
    }

    fn ad(&self, index: usize) -> [u8; 28] {
        block_ad(&self.payload, self.tensor, index as u32, self.count)
    }

    /// Seal plaintext block `index` into `out` (its length plus [`TAG`]).
    fn seal(&self, index: usize, plain: &[u8], out: &mut [u8]) -> Result<()> {
        let (body, tag) = out.split_at_mut(plain.len());
        let buf = InOutBuf::new(plain, body).map_err(|_| Error::input("block lengths differ"))?;
        let sealed = self
            .cipher
            .encrypt_inout_detached(&self.nonce(index), &self.ad(index), buf)
            .map_err(|_| Error::input("a block too long to seal").in_block(index))?;
        tag.copy_from_slice(&sealed);
        Ok(())
    }

    /// Open sealed block `index` into `out` (its length less [`TAG`]).
    fn open(&self, index: usize, sealed: &[u8], out: &mut [u8]) -> Result<()> {
        let (body, tag) = sealed.split_at(out.len());
        let tag = tag
            .try_into()
            .map_err(|_| Error::input("a tag is 16 bytes"))?;
        let buf = InOutBuf::new(body, out).map_err(|_| Error::input("block lengths differ"))?;
        self.cipher
            .decrypt_inout_detached(&self.nonce(index), &self.ad(index), buf, tag)
            .map_err(|_| {
                Error::authentication(format!(
                    "sealed block of tensor {} ({} blocks) does not authenticate: altered, \
                     reordered, moved from another tensor or payload, truncated, or sealed \
                     with another key",
                    self.tensor, self.count
                ))
                .in_block(index)
            })
    }
}

/// Run `each` over the blocks `(index, input block, output block)`, in parallel from
/// [`PARALLEL_BLOCKS`] blocks; the error of the lowest failing block is returned.
fn for_blocks<F>(
    input: &[u8],
    in_block: usize,
    out: &mut [u8],
    out_block: usize,
    each: F,
) -> Result<()>
where
    F: Fn(usize, &[u8], &mut [u8]) -> Result<()> + Sync,
{
    let blocks = input.len().div_ceil(in_block);
    if blocks < PARALLEL_BLOCKS {
        let pairs = input.chunks(in_block).zip(out.chunks_mut(out_block));
        return pairs.enumerate().try_for_each(|(i, (s, d))| each(i, s, d));
    }
    let failed = input
        .par_chunks(in_block)
        .zip(out.par_chunks_mut(out_block))
        .enumerate()
        .filter_map(|(i, (s, d))| each(i, s, d).err().map(|e| (i, e)))
        .min_by_key(|(i, _)| *i);
    match failed {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Seal `plain` as tensor `tensor` of the payload whose nonce is `payload` into `out`,
/// which must be exactly [`sealed_len`]`(plain.len())` bytes (checked before anything
/// is written). `key` is the encryption subkey (`Subkeys::encryption`), never the user
/// key itself.
pub fn seal_into(
    key: &Key,
    payload: &PayloadNonce,
    tensor: u32,
    plain: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let want = sealed_len(plain.len())
        .ok_or_else(|| Error::input(format!("{} bytes are too many to seal", plain.len())))?;
    if out.len() != want {
        return Err(Error::input(format!(
            "sealing {} bytes needs {want} bytes of output, not {}",
            plain.len(),
            out.len()
        )));
    }
    let count = block_count(plain.len()).expect("sealed_len checked the block count");
    let stream = Stream::new(key, payload, tensor, count);
    for_blocks(plain, BLOCK, out, SEALED_BLOCK, |i, p, o| {
        stream.seal(i, p, o)
    })
}

/// Open the sealed stream `sealed` of tensor `tensor` of the payload whose nonce is
/// `payload` into `out`, which must be exactly [`plain_len`]`(sealed.len())` bytes
/// (checked before anything is written). Every block is authenticated before it is
/// decrypted; a block that does not authenticate is an authentication error naming
/// the lowest such block.
///
/// On error `out` must be discarded: the caller opens into a buffer of its own, never
/// into one that is already visible as a tensor. (It is zeroed when a block fails, so
/// the blocks that did authenticate are not left in it as plaintext either.)
pub fn open_into(
    key: &Key,
    payload: &PayloadNonce,
    tensor: u32,
    sealed: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let want = plain_len(sealed.len())?;
    if out.len() != want {
        return Err(Error::input(format!(
            "opening {} sealed bytes needs {want} bytes of output, not {}",
            sealed.len(),
            out.len()
        )));
    }
    let count = block_count(want).expect("plain_len checked the block count");
    let stream = Stream::new(key, payload, tensor, count);
    let opened = for_blocks(sealed, SEALED_BLOCK, out, BLOCK, |i, s, o| {
        stream.open(i, s, o)
    });
    if opened.is_err() {
        out.fill(0);
    }
    opened
}

#[cfg(test)]
#[path = "seal_tests.rs"]
mod tests;
