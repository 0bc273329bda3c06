//! The block framing of a coded tensor (docs/FORMAT.md, "Block format"), read and
//! checked before anything is allocated for the tensor.
//!
//! [`Plan::framing`] proves, from the framing alone, that the stored bytes can decode
//! to the size the header declares: the block table fits, the block lengths add up,
//! and every block is at least as long as the documented expansion limits require
//! (a zstd frame decodes to at most [`ZSTD_MAX_RATIO`] bytes per stored byte, an LZ4
//! block to at most [`LZ4_MAX_RATIO`]); zstd frame headers that state their content
//! size must state the right one, and floatzip plane headers must tile their block.
//! So a declared size is backed by stored bytes in a bounded ratio, and a payload
//! that lies about it is refused in O(blocks) time with no allocation but the table.

use super::{Plan, Stage, MAGIC, MAX_BLOCK_SCALARS};
use crate::error::{Error, Result};

/// Most bytes one stored byte of a zstd frame decodes to. RFC 8878 caps a block's
/// content at 128 KiB (Block_Maximum_Size) and the densest block (RLE) takes 4 bytes.
pub const ZSTD_MAX_RATIO: usize = 32_768;
/// Most bytes one stored byte of an LZ4 block decodes to (each length byte adds at
/// most 255 bytes of output).
pub const LZ4_MAX_RATIO: usize = 255;
/// Bytes of a floatzip plane header: u8 mode, u32 length.
pub(super) const PLANE_HEADER: usize = 5;

/// A coded tensor's framing: block size, int8 scales, and each block's stored bytes
/// with its count of kept values (sparse pipelines; 0 otherwise).
pub(super) struct Framing<'a> {
    /// Scalars per block.
    pub block: usize,
    /// One float32 scale per int8 channel (none without int8).
    pub scales: Vec<f32>,
    /// The blocks in order: stored bytes and kept count.
    pub blocks: Vec<(&'a [u8], usize)>,
}

