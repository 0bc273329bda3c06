//! Sparse stages (slot 2): which entries `topk:<fraction>` and `threshold:<value>` keep,
//! and the compact (LEB128 gap) coding of their sorted indices.

use crate::dtype::scalar::{is_float, Float};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A sparse stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sparse {
    /// Keep the `fraction` largest-magnitude entries.
    TopK(f64),
    /// Keep the entries with magnitude above `value`.
    Threshold(f64),
}

impl Sparse {
    /// Why this stage cannot encode a tensor of `dtype`.
    pub(super) fn misfit(self, dtype: DType) -> Option<String> {
        (!is_float(dtype)).then(|| "it needs a float16, bfloat16, float32 or float64 tensor".into())
    }

    /// The rule for a tensor of `n` scalars. `magnitudes` gives [`Float::mag`] of every
    /// nonzero scalar the stage sees (called only by rules that rank them).
    pub(super) fn keep(
        self,
        n: usize,
        magnitudes: impl FnOnce() -> Result<Vec<f32>>,
    ) -> Result<Keep> {
        match self {
            Sparse::Threshold(v) => Ok(Keep::Above(v)),
            Sparse::TopK(fraction) => {
                let k = ((fraction * n as f64).ceil() as usize).min(n);
                Ok(Keep::AtLeast(kth_largest(magnitudes()?, k)))
            }
        }
    }
}

/// Which entries survive a sparse stage. NaN counts as the largest magnitude (kept);
/// zeros (either sign) are never kept, since decode fills with +0.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keep {
    /// Keep nonzero `x` with `mag(x) >= t` (float32 magnitudes): `topk`.
    AtLeast(f32),
    /// Keep `x` with `|x| > v` (float64): `threshold`.
    Above(f64),
}

impl Keep {
    #[inline]
    pub(crate) fn keeps<T: Float>(self, x: T) -> bool {
        let v = x.to_f64();
        if v.is_nan() {
            return true;
        }
        match self {
            Keep::AtLeast(t) => v != 0.0 && x.mag() >= t,
            Keep::Above(t) => v.abs() > t,
        }
    }
}

/// The top-k threshold over the magnitudes of the nonzero scalars `mags`: the k-th
/// largest, or 0 (keep every nonzero) when there are no more than k of them.
fn kth_largest(mut mags: Vec<f32>, k: usize) -> f32 {
    if k == 0 {
        return f32::INFINITY;
    }
    if mags.len() <= k {
        return 0.0;
    }
    let at = mags.len() - k;
    let (_, t, _) = mags.select_nth_unstable_by(at, f32::total_cmp);
    *t
}

/// Append the LEB128 coding of the sorted block-local `indices`: the first index, then
/// each gap minus one.
pub(crate) fn write_indices(indices: &[u32], out: &mut Vec<u8>) {
    let mut prev: Option<u32> = None;
    for &i in indices {
        let mut v = match prev {
            None => i,
            Some(p) => i - p - 1,
        };
        prev = Some(i);
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
}

/// Read `count` indices written by [`write_indices`] from the start of `src` into `out`,
/// checking each is below `limit`. Returns the bytes consumed.
pub(crate) fn read_indices(
    src: &[u8],
    count: usize,
    limit: usize,
    out: &mut Vec<u32>,
) -> Result<usize> {
    let bad =
        || Error::integrity("sparse indices are corrupt (truncated, unsorted or out of range)");
    out.clear();
    out.reserve(count.min(limit));
    let mut pos = 0usize;
    let mut next: u64 = 0;
    for _ in 0..count {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *src.get(pos).ok_or_else(bad)?;
            pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(bad());
            }
        }
        let idx = next + v;
        if idx >= limit as u64 {
            return Err(bad());
        }
        out.push(idx as u32);
        next = idx + 1;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip_and_reject_bad() {
        let idx = [0u32, 1, 5, 200, 100_000, 100_001];
        let mut enc = Vec::new();
        write_indices(&idx, &mut enc);
        let mut back = Vec::new();
        assert_eq!(
            read_indices(&enc, 6, 100_002, &mut back).unwrap(),
            enc.len()
        );
        assert_eq!(back, idx);
        assert!(read_indices(&enc, 6, 100_001, &mut back).is_err());
        assert!(read_indices(&enc[..enc.len() - 1], 6, 1 << 20, &mut back).is_err());
        assert!(read_indices(&[0xff; 10], 1, 1 << 20, &mut back).is_err());
    }

    #[test]
    fn keep_rules() {
        assert_eq!(kth_largest(vec![1.0, 5.0, 3.0, 2.0], 2), 3.0);
        assert_eq!(kth_largest(vec![1.0], 2), 0.0);
        let k = Keep::AtLeast(0.0);
        assert!(!k.keeps(0.0f32) && !k.keeps(-0.0f32) && k.keeps(f32::NAN) && k.keeps(1e-40f32));
        let t = Keep::Above(0.5);
        assert!(!t.keeps(0.5f32) && t.keeps(-0.75f32) && t.keeps(f32::NAN));
    }
}
