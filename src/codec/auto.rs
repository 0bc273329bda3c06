//! `auto`: the smallest lossless pipeline for one tensor, picked on a sample of it.

use super::layout::Layout;
use super::pipeline::Pipeline;
use super::spec::AUTO_CANDIDATES;
use crate::dtype::DType;
use crate::error::Result;

/// `auto` stores raw unless the best pipeline reaches this fraction of the sample.
const AUTO_MAX_RATIO: f64 = 0.95;
/// `auto` samples [`AUTO_SAMPLE_PIECES`] evenly spaced pieces of this many bytes.
const AUTO_SAMPLE_BYTES: usize = 32 << 10;
/// How many pieces `auto` samples (the whole tensor when it is no larger).
const AUTO_SAMPLE_PIECES: usize = 8;

impl Pipeline {
    /// The concrete pipeline to store: for `"auto"`, the smallest lossless pipeline on a
    /// sample of `data` (raw when none saves at least 5%); any other pipeline as is.
    pub fn resolve(&self, dtype: DType, data: &[u8]) -> Result<Pipeline> {
        if !self.is_auto() {
            return Ok(self.clone());
        }
        let size = dtype.itemsize();
        let piece = AUTO_SAMPLE_BYTES / size * size;
        // Evenly spaced pieces, the first at the start and the last at the end, each
        // encoded on its own (as blocks are), or the whole tensor when it is small.
        let pieces: Vec<&[u8]> = if data.len() <= AUTO_SAMPLE_PIECES * piece {
            vec![data]
        } else {
            let last = (data.len() - piece) / size;
            (0..AUTO_SAMPLE_PIECES)
                .map(|k| {
                    let at = last * k / (AUTO_SAMPLE_PIECES - 1) * size;
                    &data[at..at + piece]
                })
                .collect()
        };
        let sampled: usize = pieces.iter().map(|p| p.len()).sum();
        if sampled == 0 {
            return Ok(Pipeline::default());
        }
        let mut best = (Pipeline::default(), sampled);
        for spec in AUTO_CANDIDATES {
            let p = Pipeline::parse(spec)?;
            let idle = p.layout.is_some_and(|l: Layout| l.is_identity(size));
            if idle || p.check(dtype).is_err() {
                continue;
            }
            let mut len = 0;
            for piece in &pieces {
                len += p
                    .encode(dtype, &[(piece.len() / size) as u64], piece, None)?
                    .len();
            }
            if len < best.1 {
                best = (p, len);
            }
        }
        if best.1 as f64 > AUTO_MAX_RATIO * sampled as f64 {
            return Ok(Pipeline::default());
        }
        Ok(best.0)
    }
}
