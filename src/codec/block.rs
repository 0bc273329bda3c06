//! One tensor coded block by block: what its blocks need ([`Plan`]), the tensor-wide
//! passes (top-k threshold, int8 scales), and the stages in one sequence each way —
//! base, sparse, quantizer, layout, compressor when encoding; the reverse when decoding.

use std::borrow::Cow;

use rayon::prelude::*;

use super::framing::{recycle, scratch, Framing};
use super::layout;
use super::pipeline::Pipeline;
use super::quantizer::{self, Channels, Positions, Quantizer};
use super::sparse::{self, Keep};
use super::{BLOCK_BYTES, MAGIC};
use crate::dtype::scalar::{scalar_of, with_float, Float};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Everything about one tensor that the block coder needs.
pub(super) struct Plan<'p> {
    /// The pipeline.
    pub pipe: &'p Pipeline,
    /// The scalar dtype (complex: its component).
    pub scalar: DType,
    /// Bytes per scalar.
    pub s: usize,
    /// Bytes per value after the quantizer.
    pub q: usize,
    /// Number of scalars.
    pub n: usize,
    /// The int8 channels of the scalars.
    pub channels: Channels,
}

impl<'p> Plan<'p> {
    /// The plan for `nbytes` of a tensor of `dtype` and `shape` under `pipe`.
    pub(super) fn new(
        pipe: &'p Pipeline,
        dtype: DType,
        shape: &[u64],
        nbytes: usize,
    ) -> Result<Self> {
        let scalar = scalar_of(dtype);
        let s = scalar.itemsize();
        let n = nbytes / s;
        Ok(Plan {
            pipe,
            scalar,
            s,
            q: pipe.value_dtype(dtype).itemsize(),
            n,
            channels: Channels::of(pipe.quantizer, shape, n)?,
        })
    }

    /// Number of int8 scales the stored bytes carry.
    pub(super) fn nscales(&self) -> usize {
        match self.pipe.quantizer {
            Some(q) if q.is_scaled() && self.n > 0 => self.channels.count,
            _ => 0,
        }
    }

    /// Stored bytes of `count` values after the quantizer (`count · q`, or the
    /// blockwise quantizers' scales and packed codes).
    pub(super) fn value_bytes(&self, count: usize) -> usize {
        Quantizer::value_bytes(self.pipe.quantizer, count, self.q)
    }

    /// Number of blocks of `block` scalars.
    pub(super) fn blocks(&self, block: usize) -> usize {
        self.n.div_ceil(block)
    }

    /// Scalars per block when encoding.
    fn encode_block_scalars(&self) -> usize {
        (BLOCK_BYTES / self.s).max(1)
    }

    /// The most stored bytes [`Self::encode`] can produce for this tensor, whatever its
    /// values: the framing, then per block every value kept (sparse), each sparse index
    /// at its longest LEB128 coding, the quantizer's bytes (with a blockwise one's
    /// scales), the layout's and the compressor's worst cases.
    pub(super) fn most_stored(&self) -> usize {
        let block = self.encode_block_scalars();
        let nblocks = self.blocks(block);
        let sparse = self.pipe.sparse.is_some();
        let entry = if sparse { 8 } else { 4 };
        // a block-local index (and a gap) is below `block`
        let index_bytes = (usize::BITS - (block.max(2) - 1).leading_zeros()).div_ceil(7) as usize;
        let block_bound = |m: usize| {
            let indices = if sparse { m * index_bytes } else { 0 };
            // the quantizer's own bytes for `m` values (a blockwise one's scales too)
            let values = match (self.pipe.layout, self.pipe.quantizer) {
                (Some(l), Some(_)) => l.most_bytes(m, self.q),
                (Some(l), None) => l.most_bytes(m, self.s),
                (None, Some(_)) => self.value_bytes(m),
                (None, None) => m * self.s,
            };
            match self.pipe.compressor {
                Some(c) => c.most_bytes(indices + values),
                None => indices + values,
            }
        };
        let full = self.n / block;
        let last = self.n % block;
        let blocks = full * block_bound(block) + if last > 0 { block_bound(last) } else { 0 };
        8 + 4 * self.nscales() + entry * nblocks + blocks
    }

