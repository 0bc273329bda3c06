//! Compressors (slot 5): `zstd[:level]` (one zstd frame per block) and `lz4` (one LZ4
//! block per block), with the expansion limits a decoder checks before decompressing.

use std::cell::RefCell;

use crate::error::{Error, Result};

/// A compressor stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Compressor {
    /// zstd at a level (1..=22, or negative for the fast levels).
    Zstd(i32),
    /// LZ4 block compression.
    Lz4,
}

/// Most bytes one stored byte of a zstd frame decodes to. RFC 8878 caps a block's
/// content at 128 KiB (Block_Maximum_Size) and the densest block (RLE) takes 4 bytes.
pub const ZSTD_MAX_RATIO: usize = 32_768;
/// Most bytes one stored byte of an LZ4 block decodes to (each length byte adds at
/// most 255 bytes of output).
pub const LZ4_MAX_RATIO: usize = 255;

/// What a compressed block must decode to, for [`Compressor::check_stored`]: exactly
/// `exact` bytes (dense), or at least `least` and at most `most` (sparse).
pub(super) struct Decoded {
    /// The exact decoded size, when known.
    pub exact: Option<usize>,
    /// The fewest bytes it may decode to.
    pub least: usize,
    /// The most bytes it may decode to.
    pub most: usize,
}

impl Compressor {
    /// Append the compressed `src` to `out`; `planar` when `src` is byte planes (after
    /// `shuffle`), which have almost no short matches worth coding (see [`zstd_tuning`]).
    pub(super) fn compress(self, src: &[u8], planar: bool, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Compressor::Zstd(level) => zstd_compress(src, zstd_tuning(level, planar), out),
            Compressor::Lz4 => {
                lz4_compress(src, out);
                Ok(())
            }
        }
    }

    /// The most bytes compressing `len` bytes can produce (zstd's `ZSTD_compressBound`,
    /// LZ4's maximum output size).
    pub(super) fn most_bytes(self, len: usize) -> usize {
        match self {
            Compressor::Zstd(_) => zstd::zstd_safe::compress_bound(len),
            Compressor::Lz4 => lz4_flex::block::get_maximum_output_size(len),
        }
    }

    /// Decompress `src` into `dst` (the largest size the block can have); returns the
    /// decoded length.
    pub(super) fn decompress(self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        match self {
            Compressor::Zstd(_) => zstd_decompress(src, dst),
            Compressor::Lz4 => lz4_decompress(src, dst),
        }
    }

    /// Check, from its length and header alone, that `body` can decode to `want`
    /// (docs/FORMAT.md, "Expansion limits"); `m` scalars, `count` kept, for messages.
    pub(super) fn check_stored(
        self,
        body: &[u8],
        want: &Decoded,
        m: usize,
        count: usize,
    ) -> Result<()> {
        let short = |why: &str| {
            Error::integrity(format!(
                "its {} stored bytes cannot decode to {} bytes ({why})",
                body.len(),
                want.exact.unwrap_or(want.least).max(want.least)
            ))
        };
        match self {
            Compressor::Zstd(_) => {
                if body.len() < want.least.div_ceil(ZSTD_MAX_RATIO) {
                    return Err(short("a zstd frame expands at most 32768 times"));
                }
                if let Some(size) = zstd_content_size(body)? {
                    let ok = match want.exact {
                        Some(e) => size == e as u64,
                        None => size >= want.least as u64 && size <= want.most as u64,
                    };
                    if !ok {
                        return Err(Error::integrity(format!(
                            "its zstd frame states {size} bytes of content, which does not fit \
                             {m} scalars ({count} kept)"
                        )));
                    }
                }
            }
            Compressor::Lz4 if body.len() < want.least.div_ceil(LZ4_MAX_RATIO) => {
                return Err(short("an LZ4 block expands at most 255 times"));
            }
            Compressor::Lz4 => {}
        }
        Ok(())
    }
}

/// The content size a zstd frame header states, if it states one; an error when the
/// bytes do not start with a zstd frame header.
pub(super) fn zstd_content_size(frame: &[u8]) -> Result<Option<u64>> {
    let corrupt = |m: &str| Error::integrity(m);
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
    if frame.len() < 5 || frame[..4] != ZSTD_MAGIC {
        return Err(corrupt("a block is not a zstd frame"));
    }
    let fhd = frame[4];
    let single_segment = fhd & 0x20 != 0;
    if fhd & 0x08 != 0 {
        return Err(corrupt("a zstd frame header sets its reserved bit"));
    }
    let dict_len = [0, 1, 2, 4][(fhd & 3) as usize];
    let fcs_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let at = 5 + usize::from(!single_segment) + dict_len;
    if fcs_len == 0 {
        return Ok(None);
    }
    let field = frame
        .get(at..at + fcs_len)
        .ok_or_else(|| corrupt("a zstd frame header is truncated"))?;
    let mut v = [0u8; 8];
    v[..fcs_len].copy_from_slice(field);
    let size = u64::from_le_bytes(v);
    Ok(Some(if fcs_len == 2 { size + 256 } else { size }))
}

