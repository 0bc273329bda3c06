//! SSE2 kernels for [`super::planes`] at widths 2 and 4 (x86-64 only; SSE2 is part of
//! the x86-64 baseline, so no runtime check is needed): 16 elements per step, rotation by
//! vector shifts, planes split by masking and saturating packs (every lane holds 0..=255,
//! so the packs never saturate) and joined by byte and word interleaves.
//!
//! Each kernel handles the first `n / 16 * 16` elements and returns that count; the
//! caller does the rest.

use std::arch::x86_64::*;

/// Elements per step.
const STEP: usize = 16;

/// `x` rotated left by one bit in each 32-bit lane when `ROT`.
#[inline(always)]
unsafe fn rotl32<const ROT: bool>(x: __m128i) -> __m128i {
    if ROT {
        _mm_or_si128(_mm_slli_epi32(x, 1), _mm_srli_epi32(x, 31))
    } else {
        x
    }
}

#[inline(always)]
unsafe fn rotr32<const ROT: bool>(x: __m128i) -> __m128i {
    if ROT {
        _mm_or_si128(_mm_srli_epi32(x, 1), _mm_slli_epi32(x, 31))
    } else {
        x
    }
}

#[inline(always)]
unsafe fn rotl16<const ROT: bool>(x: __m128i) -> __m128i {
    if ROT {
        _mm_or_si128(_mm_slli_epi16(x, 1), _mm_srli_epi16(x, 15))
    } else {
        x
    }
}

#[inline(always)]
unsafe fn rotr16<const ROT: bool>(x: __m128i) -> __m128i {
    if ROT {
        _mm_or_si128(_mm_srli_epi16(x, 1), _mm_slli_epi16(x, 15))
    } else {
        x
    }
}

fn split4_with<const ROT: bool>(src: &[u8], planes: &mut [u8], n: usize) -> usize {
    assert!(src.len() >= 4 * n && planes.len() >= 4 * n);
    let full = n / STEP * STEP;
    // SAFETY: every load reads src[4j..4j + 64] with j + 16 <= n, and every store writes
    // planes[k*n + j..k*n + j + 16] with k < 4: both inside the lengths asserted above.
    unsafe {
        let s = src.as_ptr();
        let p = planes.as_mut_ptr();
        let byte = _mm_set1_epi32(0xff);
        for j in (0..full).step_by(STEP) {
            let v: [__m128i; 4] = std::array::from_fn(|i| {
                rotl32::<ROT>(_mm_loadu_si128(s.add(4 * j + 16 * i).cast()))
            });
            let plane = |x: [__m128i; 4]| {
                _mm_packus_epi16(_mm_packs_epi32(x[0], x[1]), _mm_packs_epi32(x[2], x[3]))
            };
            let b0 = plane(v.map(|x| _mm_and_si128(x, byte)));
            let b1 = plane(v.map(|x| _mm_and_si128(_mm_srli_epi32(x, 8), byte)));
            let b2 = plane(v.map(|x| _mm_and_si128(_mm_srli_epi32(x, 16), byte)));
            let b3 = plane(v.map(|x| _mm_srli_epi32(x, 24)));
            _mm_storeu_si128(p.add(j).cast(), b0);
            _mm_storeu_si128(p.add(n + j).cast(), b1);
            _mm_storeu_si128(p.add(2 * n + j).cast(), b2);
            _mm_storeu_si128(p.add(3 * n + j).cast(), b3);
        }
    }
    full
}

fn join4_with<const ROT: bool>(planes: [&[u8]; 4], dst: &mut [u8], n: usize) -> usize {
    assert!(dst.len() >= 4 * n && planes.iter().all(|p| p.len() >= n));
    let full = n / STEP * STEP;
    // SAFETY: every load reads planes[k][j..j + 16] and every store writes
    // dst[4j..4j + 64], with j + 16 <= n: inside the lengths asserted above.
    unsafe {
        let d = dst.as_mut_ptr();
        for j in (0..full).step_by(STEP) {
            let [p0, p1, p2, p3] = planes.map(|p| _mm_loadu_si128(p.as_ptr().add(j).cast()));
            let (lo01, hi01) = (_mm_unpacklo_epi8(p0, p1), _mm_unpackhi_epi8(p0, p1));
            let (lo23, hi23) = (_mm_unpacklo_epi8(p2, p3), _mm_unpackhi_epi8(p2, p3));
            let e = [
                _mm_unpacklo_epi16(lo01, lo23),
                _mm_unpackhi_epi16(lo01, lo23),
                _mm_unpacklo_epi16(hi01, hi23),
                _mm_unpackhi_epi16(hi01, hi23),
            ];
            for (i, x) in e.into_iter().enumerate() {
                _mm_storeu_si128(d.add(4 * j + 16 * i).cast(), rotr32::<ROT>(x));
            }
        }
    }
    full
}

