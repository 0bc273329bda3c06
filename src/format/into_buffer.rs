//! Encoding into the caller's memory: [`encoded_size`] says how many bytes a payload
//! takes (exactly for tensors stored raw, at most otherwise), and [`encode_into`] writes
//! it into a buffer the caller reuses, so that a loop encoding the same shapes again and
//! again touches no fresh page (fresh pages cost the kernel's zeroing, slower than
//! hashing).

use rayon::prelude::*;

use super::write::{check, lay_out, prepare, EncodeOptions, TensorInput};
use crate::codec::Pipeline;
use crate::error::{Error, Result};

/// How many bytes a payload takes: `bytes` exactly when `exact`, else at most `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedSize {
    /// The payload's length, or a bound on it.
    pub bytes: usize,
    /// True when every tensor is stored raw: `bytes` is then the length [`encode_into`]
    /// returns (metadata, structure, keys, signatures and encryption included).
    pub exact: bool,
}

/// The size of the payload [`prepare`] would lay out for `inputs` and `opts`, without
/// running a codec: raw tensors at their size, coded ones at the most their pipeline
/// can store ([`Pipeline::most_stored`]; `"auto"` is resolved against the tensor first,
/// as encoding does). The header is laid out with those lengths, so the total bounds
/// the payload's (every field is no longer for smaller lengths and offsets).
pub fn encoded_size(inputs: &[TensorInput<'_>], opts: &EncodeOptions<'_>) -> Result<EncodedSize> {
    let checked = check(inputs, opts)?;
    let sized: Vec<(Pipeline, usize)> = inputs
        .par_iter()
        .map(|input| {
            let t = &input.tensor;
            let pipeline = Pipeline::parse(input.codec)
                .and_then(|p| p.resolve(t.dtype, t.data))
                .map_err(|e| e.in_tensor(t.name))?;
            let most = pipeline
                .most_stored(t.dtype, t.shape, t.data.len())
                .map_err(|e| e.in_tensor(t.name))?;
            Ok((pipeline, most))
        })
        .collect::<Result<_>>()?;
    let exact = sized.iter().all(|(p, _)| p.is_raw());
    let (pipelines, lengths): (Vec<Pipeline>, Vec<usize>) = sized.into_iter().unzip();
    let prepared = lay_out(inputs, opts, checked, pipelines, &lengths)?;
    Ok(EncodedSize {
        bytes: prepared.total_len(),
        exact,
    })
}

/// Encode `inputs` into the start of `out`; returns the payload's length. When the
/// payload does not fit, [`Error::BufferTooSmall`] says how many bytes it needs: the
/// check comes after the codecs ran and before anything is written, and nothing is
/// ever written past the payload's end.
pub fn encode_into(
    inputs: &[TensorInput<'_>],
    opts: &EncodeOptions<'_>,
    out: &mut [u8],
) -> Result<usize> {
    let prepared = prepare(inputs, opts)?;
    let needed = prepared.total_len();
    if needed > out.len() {
        return Err(Error::BufferTooSmall {
            needed: needed as u64,
            available: out.len() as u64,
        });
    }
    prepared.write_into(&mut out[..needed])?;
    Ok(needed)
}

#[cfg(test)]
#[path = "into_buffer_tests.rs"]
mod tests;
