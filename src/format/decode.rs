//! Decoding the tensors of a parsed payload ([`Layout`]): in parallel, each checked
//! before its output is written; a sealed coded tensor opened and its framing proved
//! before its output is allocated; into the caller's memory all or nothing
//! ([`Layout::decode_all_or_nothing`]).

use rayon::prelude::*;

use super::read::{check_bools, Layout};
use super::TensorView;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::memory::try_zeroed;
use crate::trust::{open_into, plain_len};

/// One tensor to decode: its index, the output buffer, the base tensor for deltas, and
/// for a sealed coded tensor its plaintext, opened and checked by [`Layout::open_sealed`].
pub type DecodeJob<'a> = (usize, &'a mut [u8], Option<TensorView<'a>>, Option<Vec<u8>>);

impl Layout {
    /// Open each sealed coded tensor of `indices` and prove its framing, in parallel: what
    /// decoding them needs before their outputs are allocated, since until it is opened
    /// a sealed tensor's framing is ciphertext. One entry per index: the plaintext, or
    /// None for a tensor that is not sealed or is stored raw. Holds no more than the
    /// stored bytes.
    pub fn open_sealed(&self, buf: &[u8], indices: &[usize]) -> Result<Vec<Option<Vec<u8>>>> {
        indices
            .par_iter()
            .map(|&i| {
                let e = &self.entries[i];
                match e.sealed && !e.pipeline.is_raw() {
                    true => self.open_checked(buf, i).map(Some),
                    false => Ok(None),
                }
            })
            .collect()
    }

    /// Open sealed tensor `i` into `out` (its plaintext length).
    fn open_stored(&self, buf: &[u8], i: usize, out: &mut [u8]) -> Result<()> {
        let e = &self.entries[i];
        let (Some(key), Some(auth)) = (&self.key, &self.auth) else {
            // parse() refuses sealed tensors in unauthenticated payloads.
            return Err(
                Error::authentication("a sealed tensor needs the payload's key").in_tensor(&e.name),
            );
        };
        open_into(
            &key.encryption,
            &auth.nonce,
            i as u32,
            self.stored(buf, i),
            out,
        )
        .map_err(|err| err.in_tensor(&e.name))
    }

    /// The plaintext of sealed coded tensor `i`, its framing proved.
    fn open_checked(&self, buf: &[u8], i: usize) -> Result<Vec<u8>> {
        let e = &self.entries[i];
        let len = plain_len(self.stored(buf, i).len())?;
        let mut plain: Vec<u8> = try_zeroed(len, "a sealed tensor")?;
        self.open_stored(buf, i, &mut plain)?;
        e.pipeline
            .check_stored(e.dtype, &e.shape, e.nbytes, &plain)
            .map_err(|err| err.in_tensor(&e.name))?;
        Ok(plain)
    }

    /// Decode tensor `i` into `out` (exactly its decoded size), checking its hash first
    /// when `verify` is set (a sealed tensor's blocks are authenticated instead). `base`
    /// is the base tensor for delta codecs: it must have the tensor's dtype and shape.
    pub fn decode_into(
        &self,
        buf: &[u8],
        i: usize,
        out: &mut [u8],
        base: Option<TensorView<'_>>,
        verify: bool,
    ) -> Result<()> {
        self.decode_opened(buf, i, out, base, verify, None)
    }

