//! Layouts (slot 4): `shuffle` (byte planes) and `floatzip` (sign-rotated byte planes,
//! each entropy-coded with zstd or stored raw: the ZipNN idea).
//!
//! Both work on one block at a time and never allocate more than a block's worth.

use std::cell::RefCell;

use super::compressor::{append_compressed, zstd_content_size, zstd_decompress, ZSTD_MAX_RATIO};
use crate::dtype::scalar::is_float;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A layout stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Layout {
    /// Byte shuffle: byte k of every value, then byte k+1, ...
    Shuffle,
    /// Float-aware lossless coding: sign-rotated byte planes, each zstd-coded or raw.
    FloatZip,
}

/// Bytes of a floatzip plane header: u8 mode, u32 length.
pub(super) const PLANE_HEADER: usize = 5;

impl Layout {
    /// Why this stage cannot lay out values of `values` (the dtype reaching it).
    pub(super) fn misfit(self, values: DType) -> Option<String> {
        match self {
            Layout::FloatZip if !is_float(values) => Some(format!(
                "floatzip needs float values, these are {values}; use shuffle+zstd"
            )),
            _ => None,
        }
    }

    /// True when it entropy-codes its output itself (no compressor may follow).
    pub(super) fn compresses(self) -> bool {
        self == Layout::FloatZip
    }

    /// True when it changes nothing for values of `q` bytes.
    pub(super) fn is_identity(self, q: usize) -> bool {
        self == Layout::Shuffle && q <= 1
    }

    /// Append the laid-out `values` (of `q` bytes each) to `out`.
    pub(super) fn encode(self, values: &[u8], q: usize, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Layout::Shuffle => {
                let at = out.len();
                out.resize(at + values.len(), 0);
                shuffle(values, q, &mut out[at..]);
                Ok(())
            }
            Layout::FloatZip => floatzip_encode(values, q, out),
        }
    }

    /// Undo [`Self::encode`]: `src`, exactly a block's laid-out values, into `dst`.
    pub(super) fn decode(self, src: &[u8], q: usize, dst: &mut [u8]) -> Result<()> {
        match self {
            Layout::FloatZip => {
                let used = floatzip_decode(src, q, dst)?;
                if used != src.len() {
                    return Err(Error::integrity(format!(
                        "{} stray bytes after a block's values",
                        src.len() - used
                    )));
                }
                Ok(())
            }
            Layout::Shuffle => {
                exact_values(src, dst)?;
                unshuffle(src, q, dst);
                Ok(())
            }
        }
    }

    /// The fewest bytes `count` laid-out values of `q` bytes can take.
    pub(super) fn least_bytes(self, count: usize, q: usize) -> usize {
        match self {
            Layout::FloatZip => PLANE_HEADER * q,
            Layout::Shuffle => count * q,
        }
    }

    /// The most bytes `count` laid-out values of `q` bytes can take: a floatzip plane is
    /// stored raw when zstd does not make it smaller, so each costs at most its header.
    pub(super) fn most_bytes(self, count: usize, q: usize) -> usize {
        match self {
            Layout::FloatZip => count * q + PLANE_HEADER * q,
            Layout::Shuffle => count * q,
        }
    }

    /// Check the stored bytes of a dense block of `m` values (`q` bytes each) that no
    /// compressor follows, from their framing alone.
    pub(super) fn check_stored(self, body: &[u8], m: usize, q: usize) -> Result<()> {
        match self {
            Layout::FloatZip => check_planes(body, m, q),
            Layout::Shuffle => plain_stored(body, m, q),
        }
    }
}

/// Without a layout, a block's values are stored as they are: `src` must be exactly `dst`.
pub(super) fn exact_values(src: &[u8], dst: &[u8]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::integrity(format!(
            "a block holds {} bytes of values, expected {}",
            src.len(),
            dst.len()
        )));
    }
    Ok(())
}

/// A dense block stored as plain values (no compressor): exactly `m` values of `q` bytes.
pub(super) fn plain_stored(body: &[u8], m: usize, q: usize) -> Result<()> {
    if body.len() != m * q {
        return Err(Error::integrity(format!(
            "it holds {} bytes, {m} values of {q} bytes need {}",
            body.len(),
            m * q
        )));
    }
    Ok(())
}