    /// The block's scalars after the base stage (borrowed when there is none).
    fn staged<'a>(
        &self,
        lo: usize,
        hi: usize,
        data: &'a [u8],
        base: Option<&[u8]>,
    ) -> Result<Cow<'a, [u8]>> {
        let (a, b) = (lo * self.s, hi * self.s);
        let new = &data[a..b];
        match (self.pipe.base, base) {
            (Some(stage), Some(base)) => {
                let mut v = scratch(b - a);
                stage.encode(self.scalar, new, &base[a..b], &mut v, lo)?;
                Ok(Cow::Owned(v))
            }
            _ => Ok(Cow::Borrowed(new)),
        }
    }

    /// The sparse stage's rule for this tensor (`None` without a sparse stage).
    fn keep_rule(&self, data: &[u8], base: Option<&[u8]>, block: usize) -> Result<Option<Keep>> {
        let Some(stage) = self.pipe.sparse else {
            return Ok(None);
        };
        let magnitudes = || {
            let mags: Vec<Vec<f32>> = (0..self.blocks(block))
                .into_par_iter()
                .map(|b| {
                    let (lo, hi) = (b * block, ((b + 1) * block).min(self.n));
                    let staged = self.staged(lo, hi, data, base)?;
                    with_float!(self.scalar, T => Ok(staged
                        .chunks_exact(T::SIZE)
                        .map(T::read)
                        .filter(|x| x.to_f64() != 0.0)
                        .map(T::mag)
                        .collect::<Vec<f32>>()))
                })
                .collect::<Result<_>>()?;
            Ok(mags.concat())
        };
        stage.keep(self.n, magnitudes).map(Some)
    }

    /// The int8 scale of every channel: over the kept scalars after the base stage.
    fn int8_scales(
        &self,
        data: &[u8],
        base: Option<&[u8]>,
        keep: Option<Keep>,
        block: usize,
    ) -> Result<Vec<f32>> {
        if self.nscales() == 0 {
            return Ok(Vec::new());
        }
        let ch = self.channels;
        let partial: Vec<(usize, Vec<f64>)> = (0..self.blocks(block))
            .into_par_iter()
            .map(|b| {
                let (lo, hi) = (b * block, ((b + 1) * block).min(self.n));
                let staged = self.staged(lo, hi, data, base)?;
                let c0 = ch.of_index(lo);
                let mut maxes = vec![0f64; ch.of_index(hi - 1) - c0 + 1];
                for (c, a, b) in ch.runs(lo, hi) {
                    let m = &mut maxes[c - c0];
                    with_float!(self.scalar, T => {
                        for (i, x) in staged[a * T::SIZE..b * T::SIZE]
                            .chunks_exact(T::SIZE)
                            .map(T::read)
                            .enumerate()
                        {
                            if keep.is_some_and(|k| !k.keeps(x)) {
                                continue;
                            }
                            let v = x.to_f64().abs();
                            if !v.is_finite() {
                                return Err(Error::codec(format!(
                                    "int8 needs finite values: element {} is {x}",
                                    lo + a + i
                                )));
                            }
                            *m = m.max(v);
                        }
                        Ok(())
                    })?;
                }
                Ok((c0, maxes))
            })
            .collect::<Result<_>>()?;
        let mut maxes = vec![0f64; self.nscales()];
        for (c0, part) in partial {
            for (m, p) in maxes[c0..].iter_mut().zip(part) {
                *m = m.max(p);
            }
        }
        maxes.into_iter().map(quantizer::int8_scale).collect()
    }

    /// Encode the tensor's bytes `data` (and the base's, for base stages).
    pub(super) fn encode(&self, data: &[u8], base: Option<&[u8]>) -> Result<Vec<u8>> {
        let block = self.encode_block_scalars();
        let keep = self.keep_rule(data, base, block)?;
        let scales = self.int8_scales(data, base, keep, block)?;
        let nblocks = self.blocks(block);
        let sparse = keep.is_some();
        let entry = if sparse { 8 } else { 4 };
        let table_at = 8 + 4 * scales.len();
        let data_at = table_at + entry * nblocks;
        // Room for the tensor stored as it is: most pipelines need less, the rest grow.
        let mut out = Vec::with_capacity(data_at + data.len() + data.len() / 64);
        // fresh memory for the whole tensor: fault it in 2 MiB pages, not 4 KiB ones
        crate::memory::advise_huge_pages(out.spare_capacity_mut());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(block as u32).to_le_bytes());
        for s in &scales {
            out.extend_from_slice(&s.to_le_bytes());
        }
        // The block table, filled in below. Blocks are encoded in parallel a wave at a
        // time and appended in order; the waves reuse their buffers, so fresh memory is
        // one wave's, not the tensor's.
        out.resize(data_at, 0);
        let wave = 4 * rayon::current_num_threads().max(1);
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        for first in (0..nblocks).step_by(wave) {
            let last = (first + wave).min(nblocks);
            buffers.resize_with(last - first, Vec::new);
            let counts: Vec<u32> = buffers
                .par_iter_mut()
                .zip(first..last)
                .map(|(buf, b)| {
                    let (lo, hi) = (b * block, ((b + 1) * block).min(self.n));
                    buf.clear();
                    self.encode_block(lo, hi, data, base, keep, &scales, buf)
                })
                .collect::<Result<_>>()?;
            for ((buf, count), b) in buffers.iter().zip(counts).zip(first..last) {
                let len = u32::try_from(buf.len())
                    .map_err(|_| Error::codec("an encoded block exceeds 4 GiB"))?;
                let at = table_at + entry * b;
                out[at..at + 4].copy_from_slice(&len.to_le_bytes());
                if sparse {
                    out[at + 4..at + 8].copy_from_slice(&count.to_le_bytes());
                }
                out.extend_from_slice(buf);
            }
        }
        Ok(out)
    }

    /// Encode scalars `lo..hi` into `out` (empty); returns the number of values kept.
    /// Each stage borrows its input when it is absent; the last one writes into `out`.
    #[allow(clippy::too_many_arguments)]
    fn encode_block(
        &self,
        lo: usize,
        hi: usize,
        data: &[u8],
        base: Option<&[u8]>,
        keep: Option<Keep>,
        scales: &[f32],
        out: &mut Vec<u8>,
    ) -> Result<u32> {
        let s = self.s;
        // 1. Base.
        let staged = self.staged(lo, hi, data, base)?;
        // 2. Sparse: the kept entries' local indices and their scalars.
        let mut indices: Vec<u32> = Vec::new();
        let values: Cow<[u8]> = match keep {
            Some(keep) => {
                let mut v = scratch(0);
                with_float!(self.scalar, T => {
                    for (i, c) in staged.chunks_exact(s).enumerate() {
                        if keep.keeps(T::read(c)) {
                            indices.push(i as u32);
                            v.extend_from_slice(c);
                        }
                    }
                    Ok(())
                })?;
                recycle(staged);
                Cow::Owned(v)
            }
            None => staged,
        };
        let sparse = keep.is_some();
        let count = values.len() / s;
        // 3. Quantizer.
        let quantized: Cow<[u8]> = match self.pipe.quantizer {
            Some(stage) => {
                let mut o = scratch(self.value_bytes(count));
                let at = Positions {
                    lo,
                    indices: sparse.then_some(&indices[..]),
                };
                stage.encode(self.scalar, &values, &mut o, at, scales, self.channels)?;
                recycle(values);
                Cow::Owned(o)
            }
            None => values,
        };
        // 4. Layout, after the sparse indices: the block itself, or the compressor's input.
        let (layout, compressor) = (self.pipe.layout, self.pipe.compressor);
        let mut pre = scratch(0);
        if compressor.is_none() || sparse || layout.is_some() {
            let target = if compressor.is_none() {
                &mut *out
            } else {
                &mut pre
            };
            if sparse {
                sparse::write_indices(&indices, target);
            }
            match layout {
                Some(stage) => stage.encode(&quantized, self.q, target)?,
                None => target.extend_from_slice(&quantized),
            }
        }
        // 5. Compressor.
        if let Some(stage) = compressor {
            let inner: &[u8] = if !sparse && layout.is_none() {
                &quantized
            } else {
                &pre
            };
            let planar = layout.is_some_and(|l| !l.is_identity(self.q));
            stage.compress(inner, planar, out)?;
        }
        recycle(quantized);
        recycle(Cow::Owned(pre));
        Ok(count as u32)
    }

    /// Decode every block of `framing` into `out`, in parallel.
    pub(super) fn decode_framed(
        &self,
        framing: &Framing<'_>,
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<()> {
        let bytes = framing.block * self.s;
        out.par_chunks_mut(bytes)
            .zip(&framing.blocks)
            .enumerate()
            .try_for_each(|(b, (chunk, &(src, count)))| {
                let base = base.map(|base| &base[b * bytes..b * bytes + chunk.len()]);
                self.decode_block(b * framing.block, src, count, chunk, base, &framing.scales)
                    .map_err(|e| e.in_block(b))
            })
    }

    /// Decode one block (`count` kept values, sparse) whose first scalar is `lo` into
    /// `out`, its exact decoded size: the stages of [`Self::encode_block`] in reverse.
    pub(super) fn decode_block(
        &self,
        lo: usize,
        src: &[u8],
        count: usize,
        out: &mut [u8],
        base: Option<&[u8]>,
        scales: &[f32],
    ) -> Result<()> {
        let s = self.s;
        let m = out.len() / s;
        let sparse = self.pipe.sparse.is_some();
        if count > m {
            return Err(Error::integrity(format!(
                "a sparse block claims {count} entries but has only {m} scalars"
            )));
        }
        let quantizer = self.pipe.quantizer;
        // Dense, no quantizer, no layout: decompress straight into `out`.
        if !sparse && quantizer.is_none() && self.pipe.layout.is_none() {
            let n = match self.pipe.compressor {
                Some(stage) => stage.decompress(src, out)?,
                None => {
                    if src.len() == out.len() {
                        out.copy_from_slice(src);
                    }
                    src.len()
                }
            };
            if n != out.len() {
                return Err(Error::integrity(format!(
                    "a block decoded to {n} bytes, expected {}",
                    out.len()
                )));
            }
            return self.apply_base(out, base);
        }
        // 5. Compressor.
        let mut decompressed = scratch(0);
        let inner: &[u8] = match self.pipe.compressor {
            Some(stage) => {
                let most = if sparse {
                    5 * count + self.value_bytes(count)
                } else {
                    self.value_bytes(m)
                };
                decompressed.resize(most, 0);
                let n = stage.decompress(src, &mut decompressed)?;
                &decompressed[..n]
            }
            None => src,
        };
        // Sparse: the indices come first.
        let mut indices = Vec::new();
        let (values_src, nvals) = if sparse {
            let used = sparse::read_indices(inner, count, m, &mut indices)?;
            (&inner[used..], count)
        } else {
            (inner, m)
        };
        // 4. Layout: straight into `out` when nothing follows but the base.
        if quantizer.is_none() && !sparse {
            self.unlayout(values_src, out)?;
            recycle(Cow::Owned(decompressed));
            return self.apply_base(out, base);
        }
        let mut qvals = scratch(self.value_bytes(nvals));
        self.unlayout(values_src, &mut qvals)?;
        // 3. Quantizer; 2. sparse: scatter the values over zeros.
        let at = Positions {
            lo,
            indices: sparse.then_some(&indices[..]),
        };
        if sparse {
            let mut vals = scratch(count * s);
            self.dequantize(&qvals, &mut vals, at, scales)?;
            out.fill(0);
            for (v, &i) in vals.chunks_exact(s).zip(&indices) {
                let i = i as usize;
                out[i * s..(i + 1) * s].copy_from_slice(v);
            }
            recycle(Cow::Owned(vals));
        } else {
            self.dequantize(&qvals, out, at, scales)?;
        }
        recycle(Cow::Owned(qvals));
        recycle(Cow::Owned(decompressed));
        // 1. Base.
        self.apply_base(out, base)
    }

    /// Undo the layout stage: `src` (exactly the block's values) into `dst`.
    fn unlayout(&self, src: &[u8], dst: &mut [u8]) -> Result<()> {
        match self.pipe.layout {
            Some(stage) => stage.decode(src, self.q, dst),
            None => {
                layout::exact_values(src, dst)?;
                dst.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Undo the quantizer: values → scalars of the tensor's scalar dtype.
    fn dequantize(
        &self,
        qvals: &[u8],
        out: &mut [u8],
        at: Positions<'_>,
        scales: &[f32],
    ) -> Result<()> {
        match self.pipe.quantizer {
            Some(stage) => stage.decode(self.scalar, qvals, out, at, scales, self.channels),
            None => {
                out.copy_from_slice(qvals);
                Ok(())
            }
        }
    }

    /// Undo the base stage in place.
    fn apply_base(&self, out: &mut [u8], base: Option<&[u8]>) -> Result<()> {
        match (self.pipe.base, base) {
            (Some(stage), Some(b)) => stage.decode(self.scalar, out, b),
            _ => Ok(()),
        }
    }
}