/// How zstd is set up for one block: the level, and for byte planes the shortest match
/// and the strategy (`None`: the level's own).
#[derive(Debug, Clone, Copy, PartialEq)]
struct ZstdTuning {
    level: i32,
    min_match: Option<u32>,
    fast: bool,
}

/// Highest level whose match search is tuned for byte planes; above it the level's own
/// search runs (a user asking for a high level asks for its ratio, whatever the time).
const PLANAR_TUNED_MAX_LEVEL: i32 = 9;

/// The zstd set-up for a block at `level`. Byte planes of floats (`shuffle`'s output) are
/// nearly match-free: sign/mantissa planes are noise and the exponent plane is better
/// Huffman-coded than matched with 4-6 byte matches, so for levels up to
/// [`PLANAR_TUNED_MAX_LEVEL`] matches shorter than 7 bytes are not searched for, and up
/// to level 3 the single-hash `fast` strategy runs instead of `dfast`. On trained float32
/// weights this is both smaller and about twice as fast as the level's defaults; long
/// runs (zeros, repeated values) are still found. The output is an ordinary zstd frame.
fn zstd_tuning(level: i32, planar: bool) -> ZstdTuning {
    let tuned = planar && level <= PLANAR_TUNED_MAX_LEVEL;
    ZstdTuning {
        level,
        min_match: tuned.then_some(7),
        fast: tuned && level <= 3,
    }
}

thread_local! {
    static ZSTD_C: RefCell<Option<(ZstdTuning, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static ZSTD_D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Append the zstd frame of `src` set up as `tuning` says to `out` (one reused context
/// per thread, rebuilt when the set-up changes).
fn zstd_compress(src: &[u8], tuning: ZstdTuning, out: &mut Vec<u8>) -> Result<()> {
    use zstd::zstd_safe::{CParameter, Strategy};
    let fail = |e: std::io::Error| Error::codec(format!("zstd failed: {e}"));
    ZSTD_C.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(t, _)| *t) != Some(tuning) {
            *slot = None;
            let mut c = zstd::bulk::Compressor::new(tuning.level).map_err(fail)?;
            if let Some(m) = tuning.min_match {
                c.set_parameter(CParameter::MinMatch(m)).map_err(fail)?;
            }
            if tuning.fast {
                c.set_parameter(CParameter::Strategy(Strategy::ZSTD_fast))
                    .map_err(fail)?;
            }
            *slot = Some((tuning, c));
        }
        let (_, c) = slot.as_mut().expect("just set");
        append_compressed(c, src, out).map_err(fail)
    })
}

/// Compress `src` with `c` straight into the spare capacity at the end of `out`.
fn append_compressed(
    c: &mut zstd::bulk::Compressor<'static>,
    src: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.reserve(zstd::zstd_safe::compress_bound(src.len()));
    let mut cursor = std::io::Cursor::new(out);
    let end = cursor.get_ref().len() as u64;
    cursor.set_position(end);
    c.compress_to_buffer(src, &mut cursor).map(|_| ())
}

/// Decompress the zstd frame `src` into `dst`; returns the number of bytes written.
/// A frame that would not fit `dst` is corrupt (`dst` is the largest possible size).
pub(super) fn zstd_decompress(src: &[u8], dst: &mut [u8]) -> Result<usize> {
    ZSTD_D.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| Error::codec(format!("zstd failed: {e}")))?,
            );
        }
        slot.as_mut()
            .expect("just set")
            .decompress_to_buffer(src, dst)
            .map_err(|e| Error::integrity(format!("zstd data is corrupt: {e}")))
    })
}

/// Append the LZ4 block of `src` to `out`.
fn lz4_compress(src: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + lz4_flex::block::get_maximum_output_size(src.len()), 0);
    let n = lz4_flex::block::compress_into(src, &mut out[at..])
        .expect("the output has the maximum compressed size");
    out.truncate(at + n);
}

/// Decompress the LZ4 block `src` into `dst`; returns the number of bytes written.
fn lz4_decompress(src: &[u8], dst: &mut [u8]) -> Result<usize> {
    lz4_flex::block::decompress_into(src, dst)
        .map_err(|e| Error::integrity(format!("lz4 data is corrupt: {e}")))
}