/// A dense floatzip block: `q` planes of `m` bytes each, raw or one zstd frame,
/// whose headers tile the block exactly.
fn check_planes(body: &[u8], m: usize, q: usize) -> Result<()> {
    let corrupt = |m: String| Error::integrity(m);
    let mut at = 0usize;
    for k in 0..q {
        let head = body
            .get(at..at + PLANE_HEADER)
            .ok_or_else(|| corrupt(format!("floatzip plane {k} header is truncated")))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let plane = body
            .get(at + PLANE_HEADER..)
            .and_then(|rest| rest.get(..len))
            .ok_or_else(|| corrupt(format!("floatzip plane {k} is truncated")))?;
        match head[0] {
            PLANE_RAW if len == m => {}
            PLANE_ZSTD if len >= m.div_ceil(ZSTD_MAX_RATIO) => {
                if zstd_content_size(plane)?.is_some_and(|s| s != m as u64) {
                    return Err(corrupt(format!(
                        "floatzip plane {k}'s zstd frame does not state {m} bytes"
                    )));
                }
            }
            mode => {
                return Err(corrupt(format!(
                    "floatzip plane {k} (mode {mode}, {len} bytes) cannot hold {m} bytes"
                )))
            }
        }
        at += PLANE_HEADER + len;
    }
    if at != body.len() {
        return Err(corrupt(format!(
            "{} stray bytes after a block's floatzip planes",
            body.len() - at
        )));
    }
    Ok(())
}

/// zstd level floatzip uses for its byte planes: the fastest match search (planes have
/// almost no long matches), with Huffman-coded literals forced on (see [`plane_compress`]).
const FLOATZIP_ZSTD_LEVEL: i32 = -500;
/// A plane whose byte histogram has at least this many bits of entropy per byte is
/// stored raw: zstd cannot win enough to pay for its time.
const INCOMPRESSIBLE_BITS: f64 = 7.9;

/// Byte shuffle: byte k of every element, then byte k+1, ... `src` holds whole
/// elements of `width` bytes; `dst` has the same length.
fn shuffle(src: &[u8], width: usize, dst: &mut [u8]) {
    debug_assert_eq!(src.len(), dst.len());
    if width <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    let n = src.len() / width;
    for (k, plane) in dst.chunks_exact_mut(n.max(1)).take(width).enumerate() {
        if n == 0 {
            break;
        }
        for (d, elem) in plane.iter_mut().zip(src.chunks_exact(width)) {
            *d = elem[k];
        }
    }
}

/// Inverse of [`shuffle`].
fn unshuffle(src: &[u8], width: usize, dst: &mut [u8]) {
    debug_assert_eq!(src.len(), dst.len());
    if width <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    let n = src.len() / width;
    if n == 0 {
        return;
    }
    for (k, plane) in src.chunks_exact(n).take(width).enumerate() {
        for (elem, &b) in dst.chunks_exact_mut(width).zip(plane) {
            elem[k] = b;
        }
    }
}

thread_local! {
    static PLANES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static PLANE_C: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// zstd for a floatzip byte plane. Planes are nearly match-free (exponents, mantissa
/// bits), so the match search is made as cheap as possible (a very fast level, no
/// matches under 7 bytes) while literal Huffman coding, which negative levels normally
/// turn off, is forced on: that is the entropy coder doing the work. The output is an
/// ordinary zstd frame.
fn plane_compress(src: &[u8], out: &mut Vec<u8>) -> Result<()> {
    use zstd::zstd_safe::CParameter;
    let fail = |e: std::io::Error| Error::codec(format!("zstd failed: {e}"));
    PLANE_C.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut c = zstd::bulk::Compressor::new(FLOATZIP_ZSTD_LEVEL).map_err(fail)?;
            c.set_parameter(CParameter::MinMatch(7)).map_err(fail)?;
            c.set_parameter(CParameter::LiteralCompressionMode(
                zstd::zstd_safe::ParamSwitch::Enable,
            ))
            .map_err(fail)?;
            *slot = Some(c);
        }
        let c = slot.as_mut().expect("just set");
        append_compressed(c, src, out).map_err(fail)
    })
}

/// Bits per byte of `data`'s byte histogram, estimated on at most about 64 KiB of it
/// (the first 4 bytes of every `stride` bytes).
fn entropy_bits(data: &[u8]) -> f64 {
    const SAMPLE: usize = 64 << 10;
    let stride = if data.len() > 2 * SAMPLE {
        data.len() / SAMPLE * 4
    } else {
        4
    };
    let mut counts = [[0u32; 256]; 4];
    let mut total = 0usize;
    let mut groups = data.chunks_exact(stride);
    for c in &mut groups {
        counts[0][c[0] as usize] += 1;
        counts[1][c[1] as usize] += 1;
        counts[2][c[2] as usize] += 1;
        counts[3][c[3] as usize] += 1;
        total += 4;
    }
    if stride == 4 {
        for &b in groups.remainder() {
            counts[0][b as usize] += 1;
            total += 1;
        }
    }
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    let mut bits = 0.0;
    let (a, rest) = counts.split_at(1);
    for (v, &c0) in a[0].iter().enumerate() {
        let c = c0 + rest[0][v] + rest[1][v] + rest[2][v];
        if c > 0 {
            let p = c as f64 / n;
            bits -= p * p.log2();
        }
    }
    bits
}

