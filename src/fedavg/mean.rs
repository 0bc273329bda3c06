//! The add pass of the mean: updates added into per-tensor sums — scanning what they
//! add and, for the batch, hashing raw tensors in the same pass — and the sums turned
//! into the result.

use super::kernels::{add_scan, finish, Acc, Scan, BLOCK};
use super::{Contribution, TensorSpec};
use crate::error::{Checked, Error, Result};
use crate::format::TensorView;

/// Elements per block of the in-place add (256 KiB of float32: cache-sized).
const FUSED_BLOCK: usize = 64 << 10;

/// The sums of one tensor: float32 or float64.
#[derive(Debug, Clone)]
pub(super) enum Sums {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Sums {
    /// Add `updates`' tensor `t` times `coef[u]` (see [`add_tensor`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        spec: &TensorSpec,
        t: usize,
        base: Option<TensorView<'_>>,
        updates: &[&Contribution<'_>],
        coef: &[f64],
        scratch: &mut Vec<u8>,
        verify: bool,
    ) -> Result<Vec<Scan>> {
        match self {
            Sums::F32(acc) => add_tensor(acc, spec, t, base, updates, coef, scratch, verify),
            Sums::F64(acc) => add_tensor(acc, spec, t, base, updates, coef, scratch, verify),
        }
    }

    /// Write `base + sums * inv_w` (or `sums * inv_w`) as the tensor's dtype into `out`.
    pub(super) fn finish(
        &self,
        spec: &TensorSpec,
        base: Option<&[u8]>,
        inv_w: f64,
        out: &mut [u8],
    ) {
        match self {
            Sums::F32(acc) => finish(acc, spec.dtype, base, inv_w, out),
            Sums::F64(acc) => finish(acc, spec.dtype, base, inv_w, out),
        }
    }
}

/// An update's tensor read in place by [`add_tensor`].
struct InPlace<'a> {
    u: usize,
    bytes: &'a [u8],
    /// Relative to the base (a model, not a difference).
    relative: bool,
    coef: f64,
    /// Its hasher and expected checksum, when verifying.
    check: Option<(blake3::Hasher, &'a [u8; 32])>,
}

/// Add every update's tensor `t`, times `coef[u]`, into `acc`, and return what each
/// update's tensor held (its largest `|d|`, whether some value is not finite): encoded
/// tensors one update at a time through `scratch`, tensors readable in place all
/// together, block by block (each byte of every update read once, the block of `acc`
/// kept in cache). With `verify`, checksums are checked in the same pass (the caller
/// has checked the padding); a mismatch is an error naming the update.
/// Parallelism is across tensors only: nesting it here would let a waiting worker start
/// another tensor with another scratch block, and memory would grow past one per thread.
#[allow(clippy::too_many_arguments)]
pub(super) fn add_tensor<A: Acc>(
    acc: &mut [A],
    spec: &TensorSpec,
    t: usize,
    base: Option<TensorView<'_>>,
    updates: &[&Contribution<'_>],
    coef: &[f64],
    scratch: &mut Vec<u8>,
    verify: bool,
) -> Result<Vec<Scan>> {
    let mut scans = vec![Scan::default(); updates.len()];
    let mut in_place: Vec<InPlace<'_>> = Vec::new();
    for (u, c) in updates.iter().enumerate() {
        if coef[u] == 0.0 {
            continue;
        }
        let relative = !c.kind.is_difference();
        let j = c.index[t];
        match c.source.in_place(j) {
            Some((bytes, hash)) => {
                let check = hash.filter(|_| verify).map(|h| (blake3::Hasher::new(), h));
                in_place.push(InPlace {
                    u,
                    bytes,
                    relative,
                    coef: coef[u],
                    check,
                });
            }
            None => {
                let rel = base.filter(|_| relative).map(|b| b.data);
                let size = spec.dtype.itemsize();
                // One codec block decoded at a time, added where it belongs: the sums
                // and a block of scratch, never the whole decoded tensor.
                let mut scan = Scan::default();
                let blockwise = c
                    .source
                    .for_each_block(j, scratch, base, verify, BLOCK, |at, x| {
                        let b = rel.map(|r| &r[at * size..at * size + x.len()]);
                        let a = &mut acc[at..at + x.len() / size];
                        scan.join(add_scan(a, spec.dtype, x, b, coef[u]), at);
                    })
                    .map_err(|e| super::about_update(c.id, e))?;
                scans[u] = if blockwise {
                    scan
                } else {
                    let x = c
                        .source
                        .values(j, scratch, base, verify)
                        .map_err(|e| super::about_update(c.id, e))?;
                    add_scan(acc, spec.dtype, x, rel, coef[u])
                };
            }
        }
    }
    let size = spec.dtype.itemsize();
    for (k, a) in acc.chunks_mut(FUSED_BLOCK).enumerate() {
        let range = k * FUSED_BLOCK * size..(k * FUSED_BLOCK + a.len()) * size;
        for p in &mut in_place {
            let x = &p.bytes[range.clone()];
            if let Some((h, _)) = &mut p.check {
                h.update(x);
            }
            let b = base.filter(|_| p.relative).map(|b| &b.data[range.clone()]);
            scans[p.u].join(add_scan(a, spec.dtype, x, b, p.coef), 0);
        }
    }
    for InPlace { u, check, .. } in in_place {
        if let Some((h, expected)) = check {
            if h.finalize().as_bytes() != expected {
                return Err(Error::checksum(Checked::TensorBytes)
                    .in_tensor(&spec.name)
                    .in_update(updates[u].id));
            }
        }
    }
    Ok(scans)
}
