//! Memory and hashing primitives shared by the format, the codecs, chunking and
//! aggregation: tensor sizes checked against the address space, blake3 with a
//! size-dependent thread policy, copy-and-hash and copy-and-CRC in one pass, huge-page
//! advice for fresh buffers, and allocations that fail with an error instead of
//! aborting the process.
//!
//! Every fused pass (copy and hash, copy and CRC) works block by block, so each block
//! is hashed or checksummed while it is still in cache; the block sizes and the sizes
//! from which work is split over threads are set here, once.

use rayon::prelude::*;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Tensors at least this large are copied and hashed by several threads, split along
/// blake3's own tree (each thread copies and hashes its subtrees in one pass); smaller
/// ones are copied and hashed in one pass by one thread.
const PARALLEL_TENSOR_BYTES: usize = 4 << 20;
/// Subtrees at most this large are copied and hashed by one thread (a power of two
/// times blake3's chunk, so every split below is one of blake3's own).
const SUBTREE_BYTES: usize = 1 << 20;
/// Block size of the one-pass copy-and-hash: the copied block is hashed while in cache.
const COPY_BLOCK: usize = 256 << 10;
/// Hash with blake3's multi-threaded tree mode above this size.
const RAYON_HASH_BYTES: usize = 1 << 20;
/// Block size of the one-pass copy-and-CRC (and copy, CRC and hash).
const CRC_BLOCK: usize = 64 << 10;
/// Inputs at least this large are checksummed (CRC-32) by several threads...
const PARALLEL_CRC_BYTES: usize = 512 << 10;
/// ...in parts of this size, whose CRCs are combined in order.
const CRC_PART: usize = 256 << 10;

/// Number of elements of `shape`, or `None` if the product overflows.
pub fn numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Size in bytes of a tensor of `dtype` and `shape`, or `None` when it overflows or
/// exceeds the address space.
pub fn nbytes(dtype: DType, shape: &[u64]) -> Option<usize> {
    if shape.iter().any(|&d| d > isize::MAX as u64) {
        return None;
    }
    let n = numel(shape)?.checked_mul(dtype.itemsize() as u64)?;
    if n > isize::MAX as u64 {
        return None;
    }
    usize::try_from(n).ok()
}

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
/// one pass, block by block while the block is in cache; large inputs split over
/// threads along blake3's tree, each subtree copied and hashed in one pass, their
/// chaining values merged as blake3 merges them.
pub fn copy_and_hash(src: &[u8], dst: &mut [u8]) -> [u8; 32] {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_root, Mode};
    debug_assert_eq!(src.len(), dst.len(), "copy_and_hash needs equal lengths");
    if src.len() < PARALLEL_TENSOR_BYTES {
        let mut h = blake3::Hasher::new();
        copy_and_update(src, dst, &mut h);
        return *h.finalize().as_bytes();
    }
    let left = left_subtree_len(src.len() as u64) as usize;
    let ((sl, sr), (dl, dr)) = (src.split_at(left), dst.split_at_mut(left));
    let (a, b) = rayon::join(
        || copy_and_hash_subtree(sl, dl, 0),
        || copy_and_hash_subtree(sr, dr, left as u64),
    );
    *merge_subtrees_root(&a, &b, Mode::Hash).as_bytes()
}

/// The chaining value of the blake3 subtree `src` at `offset` of its input (a node of
/// blake3's tree: what `left_subtree_len` splits), copying it into `dst` as it goes.
fn copy_and_hash_subtree(src: &[u8], dst: &mut [u8], offset: u64) -> blake3::hazmat::ChainingValue {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, HasherExt, Mode};
    if src.len() <= SUBTREE_BYTES {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(offset);
        copy_and_update(src, dst, &mut h);
        return h.finalize_non_root();
    }
    let left = left_subtree_len(src.len() as u64) as usize;
    let ((sl, sr), (dl, dr)) = (src.split_at(left), dst.split_at_mut(left));
    let (a, b) = rayon::join(
        || copy_and_hash_subtree(sl, dl, offset),
        || copy_and_hash_subtree(sr, dr, offset + left as u64),
    );
    merge_subtrees_non_root(&a, &b, Mode::Hash)
}

/// Copy `src` into `dst` block by block, feeding each block to `h` while it is in cache.
fn copy_and_update(src: &[u8], dst: &mut [u8], h: &mut blake3::Hasher) {
    for (s, d) in src.chunks(COPY_BLOCK).zip(dst.chunks_mut(COPY_BLOCK)) {
        d.copy_from_slice(s);
        h.update(d);
    }
}