/// Rotate each `width`-byte little-endian element left by one bit (sign bit to bit 0,
/// so a float32's or bfloat16's exponent fills the top byte) and write byte plane k of
/// the result to `planes[k * n..(k + 1) * n]`.
fn split_planes(src: &[u8], width: usize, planes: &mut [u8]) {
    let n = src.len() / width;
    match width {
        2 => {
            let (p0, p1) = planes.split_at_mut(n);
            for ((e, a), b) in src.chunks_exact(2).zip(p0).zip(p1) {
                let v = u16::from_le_bytes([e[0], e[1]])
                    .rotate_left(1)
                    .to_le_bytes();
                *a = v[0];
                *b = v[1];
            }
        }
        4 => {
            let (p0, rest) = planes.split_at_mut(n);
            let (p1, rest) = rest.split_at_mut(n);
            let (p2, p3) = rest.split_at_mut(n);
            let elems = src.chunks_exact(4);
            for ((((e, a), b), c), d) in elems.zip(p0).zip(p1).zip(p2).zip(p3) {
                let v = u32::from_le_bytes([e[0], e[1], e[2], e[3]])
                    .rotate_left(1)
                    .to_le_bytes();
                (*a, *b, *c, *d) = (v[0], v[1], v[2], v[3]);
            }
        }
        _ => {
            for (i, e) in src.chunks_exact(width).enumerate() {
                let mut w = [0u8; 8];
                w[..width].copy_from_slice(e);
                let v = rotl_bytes(u64::from_le_bytes(w), width).to_le_bytes();
                for k in 0..width {
                    planes[k * n + i] = v[k];
                }
            }
        }
    }
}

fn rotl_bytes(v: u64, width: usize) -> u64 {
    let bits = 8 * width as u32;
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    ((v << 1) | (v >> (bits - 1))) & mask
}

fn rotr_bytes(v: u64, width: usize) -> u64 {
    let bits = 8 * width as u32;
    ((v >> 1) | ((v & 1) << (bits - 1)))
        & if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
}

