//! The block framing of a coded tensor (docs/FORMAT.md, "Block format"), read and
//! checked before anything is allocated for the tensor, and the per-thread pool of
//! block-sized buffers the block coder reuses.
//!
//! [`Plan::framing`] proves, from the framing alone, that the stored bytes can decode
//! to the size the header declares: the block table fits, the block lengths add up,
//! and every block is at least as long as the documented expansion limits require
//! (a zstd frame decodes to at most [`ZSTD_MAX_RATIO`] bytes per stored byte, an LZ4
//! block to at most [`LZ4_MAX_RATIO`]); zstd frame headers that state their content
//! size must state the right one, and floatzip plane headers must tile their block.
//! So a declared size is backed by stored bytes in a bounded ratio, and a payload
//! that lies about it is refused in O(blocks) time with no allocation but the table.
//!
//! [`ZSTD_MAX_RATIO`]: super::ZSTD_MAX_RATIO
//! [`LZ4_MAX_RATIO`]: super::LZ4_MAX_RATIO

use std::borrow::Cow;
use std::cell::RefCell;

use super::block::Plan;
use super::compressor::Decoded;
use super::layout;
use super::{MAGIC, MAX_BLOCK_SCALARS};
use crate::error::{Error, Result};

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
        if let Some(b) = self.pipe.quantizer.and_then(|q| q.blockwise()) {
            if block % b.block as usize != 0 {
                return Err(corrupt(format!(
                    "block size of {block} scalars is not a multiple of {}'s {} values per scale",
                    b.code.name(),
                    b.block
                )));
            }
        }
        let nblocks = self.blocks(block);
        let sparse = self.pipe.sparse.is_some();
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
                .map_err(|e| e.in_block(b))?;
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
        let sparse = self.pipe.sparse.is_some();
        if sparse && count > m {
            return Err(corrupt(format!(
                "it claims {count} kept entries but has only {m} scalars"
            )));
        }
        // What the compressor (if any) must produce: dense, exactly m values; sparse, at
        // least one byte of index per kept value and the values (floatzip: plane headers).
        let want = if sparse {
            Decoded {
                exact: None,
                least: count
                    + self
                        .pipe
                        .layout
                        .map_or(self.value_bytes(count), |l| l.least_bytes(count, q)),
                most: 5 * count + self.value_bytes(count),
            }
        } else {
            let v = self.value_bytes(m);
            Decoded {
                exact: Some(v),
                least: v,
                most: v,
            }
        };
        match (self.pipe.compressor, self.pipe.layout) {
            (Some(c), _) => c.check_stored(body, &want, m, count),
            (None, Some(l)) if !sparse => l.check_stored(body, m, q),
            (None, None)
                if !sparse && self.pipe.quantizer.is_some_and(|q| q.blockwise().is_some()) =>
            {
                layout::plain_stored(body, want.least, 1)
            }
            (None, None) if !sparse => layout::plain_stored(body, m, q),
            (None, _) if body.len() < want.least => Err(corrupt(format!(
                "its {} stored bytes cannot decode to {} bytes (too short)",
                body.len(),
                want.least
            ))),
            (None, _) => Ok(()),
        }
    }
}

thread_local! {
    /// Block-sized buffers that this thread's block encodes reuse, so that encoding a
    /// large tensor does not fault in fresh memory for every stage of every block (at
    /// most a few per thread are kept).
    static SCRATCH: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A zero-filled buffer of `len` bytes, from this thread's pool when it has one.
pub(super) fn scratch(len: usize) -> Vec<u8> {
    let mut v = SCRATCH.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    v.clear();
    v.resize(len, 0);
    v
}

/// Give an owned stage buffer back to this thread's pool.
pub(super) fn recycle(b: Cow<'_, [u8]>) {
    if let Cow::Owned(v) = b {
        SCRATCH.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < 4 {
                pool.push(v);
            }
        });
    }
}