fn corrupt(m: impl Into<String>) -> Error {
    Error::integrity(m)
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// The content size a zstd frame header states, if it states one; an error when the
/// bytes do not start with a zstd frame header.
fn zstd_content_size(frame: &[u8]) -> Result<Option<u64>> {
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

impl Plan<'_> {
    /// Read and check the framing of `stored` (see the module documentation).
    pub(super) fn framing<'a>(&self, stored: &'a [u8]) -> Result<Framing<'a>> {
        if stored.len() < 8 || stored[..4] != MAGIC {
            return Err(corrupt(
                "stored bytes do not start with the codec block header \"TWC1\"",
            ));
        }
        let block = u32_at(stored, 4);
        if block == 0 || block > MAX_BLOCK_SCALARS {
            return Err(corrupt(format!(
                "block size of {block} scalars is outside 1..={MAX_BLOCK_SCALARS}"
            )));
        }
        let nblocks = self.blocks(block);
        let sparse = self.sparse().is_some();
        let entry = if sparse { 8 } else { 4 };
        let nscales = self.nscales();
        let fits = |need: Option<usize>| need.filter(|&d| d <= stored.len());
        let table_at = fits(nscales.checked_mul(4).and_then(|s| s.checked_add(8)));
        let data_at = table_at.and_then(|t| fits(nblocks.checked_mul(entry)?.checked_add(t)));
        let (Some(table_at), Some(data_at)) = (table_at, data_at) else {
            return Err(corrupt(format!(
                "{} stored bytes cannot hold {nscales} scales and a table of {nblocks} blocks \
                 of {block} scalars (the shape declares {} scalars)",
                stored.len(),
                self.n
            )));
        };
        let scales: Vec<f32> = stored[8..table_at]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if scales.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(corrupt("an int8 scale is negative or not finite"));
        }
        let mut blocks = Vec::with_capacity(nblocks);
        let mut at = data_at;
        for (b, e) in stored[table_at..data_at].chunks_exact(entry).enumerate() {
            let len = u32_at(e, 0);
            let count = if sparse { u32_at(e, 4) } else { 0 };
            let end = at
                .checked_add(len)
                .filter(|&end| end <= stored.len())
                .ok_or_else(|| corrupt(format!("block {b} lies beyond the stored bytes")))?;
            let body = &stored[at..end];
            let m = block.min(self.n - b * block);
            self.check_block(body, m, count)
                .map_err(|e| e.context(format_args!("block {b}")))?;
            blocks.push((body, count));
            at = end;
        }
        if at != stored.len() {
            return Err(corrupt(format!(
                "{} bytes after the last block",
                stored.len() - at
            )));
        }
        Ok(Framing {
            block,
            scales,
            blocks,
        })
    }

    /// Check one block of `m` scalars (`count` kept, sparse) against the expansion
    /// limits: is it long enough to decode to what it must?
    fn check_block(&self, body: &[u8], m: usize, count: usize) -> Result<()> {
        let q = self.q;
        let floatzip = self.pipe.slot(4) == Some(Stage::FloatZip);
        let sparse = self.sparse().is_some();
        if sparse && count > m {
            return Err(corrupt(format!(
                "it claims {count} kept entries but has only {m} scalars"
            )));
        }
        // What the compressor (if any) must produce: dense, exactly m values; sparse, at
        // least one byte of index per kept value and the values (floatzip: plane headers).
        let exact = (!sparse).then_some(m * q);
        let least = if sparse {
            count
                + if floatzip {
                    PLANE_HEADER * q
                } else {
                    count * q
                }
        } else {
            m * q
        };
        let short = |need: usize, why: &str| {
            corrupt(format!(
                "its {} stored bytes cannot decode to {} bytes ({why})",
                body.len(),
                exact.unwrap_or(least).max(need)
            ))
        };
        match self.pipe.slot(5) {
            Some(Stage::Zstd(_)) => {
                if body.len() < least.div_ceil(ZSTD_MAX_RATIO) {
                    return Err(short(least, "a zstd frame expands at most 32768 times"));
                }
                if let Some(size) = zstd_content_size(body)? {
                    let ok = match exact {
                        Some(e) => size == e as u64,
                        None => size >= least as u64 && size <= (count * (5 + q)) as u64,
                    };
                    if !ok {
                        return Err(corrupt(format!(
                            "its zstd frame states {size} bytes of content, which does not fit \
                             {m} scalars ({count} kept)"
                        )));
                    }
                }
            }
            Some(_) if body.len() < least.div_ceil(LZ4_MAX_RATIO) => {
                return Err(short(least, "an LZ4 block expands at most 255 times"));
            }
            Some(_) => {}
            None if floatzip && !sparse => self.check_planes(body, m)?,
            None if exact.is_some_and(|e| body.len() != e) => {
                return Err(corrupt(format!(
                    "it holds {} bytes, {m} values of {q} bytes need {}",
                    body.len(),
                    m * q
                )))
            }
            None if body.len() < least => return Err(short(least, "too short")),
            None => {}
        }
        Ok(())
    }

    /// A dense floatzip block: `q` planes of `m` bytes each, raw or one zstd frame,
    /// whose headers tile the block exactly.
    fn check_planes(&self, body: &[u8], m: usize) -> Result<()> {
        let mut at = 0usize;
        for k in 0..self.q {
            let head = body
                .get(at..at + PLANE_HEADER)
                .ok_or_else(|| corrupt(format!("floatzip plane {k} header is truncated")))?;
            let len = u32_at(head, 1);
            let plane = body
                .get(at + PLANE_HEADER..)
                .and_then(|rest| rest.get(..len))
                .ok_or_else(|| corrupt(format!("floatzip plane {k} is truncated")))?;
            match head[0] {
                super::lossless::PLANE_RAW if len == m => {}
                super::lossless::PLANE_ZSTD if len >= m.div_ceil(ZSTD_MAX_RATIO) => {
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
}
