//! Byte-plane kernels shared by `shuffle` and `floatzip`: element `j`'s byte `k` goes to
//! `planes[k * n + j]` (`n` elements), optionally after rotating each element left by one
//! bit (floatzip: the sign bit to bit 0, so a float's exponent fills the top byte).
//!
//! Widths 2 and 4 run SSE2 kernels on x86-64 (`planes_sse2.rs`); widths 2, 4 and 8 go
//! otherwise (and for what the kernels leave) through tiles of [`LANES`] elements read as
//! integers; any other width goes byte by byte.

#[cfg(target_arch = "x86_64")]
use super::planes_sse2 as simd;

/// Without SSE2 kernels, the tiles do everything.
#[cfg(not(target_arch = "x86_64"))]
mod simd {
    pub(super) fn split2(_: &[u8], _: &mut [u8], _: usize, _: bool) -> usize {
        0
    }
    pub(super) fn split4(_: &[u8], _: &mut [u8], _: usize, _: bool) -> usize {
        0
    }
    pub(super) fn join2(_: [&[u8]; 2], _: &mut [u8], _: usize, _: bool) -> usize {
        0
    }
    pub(super) fn join4(_: [&[u8]; 4], _: &mut [u8], _: usize, _: bool) -> usize {
        0
    }
}

/// Elements per tile.
const LANES: usize = 32;

macro_rules! split_as {
    ($t:ty, $src:expr, $planes:expr, $rot:expr, $done:expr) => {{
        const W: usize = std::mem::size_of::<$t>();
        let (src, planes, rot): (&[u8], &mut [u8], bool) = ($src, $planes, $rot);
        let n = src.len() / W;
        let start: usize = ($done)(&*src, &mut *planes, n);
        let full = start + (n - start) / LANES * LANES;
        for (g, tile) in src[start * W..full * W].chunks_exact(LANES * W).enumerate() {
            let mut v = [0 as $t; LANES];
            for (x, e) in v.iter_mut().zip(tile.chunks_exact(W)) {
                let u = <$t>::from_le_bytes(e.try_into().expect("W bytes"));
                *x = if rot { u.rotate_left(1) } else { u };
            }
            let at = start + g * LANES;
            for k in 0..W {
                let o: &mut [u8; LANES] = (&mut planes[k * n + at..k * n + at + LANES])
                    .try_into()
                    .expect("LANES bytes");
                for (b, x) in o.iter_mut().zip(&v) {
                    *b = (x >> (8 * k)) as u8;
                }
            }
        }
        for j in full..n {
            let u = <$t>::from_le_bytes(src[j * W..(j + 1) * W].try_into().expect("W bytes"));
            let bytes = (if rot { u.rotate_left(1) } else { u }).to_le_bytes();
            for (k, &b) in bytes.iter().enumerate() {
                planes[k * n + j] = b;
            }
        }
    }};
}

macro_rules! join_as {
    ($t:ty, $planes:expr, $dst:expr, $rot:expr, $done:expr) => {{
        const W: usize = std::mem::size_of::<$t>();
        let (planes, dst, rot): (&[&[u8]], &mut [u8], bool) = ($planes, $dst, $rot);
        let n = dst.len() / W;
        let planes: [&[u8]; W] = std::array::from_fn(|k| &planes[k][..n]);
        let start: usize = ($done)(planes, &mut *dst, n);
        let full = start + (n - start) / LANES * LANES;
        for (g, tile) in dst[start * W..full * W]
            .chunks_exact_mut(LANES * W)
            .enumerate()
        {
            let at = start + g * LANES;
            let mut v = [0 as $t; LANES];
            for k in 0..W {
                let p: &[u8; LANES] = planes[k][at..at + LANES].try_into().expect("LANES bytes");
                for (x, &b) in v.iter_mut().zip(p) {
                    *x |= (b as $t) << (8 * k);
                }
            }
            for (e, x) in tile.chunks_exact_mut(W).zip(v) {
                e.copy_from_slice(&(if rot { x.rotate_right(1) } else { x }).to_le_bytes());
            }
        }
        for j in full..n {
            let mut u: $t = 0;
            for k in 0..W {
                u |= (planes[k][j] as $t) << (8 * k);
            }
            let v = if rot { u.rotate_right(1) } else { u };
            dst[j * W..(j + 1) * W].copy_from_slice(&v.to_le_bytes());
        }
    }};
}

