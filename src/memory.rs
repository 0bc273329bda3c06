//! Memory and hashing primitives shared by the format, the codecs, chunking and
//! aggregation: blake3 with a size-dependent thread policy, copy-and-hash in one pass,
//! huge-page advice for fresh buffers, and allocations that fail with an error instead
//! of aborting the process.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Tensors at least this large are copied and hashed by several threads (two passes,
/// both parallel); smaller ones are copied and hashed in one pass by one thread.
const PARALLEL_TENSOR_BYTES: usize = 64 << 20;
/// Block size of the one-pass copy-and-hash: the copied block is hashed while in cache.
const COPY_BLOCK: usize = 256 << 10;
/// Hash with blake3's multi-threaded tree mode above this size.
const RAYON_HASH_BYTES: usize = 1 << 20;

/// blake3 of `data`, with blake3's multi-threaded tree mode for large inputs.
pub fn hash(data: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    if data.len() >= RAYON_HASH_BYTES {
        h.update_rayon(data);
    } else {
        h.update(data);
    }
    *h.finalize().as_bytes()
}

/// Copy `src` into `dst` (the same length) and return the blake3 of the bytes copied:
/// one pass, block by block while the block is in cache (two parallel passes for very
/// large inputs).
pub fn copy_and_hash(src: &[u8], dst: &mut [u8]) -> [u8; 32] {
    if src.len() >= PARALLEL_TENSOR_BYTES {
        dst.par_chunks_mut(COPY_BLOCK * 4)
            .zip(src.par_chunks(COPY_BLOCK * 4))
            .for_each(|(d, s)| d.copy_from_slice(s));
        return hash(dst);
    }
    let mut h = blake3::Hasher::new();
    for (s, d) in src.chunks(COPY_BLOCK).zip(dst.chunks_mut(COPY_BLOCK)) {
        d.copy_from_slice(s);
        h.update(d);
    }
    *h.finalize().as_bytes()
}

/// Ask the kernel to back `buf` with transparent huge pages where it can (Linux, THP in
/// `madvise` mode). A fresh multi-megabyte output buffer then takes one page fault per
/// 2 MiB instead of one per 4 KiB; writing 438 MB otherwise spends most of its time in
/// the fault handler. Purely advisory: failures are ignored.
pub fn advise_huge_pages<T>(buf: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let first = (start + HUGE - 1) & !(HUGE - 1);
        let end = (start + std::mem::size_of_val(buf)) & !(HUGE - 1);
        if end > first {
            // SAFETY: the range lies inside `buf`; MADV_HUGEPAGE never changes contents.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

/// A zero-filled vector of `n` values, or a [`Error::Format`] when the memory cannot be
/// had (never an abort). The zeroed pages are the kernel's: nothing is written here.
pub fn try_zeroed<T: Zeroed>(n: usize, what: &str) -> Result<Vec<T>> {
    let fail = || {
        Error::format(format!(
            "cannot allocate {} bytes for {what}",
            (n as u128) * std::mem::size_of::<T>() as u128
        ))
    };
    if n == 0 || std::mem::size_of::<T>() == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| fail())?;
    // SAFETY: the layout has a non-zero size; a null result is handled; `T: Zeroed`
    // promises that all-zero bytes are a valid `T`, so the `n` values are initialised,
    // and the vector owns the allocation made with the global allocator and `layout`.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut T;
        if ptr.is_null() {
            return Err(fail());
        }
        Ok(Vec::from_raw_parts(ptr, n, n))
    }
}

/// Grow `v` to at least `n` bytes (new bytes zero), or a [`Error::Format`] when the
/// memory cannot be had.
pub fn try_grow(v: &mut Vec<u8>, n: usize, what: &str) -> Result<()> {
    if v.len() < n {
        v.try_reserve_exact(n - v.len())
            .map_err(|_| Error::format(format!("cannot allocate {n} bytes for {what}")))?;
        v.resize(n, 0);
    }
    Ok(())
}

/// Types whose all-zero bit pattern is a valid value (for [`try_zeroed`]).
///
/// # Safety
/// Implement only for types for which every field may be all zero bits.
pub unsafe trait Zeroed: Copy {}
// SAFETY: zero is 0.0 / 0 for these.
unsafe impl Zeroed for f32 {}
// SAFETY: as above.
unsafe impl Zeroed for f64 {}
// SAFETY: as above.
unsafe impl Zeroed for u8 {}