fn split2_with<const ROT: bool>(src: &[u8], planes: &mut [u8], n: usize) -> usize {
    assert!(src.len() >= 2 * n && planes.len() >= 2 * n);
    let full = n / STEP * STEP;
    // SAFETY: loads read src[2j..2j + 32], stores write planes[k*n + j..k*n + j + 16],
    // k < 2, j + 16 <= n: inside the lengths asserted above.
    unsafe {
        let s = src.as_ptr();
        let p = planes.as_mut_ptr();
        let byte = _mm_set1_epi16(0xff);
        for j in (0..full).step_by(STEP) {
            let v0 = rotl16::<ROT>(_mm_loadu_si128(s.add(2 * j).cast()));
            let v1 = rotl16::<ROT>(_mm_loadu_si128(s.add(2 * j + 16).cast()));
            let b0 = _mm_packus_epi16(_mm_and_si128(v0, byte), _mm_and_si128(v1, byte));
            let b1 = _mm_packus_epi16(_mm_srli_epi16(v0, 8), _mm_srli_epi16(v1, 8));
            _mm_storeu_si128(p.add(j).cast(), b0);
            _mm_storeu_si128(p.add(n + j).cast(), b1);
        }
    }
    full
}

fn join2_with<const ROT: bool>(planes: [&[u8]; 2], dst: &mut [u8], n: usize) -> usize {
    assert!(dst.len() >= 2 * n && planes.iter().all(|p| p.len() >= n));
    let full = n / STEP * STEP;
    // SAFETY: loads read planes[k][j..j + 16], stores write dst[2j..2j + 32], j + 16 <= n.
    unsafe {
        let d = dst.as_mut_ptr();
        for j in (0..full).step_by(STEP) {
            let p0 = _mm_loadu_si128(planes[0].as_ptr().add(j).cast());
            let p1 = _mm_loadu_si128(planes[1].as_ptr().add(j).cast());
            let lo = rotr16::<ROT>(_mm_unpacklo_epi8(p0, p1));
            let hi = rotr16::<ROT>(_mm_unpackhi_epi8(p0, p1));
            _mm_storeu_si128(d.add(2 * j).cast(), lo);
            _mm_storeu_si128(d.add(2 * j + 16).cast(), hi);
        }
    }
    full
}

/// Split the first whole steps of `n` 4-byte elements; returns how many it did.
pub(super) fn split4(src: &[u8], planes: &mut [u8], n: usize, rotate: bool) -> usize {
    if rotate {
        split4_with::<true>(src, planes, n)
    } else {
        split4_with::<false>(src, planes, n)
    }
}

/// Join the first whole steps of `n` 4-byte elements; returns how many it did.
pub(super) fn join4(planes: [&[u8]; 4], dst: &mut [u8], n: usize, rotate: bool) -> usize {
    if rotate {
        join4_with::<true>(planes, dst, n)
    } else {
        join4_with::<false>(planes, dst, n)
    }
}

/// Split the first whole steps of `n` 2-byte elements; returns how many it did.
pub(super) fn split2(src: &[u8], planes: &mut [u8], n: usize, rotate: bool) -> usize {
    if rotate {
        split2_with::<true>(src, planes, n)
    } else {
        split2_with::<false>(src, planes, n)
    }
}

/// Join the first whole steps of `n` 2-byte elements; returns how many it did.
pub(super) fn join2(planes: [&[u8]; 2], dst: &mut [u8], n: usize, rotate: bool) -> usize {
    if rotate {
        join2_with::<true>(planes, dst, n)
    } else {
        join2_with::<false>(planes, dst, n)
    }
}