/// Inverse of [`split_planes`].
fn join_planes(planes: &[u8], width: usize, dst: &mut [u8]) {
    let n = dst.len() / width;
    match width {
        2 => {
            let (p0, p1) = planes.split_at(n);
            for ((e, &a), &b) in dst.chunks_exact_mut(2).zip(p0).zip(p1) {
                e.copy_from_slice(&u16::from_le_bytes([a, b]).rotate_right(1).to_le_bytes());
            }
        }
        4 => {
            let (p0, rest) = planes.split_at(n);
            let (p1, rest) = rest.split_at(n);
            let (p2, p3) = rest.split_at(n);
            let elems = dst.chunks_exact_mut(4);
            for ((((e, &a), &b), &c), &d) in elems.zip(p0).zip(p1).zip(p2).zip(p3) {
                let v = u32::from_le_bytes([a, b, c, d]).rotate_right(1);
                e.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            for (i, e) in dst.chunks_exact_mut(width).enumerate() {
                let mut w = [0u8; 8];
                for (k, b) in w.iter_mut().take(width).enumerate() {
                    *b = planes[k * n + i];
                }
                let v = rotr_bytes(u64::from_le_bytes(w), width).to_le_bytes();
                e.copy_from_slice(&v[..width]);
            }
        }
    }
}

/// Plane stored as is.
const PLANE_RAW: u8 = 0;
/// Plane stored as one zstd frame.
const PLANE_ZSTD: u8 = 1;

/// floatzip: append the encoding of `src` (whole floats of `width` bytes) to `out`.
/// For each byte plane k (see [`split_planes`]): a mode byte (0 raw, 1 zstd), a u32 LE
/// length, then that many bytes.
fn floatzip_encode(src: &[u8], width: usize, out: &mut Vec<u8>) -> Result<()> {
    let n = src.len() / width;
    let mut planes = PLANES.with(|p| std::mem::take(&mut *p.borrow_mut()));
    planes.resize(src.len(), 0);
    split_planes(src, width, &mut planes);
    let r = floatzip_write(&planes, width, n, out);
    PLANES.with(|p| *p.borrow_mut() = planes);
    r
}

fn floatzip_write(planes: &[u8], width: usize, n: usize, out: &mut Vec<u8>) -> Result<()> {
    out.reserve(planes.len() + 5 * width);
    for k in 0..width {
        let plane = &planes[k * n..(k + 1) * n];
        let head = out.len();
        out.extend_from_slice(&[PLANE_RAW, 0, 0, 0, 0]);
        let mut mode = PLANE_RAW;
        if n > 0 && entropy_bits(plane) < INCOMPRESSIBLE_BITS {
            plane_compress(plane, out)?;
            if out.len() - head - 5 < n {
                mode = PLANE_ZSTD;
            } else {
                out.truncate(head + 5);
            }
        }
        if mode == PLANE_RAW {
            out.extend_from_slice(plane);
        }
        let len = (out.len() - head - 5) as u32;
        out[head] = mode;
        out[head + 1..head + 5].copy_from_slice(&len.to_le_bytes());
    }
    Ok(())
}

/// Decode floatzip bytes at the start of `src` into `dst` (whole floats of `width`
/// bytes). Returns how many bytes of `src` it consumed.
fn floatzip_decode(src: &[u8], width: usize, dst: &mut [u8]) -> Result<usize> {
    let mut planes = PLANES.with(|p| std::mem::take(&mut *p.borrow_mut()));
    planes.resize(dst.len(), 0);
    let r = floatzip_read(src, width, &mut planes, dst);
    PLANES.with(|p| *p.borrow_mut() = planes);
    r
}

fn floatzip_read(src: &[u8], width: usize, planes: &mut [u8], dst: &mut [u8]) -> Result<usize> {
    let n = dst.len() / width;
    let mut pos = 0usize;
    for k in 0..width {
        let head = src
            .get(pos..pos + 5)
            .ok_or_else(|| Error::integrity("floatzip plane header is truncated"))?;
        let mode = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        pos += 5;
        let body = src
            .get(pos..pos.saturating_add(len))
            .ok_or_else(|| Error::integrity("floatzip plane is truncated"))?;
        pos += len;
        let plane = &mut planes[k * n..(k + 1) * n];
        match mode {
            PLANE_RAW => {
                if len != n {
                    return Err(Error::integrity(format!(
                        "floatzip raw plane holds {len} bytes, expected {n}"
                    )));
                }
                plane.copy_from_slice(body);
            }
            PLANE_ZSTD => {
                let got = zstd_decompress(body, plane)?;
                if got != n {
                    return Err(Error::integrity(format!(
                        "floatzip plane decoded to {got} bytes, expected {n}"
                    )));
                }
            }
            m => {
                return Err(Error::integrity(format!(
                    "floatzip plane has unknown mode {m}"
                )))
            }
        }
    }
    join_planes(planes, width, dst);
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_round_trip() {
        let data: Vec<u8> = (0..2051u32).map(|i| (i * 7 + i / 5) as u8).collect();
        for width in [1, 2, 3, 4, 8, 16] {
            let len = data.len() / width * width;
            let src = &data[..len];
            let mut s = vec![0; len];
            let mut back = vec![0; len];
            shuffle(src, width, &mut s);
            let n = len / width;
            for (i, e) in src.chunks_exact(width).enumerate() {
                for (k, &b) in e.iter().enumerate() {
                    assert_eq!(s[k * n + i], b, "width {width}, element {i}, byte {k}");
                }
            }
            unshuffle(&s, width, &mut back);
            assert_eq!(back, src);
        }
    }

    #[test]
    fn floatzip_round_trip_and_corruption() {
        let vals: Vec<f32> = (0..5000)
            .map(|i| ((i as f32) * 0.37).sin() * 0.05)
            .chain([f32::NAN, -0.0, f32::INFINITY, f32::from_bits(0x7fc0_1234)])
            .collect();
        let src: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        for width in [2, 4, 8] {
            let src = &src[..src.len() / width * width];
            let mut enc = Vec::new();
            floatzip_encode(src, width, &mut enc).unwrap();
            let mut dst = vec![0u8; src.len()];
            assert_eq!(floatzip_decode(&enc, width, &mut dst).unwrap(), enc.len());
            assert_eq!(dst, src);
            for cut in [0, 3, enc.len() / 2, enc.len() - 1] {
                assert!(floatzip_decode(&enc[..cut], width, &mut dst).is_err());
            }
        }
    }

    #[test]
    fn floatzip_separates_exponents() {
        // Exponent plane of values in [0.5, 1) is a single byte value: compresses away.
        let src: Vec<u8> = (0..4096)
            .flat_map(|i| (0.5 + (i as f32) / 10000.0).to_le_bytes())
            .collect();
        let mut enc = Vec::new();
        floatzip_encode(&src, 4, &mut enc).unwrap();
        assert!(enc.len() < src.len() * 3 / 4 + 200, "{}", enc.len());
    }
}