/// Write byte plane `k` of `src`'s elements of `width` bytes (each rotated left by one
/// bit within its `8 * width` bits when `rotate`) to `planes[k * n..(k + 1) * n]`.
/// `planes` is as long as `src`; bytes past the last whole element are left alone.
pub(super) fn split(src: &[u8], width: usize, rotate: bool, planes: &mut [u8]) {
    debug_assert_eq!(src.len(), planes.len());
    match width {
        0 => {}
        1 if rotate => {
            for (p, &b) in planes.iter_mut().zip(src) {
                *p = b.rotate_left(1);
            }
        }
        1 => planes.copy_from_slice(src),
        2 => split_as!(u16, src, planes, rotate, |s, p, n| simd::split2(
            s, p, n, rotate
        )),
        4 => split_as!(u32, src, planes, rotate, |s, p, n| simd::split4(
            s, p, n, rotate
        )),
        8 => split_as!(u64, src, planes, rotate, |_, _, _| 0),
        _ => {
            let n = src.len() / width;
            for (j, e) in src.chunks_exact(width).enumerate() {
                let w = rotated(e, rotate);
                for (k, &b) in w[..width].iter().enumerate() {
                    planes[k * n + j] = b;
                }
            }
        }
    }
}

/// Inverse of [`split`], from the `width` planes (each at least `dst.len() / width`
/// bytes long; wherever they lie) into `dst`.
pub(super) fn join(planes: &[&[u8]], rotate: bool, dst: &mut [u8]) {
    let width = planes.len();
    match width {
        0 => {}
        1 if rotate => {
            for (d, &b) in dst.iter_mut().zip(planes[0]) {
                *d = b.rotate_right(1);
            }
        }
        1 => dst.copy_from_slice(&planes[0][..dst.len()]),
        2 => join_as!(u16, planes, dst, rotate, |p, d, n| simd::join2(
            p, d, n, rotate
        )),
        4 => join_as!(u32, planes, dst, rotate, |p, d, n| simd::join4(
            p, d, n, rotate
        )),
        8 => join_as!(u64, planes, dst, rotate, |_, _: &mut [u8], _| 0),
        _ => {
            let mut e = vec![0u8; width];
            for (j, out) in dst.chunks_exact_mut(width).enumerate() {
                for (k, b) in e.iter_mut().enumerate() {
                    *b = planes[k][j];
                }
                out.copy_from_slice(&unrotated(&e, rotate)[..width]);
            }
        }
    }
}

/// `e` (a little-endian integer of `e.len()` bytes) rotated left by one bit, or as is.
fn rotated(e: &[u8], rotate: bool) -> Vec<u8> {
    let mut w = e.to_vec();
    if rotate && !w.is_empty() {
        let top = w[w.len() - 1] >> 7;
        let mut carry = top;
        for b in w.iter_mut() {
            let out = *b >> 7;
            *b = (*b << 1) | carry;
            carry = out;
        }
    }
    w
}

/// Inverse of [`rotated`].
fn unrotated(e: &[u8], rotate: bool) -> Vec<u8> {
    let mut w = e.to_vec();
    if rotate && !w.is_empty() {
        let mut carry = w[0] & 1;
        for b in w.iter_mut().rev() {
            let out = *b & 1;
            *b = (*b >> 1) | (carry << 7);
            carry = out;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, bit by bit: element `j` as an integer of `width` bytes.
    fn reference(src: &[u8], width: usize, rotate: bool) -> Vec<u8> {
        let n = src.len() / width;
        let mut planes = src.to_vec();
        for j in 0..n {
            let e = &src[j * width..(j + 1) * width];
            let bits = 8 * width;
            let bit = |i: usize| (e[i / 8] >> (i % 8)) & 1;
            for k in 0..width {
                let mut b = 0u8;
                for t in 0..8 {
                    let i = 8 * k + t;
                    let from = if rotate { (i + bits - 1) % bits } else { i };
                    b |= bit(from) << t;
                }
                planes[k * n + j] = b;
            }
        }
        planes
    }

    #[test]
    fn split_and_join_match_the_definition() {
        let data: Vec<u8> = (0..4133u32).map(|i| (i * 131 + i / 7) as u8).collect();
        for width in [1, 2, 3, 4, 5, 8, 16] {
            for len in [0, width, 31 * width, 32 * width, 33 * width, data.len()] {
                let len = len.min(data.len()) / width * width;
                let src = &data[..len];
                for rotate in [false, true] {
                    let mut planes = vec![0u8; len];
                    split(src, width, rotate, &mut planes);
                    let want = reference(src, width, rotate);
                    assert_eq!(planes, want, "width {width}, {len} bytes, rotate {rotate}");
                    let mut back = vec![0u8; len];
                    let n = len / width;
                    let parts: Vec<&[u8]> = (0..width).map(|k| &planes[k * n..]).collect();
                    join(&parts, rotate, &mut back);
                    assert_eq!(back, src, "width {width}, {len} bytes, rotate {rotate}");
                }
            }
        }
    }
}
