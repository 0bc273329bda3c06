//! The add pass of the mean: surveyed updates added into per-tensor sums, and the sums
//! turned into the result.

use super::kernels::{add_scaled, finish, Acc};
use super::{Contribution, TensorSpec};
use crate::container::TensorView;
use crate::error::Result;

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
    ) -> Result<()> {
        match self {
            Sums::F32(acc) => add_tensor(acc, spec, t, base, updates, coef, scratch),
            Sums::F64(acc) => add_tensor(acc, spec, t, base, updates, coef, scratch),
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

/// Add every update's tensor `t`, times `coef[u]`, into `acc`: encoded tensors one
/// update at a time through `scratch`, tensors readable in place all together, block by
/// block (each byte of every update read once, the block of `acc` kept in cache).
/// The updates were surveyed: their checksums are not checked again.
/// Parallelism is across tensors only: nesting it here would let a waiting worker start
/// another tensor with another scratch block, and memory would grow past one per thread.
pub(super) fn add_tensor<A: Acc>(
    acc: &mut [A],
    spec: &TensorSpec,
    t: usize,
    base: Option<TensorView<'_>>,
    updates: &[&Contribution<'_>],
    coef: &[f64],
    scratch: &mut Vec<u8>,
) -> Result<()> {
    let mut in_place: Vec<(&[u8], bool, f64)> = Vec::new();
    for (u, c) in updates.iter().enumerate() {
        if coef[u] == 0.0 {
            continue;
        }
        let relative = !c.kind.is_difference();
        let j = c.index[t];
        match c.source.in_place(j) {
            Some((bytes, _)) => in_place.push((bytes, relative, coef[u])),
            None => {
                let x = c
                    .source
                    .values(j, scratch, base, false)
                    .map_err(|e| super::about_update(c.id, e))?;
                let b = base.filter(|_| relative).map(|b| b.data);
                add_scaled(acc, spec.dtype, x, b, coef[u]);
            }
        }
    }
    let size = spec.dtype.itemsize();
    for (k, a) in acc.chunks_mut(FUSED_BLOCK).enumerate() {
        let range = k * FUSED_BLOCK * size..(k * FUSED_BLOCK + a.len()) * size;
        for &(x, relative, coef) in &in_place {
            let b = base.filter(|_| relative).map(|b| &b.data[range.clone()]);
            add_scaled(a, spec.dtype, &x[range.clone()], b, coef);
        }
    }
    Ok(())
}