/// Feed `data` to the CRC-32 `hasher`; large inputs are split over threads, their CRCs
/// combined in order.
pub fn crc(data: &[u8], hasher: &mut crc32fast::Hasher) {
    if data.len() < PARALLEL_CRC_BYTES {
        hasher.update(data);
        return;
    }
    let parts: Vec<crc32fast::Hasher> = data
        .par_chunks(CRC_PART)
        .map(|part| {
            let mut h = crc32fast::Hasher::new();
            h.update(part);
            h
        })
        .collect();
    for h in &parts {
        hasher.combine(h);
    }
}

/// Copy `src` into `dst` (same length) and feed the copy to the CRC-32 `crc`, block by
/// block; large inputs are split over threads, their CRCs combined in order.
pub fn copy_and_crc(src: &[u8], dst: &mut [u8], crc: &mut crc32fast::Hasher) {
    if src.len() >= PARALLEL_CRC_BYTES {
        let parts: Vec<crc32fast::Hasher> = src
            .par_chunks(CRC_PART)
            .zip(dst.par_chunks_mut(CRC_PART))
            .map(|(s, d)| {
                let mut h = crc32fast::Hasher::new();
                copy_and_crc(s, d, &mut h);
                h
            })
            .collect();
        for h in &parts {
            crc.combine(h);
        }
        return;
    }
    for (s, d) in src.chunks(CRC_BLOCK).zip(dst.chunks_mut(CRC_BLOCK)) {
        d.copy_from_slice(s);
        crc.update(d);
    }
}

/// Copy `src` into `dst` (same length), feeding the copy to the CRC-32 `crc` and to the
/// blake3 `hasher` in the same pass, block by block.
pub fn copy_crc_and_hash(
    src: &[u8],
    dst: &mut [u8],
    crc: &mut crc32fast::Hasher,
    hasher: &mut blake3::Hasher,
) {
    for (s, d) in src.chunks(CRC_BLOCK).zip(dst.chunks_mut(CRC_BLOCK)) {
        d.copy_from_slice(s);
        crc.update(d);
        hasher.update(d);
    }
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

/// A zero-filled vector of `n` values, or a format failure when the memory cannot be
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

/// Grow `v` to at least `n` bytes (new bytes zero), or a format failure when the
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_shape_is_refused() {
        assert_eq!(nbytes(DType::F32, &[u64::MAX, 2]), None);
        assert_eq!(nbytes(DType::F64, &[1 << 62]), None);
        assert_eq!(nbytes(DType::F32, &[0, u64::MAX]), None);
        assert_eq!(nbytes(DType::F32, &[0, 7]), Some(0));
    }

    #[test]
    fn fused_passes_match_the_plain_ones() {
        for n in [
            0,
            1,
            1000,
            CRC_BLOCK + 3,
            PARALLEL_CRC_BYTES + CRC_PART / 2 + 5,
            PARALLEL_TENSOR_BYTES - 1,
            PARALLEL_TENSOR_BYTES,
            PARALLEL_TENSOR_BYTES + 1,
            PARALLEL_TENSOR_BYTES + SUBTREE_BYTES + 1025,
            3 * PARALLEL_TENSOR_BYTES + 7,
            4 * PARALLEL_TENSOR_BYTES,
        ] {
            let src: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let plain_crc = crc32fast::hash(&src);
            let mut c = crc32fast::Hasher::new();
            crc(&src, &mut c);
            assert_eq!(c.finalize(), plain_crc, "crc of {n}");
            let mut dst = vec![0u8; n];
            let mut c = crc32fast::Hasher::new();
            copy_and_crc(&src, &mut dst, &mut c);
            assert_eq!(
                (c.finalize(), &dst),
                (plain_crc, &src),
                "copy_and_crc of {n}"
            );
            let mut dst = vec![0u8; n];
            assert_eq!(
                copy_and_hash(&src, &mut dst),
                *blake3::hash(&src).as_bytes()
            );
            assert_eq!(dst, src);
            assert_eq!(hash(&src), *blake3::hash(&src).as_bytes());
            let (mut dst, mut c, mut h) = (
                vec![0u8; n],
                crc32fast::Hasher::new(),
                blake3::Hasher::new(),
            );
            copy_crc_and_hash(&src, &mut dst, &mut c, &mut h);
            assert_eq!(
                (c.finalize(), h.finalize(), &dst),
                (plain_crc, blake3::hash(&src), &src)
            );
        }
    }
}