    /// [`Self::decode_into`], given the plaintext of a sealed coded tensor when
    /// [`Self::open_sealed`] already opened it.
    pub fn decode_opened(
        &self,
        buf: &[u8],
        i: usize,
        out: &mut [u8],
        base: Option<TensorView<'_>>,
        verify: bool,
        opened: Option<Vec<u8>>,
    ) -> Result<()> {
        let e = &self.entries[i];
        if out.len() != e.nbytes {
            return Err(Error::input(format!(
                "output buffer of {} bytes, {} needed",
                out.len(),
                e.nbytes
            ))
            .in_tensor(&e.name));
        }
        if verify && !e.sealed {
            self.check_hash(buf, i)?;
        }
        let stored = self.stored(buf, i);
        if e.sealed && e.pipeline.is_raw() {
            self.open_stored(buf, i, out)?;
            if e.dtype == DType::Bool {
                check_bools(&e.name, out)?;
            }
            return Ok(());
        }
        if e.is_stored_raw() {
            out.copy_from_slice(stored);
            return self.check_raw_values(buf, i);
        }
        let plain = match (e.sealed, opened) {
            (false, _) => None,
            (true, Some(p)) => Some(p),
            (true, None) => Some(self.open_checked(buf, i)?),
        };
        let stored = plain.as_deref().unwrap_or(stored);
        let base = if e.pipeline.needs_base() {
            let Some(b) = base else {
                return Err(Error::integrity(format!(
                    "codec {} is a delta and needs the base it was encoded against",
                    e.pipeline
                ))
                .in_tensor(&e.name));
            };
            if b.dtype != e.dtype || b.shape != e.shape.as_slice() {
                return Err(Error::integrity(format!(
                    "the base tensor is {}{:?}, this delta was encoded against {}{:?}",
                    b.dtype, b.shape, e.dtype, e.shape
                ))
                .in_tensor(&e.name));
            }
            Some(b.data)
        } else {
            None
        };
        e.pipeline
            .decode(e.dtype, &e.shape, stored, base, out)
            .map_err(|err| err.in_tensor(&e.name))?;
        if e.dtype == DType::Bool {
            check_bools(&e.name, out)?;
        }
        Ok(())
    }

    /// Decode several tensors in parallel (see [`DecodeJob`]).
    pub fn decode_many(&self, buf: &[u8], jobs: Vec<DecodeJob<'_>>, verify: bool) -> Result<()> {
        jobs.into_par_iter().try_for_each(|(i, out, base, opened)| {
            self.decode_opened(buf, i, out, base, verify, opened)
        })
    }

    /// Decode several tensors (see [`DecodeJob`]) into memory the caller keeps, all or
    /// nothing: first every check that can refuse a tensor, for all of them (output
    /// sizes, checksums when `verify`, bool values), then the coded and sealed tensors
    /// are decoded into scratch memory (a delta's base checked there); only when every
    /// one of them succeeded are the outputs written, by copies that cannot fail. So a
    /// refused payload leaves every output as it was; raw tensors are copied once,
    /// straight from the payload.
    pub fn decode_all_or_nothing(
        &self,
        buf: &[u8],
        mut jobs: Vec<DecodeJob<'_>>,
        verify: bool,
    ) -> Result<()> {
        jobs.par_iter().try_for_each(|(i, out, _, _)| {
            let e = &self.entries[*i];
            if out.len() != e.nbytes {
                return Err(Error::input(format!(
                    "output buffer of {} bytes, {} needed",
                    out.len(),
                    e.nbytes
                ))
                .in_tensor(&e.name));
            }
            if verify && !e.sealed {
                self.check_hash(buf, *i)?;
            }
            self.check_raw_values(buf, *i)
        })?;
        let decoded: Vec<Option<Vec<u8>>> = jobs
            .par_iter_mut()
            .map(|(i, _, base, opened)| {
                let e = &self.entries[*i];
                if e.is_stored_raw() {
                    return Ok(None);
                }
                let mut scratch: Vec<u8> = try_zeroed(e.nbytes, "a decoded tensor")?;
                self.decode_opened(buf, *i, &mut scratch, *base, false, opened.take())?;
                Ok(Some(scratch))
            })
            .collect::<Result<_>>()?;
        jobs.into_par_iter()
            .zip(decoded)
            .for_each(|((i, out, _, _), scratch)| match scratch {
                Some(bytes) => out.copy_from_slice(&bytes),
                None => out.copy_from_slice(self.stored(buf, i)),
            });
        Ok(())
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
