//! Literal-only zstd frames: Huffman coding of a byte plane with no match search.
//!
//! floatzip's byte planes (exponents, mantissa bytes, signs) have almost no repeats worth
//! an LZ match, so all the gain is the entropy coder. `ZSTD_compressSequences` with no
//! sequences compresses its whole input as the literals of 128 KiB zstd blocks: libzstd's
//! huff0 on each block (or an RLE or raw block where those are smaller), with no match
//! finder run at all. The output is an ordinary zstd frame (RFC 8878) that states its
//! content size, so any zstd decoder reads it; nothing on the wire changes.

use std::cell::RefCell;
use std::ptr::NonNull;

use zstd::zstd_safe::zstd_sys;

use crate::error::{Error, Result};

/// One compression context, owned (freed on drop).
struct Context(NonNull<zstd_sys::ZSTD_CCtx>);

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from ZSTD_createCCtx and is freed exactly once.
        unsafe {
            zstd_sys::ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

fn failed(code: usize) -> Option<Error> {
    // SAFETY: ZSTD_isError and ZSTD_getErrorName take any value and return a static string.
    unsafe {
        if zstd_sys::ZSTD_isError(code) == 0 {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(zstd_sys::ZSTD_getErrorName(code));
        Some(Error::codec(format!(
            "zstd failed: {}",
            name.to_string_lossy()
        )))
    }
}

impl Context {
    fn new() -> Result<Self> {
        // SAFETY: ZSTD_createCCtx has no preconditions; null means out of memory.
        let raw = unsafe { zstd_sys::ZSTD_createCCtx() };
        let ctx = Context(NonNull::new(raw).ok_or_else(|| Error::codec("zstd: out of memory"))?);
        use zstd_sys::ZSTD_cParameter as P;
        for (param, value) in [
            // the entropy coder's effort (level 1's); no match finder runs
            (P::ZSTD_c_compressionLevel, 1),
            // btultra's strategy only for its entropy stage: Huffman tables of the
            // optimal depth (tried per block), not the default 11 bits
            (
                P::ZSTD_c_strategy,
                zstd_sys::ZSTD_strategy::ZSTD_btultra as i32,
            ),
            // Huffman-code the literals (negative levels would turn it off)
            (
                P::ZSTD_c_experimentalParam5,
                zstd_sys::ZSTD_ParamSwitch_e::ZSTD_ps_enable as i32,
            ),
            // no match finder runs: the smallest tables, so resetting them costs nothing
            (P::ZSTD_c_hashLog, 6),
            (P::ZSTD_c_chainLog, 6),
            (P::ZSTD_c_contentSizeFlag, 1),
            (P::ZSTD_c_checksumFlag, 0),
        ] {
            // SAFETY: a live context and a parameter of libzstd's enum.
            let code = unsafe { zstd_sys::ZSTD_CCtx_setParameter(ctx.0.as_ptr(), param, value) };
            if let Some(e) = failed(code) {
                return Err(e);
            }
        }
        Ok(ctx)
    }
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Append one zstd frame holding `src` as Huffman-coded literals to `out`.
pub(super) fn append_literals_frame(src: &[u8], out: &mut Vec<u8>) -> Result<()> {
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Context::new()?);
        }
        let ctx = slot.as_ref().expect("just set");
        let bound = zstd::zstd_safe::compress_bound(src.len());
        out.reserve(bound);
        let spare = out.spare_capacity_mut();
        // SAFETY: the context is live and ours (thread-local); `dst` is `bound` bytes of
        // writable spare capacity and `src` a live slice; an empty sequence array is
        // allowed (null with size 0), and then all of `src` is literals. On success
        // libzstd wrote exactly `n <= bound` bytes at the start of `dst`.
        let n = unsafe {
            zstd_sys::ZSTD_compressSequences(
                ctx.0.as_ptr(),
                spare.as_mut_ptr().cast(),
                bound,
                std::ptr::null(),
                0,
                src.as_ptr().cast(),
                src.len(),
            )
        };
        if let Some(e) = failed(n) {
            return Err(e);
        }
        // SAFETY: see above: the first `n` bytes of the spare capacity are initialised.
        unsafe { out.set_len(out.len() + n) };
        Ok(())
    })
}
