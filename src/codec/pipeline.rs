//! [`Pipeline`]: a parsed codec spec, one typed optional stage per slot, and what a
//! container asks of it (fit checks, encode, decode, framing checks, per-block decode).

use std::fmt;

use super::base::Base;
use super::block::Plan;
use super::compressor::Compressor;
use super::framing::Framing;
use super::layout::Layout;
use super::quantizer::Quantizer;
use super::sparse::Sparse;
use super::spec::{self, Slot, Stage};
use crate::dtype::scalar::scalar_of;
use crate::dtype::DType;
use crate::error::{Error, Kind, Result};

/// A parsed codec pipeline: at most one stage per slot, applied in slot order when
/// encoding (base, sparse, quantizer, layout, compressor) and in reverse when decoding.
/// The empty pipeline is `"raw"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pipeline {
    /// `"auto"`: resolved per tensor before encoding ([`Pipeline::resolve`]).
    pub(super) auto: bool,
    /// Slot 1: a delta against a base tensor.
    pub(super) base: Option<Base>,
    /// Slot 2: which entries are kept.
    pub(super) sparse: Option<Sparse>,
    /// Slot 3: what the kept values are narrowed to.
    pub(super) quantizer: Option<Quantizer>,
    /// Slot 4: how the values' bytes are arranged.
    pub(super) layout: Option<Layout>,
    /// Slot 5: how each block's bytes are compressed.
    pub(super) compressor: Option<Compressor>,
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stages = self.stages();
        if stages.is_empty() {
            return f.write_str("raw");
        }
        for (i, s) in stages.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl Pipeline {
    /// Parse a spec such as `"raw"`, `"zstd"`, `"shuffle+zstd:3"`, `"delta+topk:0.01+f16+zstd"`.
    pub fn parse(spec: &str) -> Result<Pipeline> {
        let spec = spec.trim();
        if spec == "raw" {
            return Ok(Pipeline::default());
        }
        if spec.is_empty() {
            return Err(Error::codec("empty codec spec (use \"raw\" for none)"));
        }
        let invalid = |e: Error| Error::codec(format!("invalid codec spec {spec:?}: {e}"));
        let stages = spec
            .split('+')
            .map(|t| spec::parse_stage(t.trim()))
            .collect::<Result<Vec<_>>>()
            .map_err(invalid)?;
        for pair in stages.windows(2) {
            Self::may_follow(pair[0], pair[1]).map_err(invalid)?;
        }
        let mut p = Pipeline::default();
        for stage in stages {
            match stage {
                Stage::Auto => p.auto = true,
                Stage::Base(s) => p.base = Some(s),
                Stage::Sparse(s) => p.sparse = Some(s),
                Stage::Quantizer(s) => p.quantizer = Some(s),
                Stage::Layout(s) => p.layout = Some(s),
                Stage::Compressor(s) => p.compressor = Some(s),
            }
        }
        Ok(p)
    }

    /// Whether stage `b` may come right after stage `a`.
    fn may_follow(a: Stage, b: Stage) -> Result<()> {
        if a == Stage::Auto || b == Stage::Auto {
            return Err(Error::codec("\"auto\" must be the whole spec"));
        }
        if b.slot() <= a.slot() {
            return Err(Error::codec(format!(
                "{b} cannot follow {a}: stages go in the order {}, each slot at most once",
                spec::slot_order()
            )));
        }
        match (a, b.slot()) {
            (Stage::Layout(l), Slot::Compressor) if l.compresses() => Err(Error::codec(format!(
                "{a} entropy-codes its output itself; drop the compressor after it"
            ))),
            (Stage::Quantizer(q), Slot::Layout) if q.blockwise().is_some() => {
                Err(Error::codec(format!(
                    "{a} packs its scales and codes itself; no layout stage can follow it \
                     (a compressor can: \"{a}+zstd\")"
                )))
            }
            (Stage::Base(base), Slot::Sparse | Slot::Quantizer) if !base.is_numeric() => {
                Err(Error::codec(format!(
                    "{a} deltas are bit patterns, not numbers: {b} cannot follow {a} \
                     (use delta for lossy deltas)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The stages present, in slot order.
    fn stages(&self) -> Vec<Stage> {
        let auto = self.auto.then_some(Stage::Auto);
        auto.into_iter()
            .chain(self.base.map(Stage::Base))
            .chain(self.sparse.map(Stage::Sparse))
            .chain(self.quantizer.map(Stage::Quantizer))
            .chain(self.layout.map(Stage::Layout))
            .chain(self.compressor.map(Stage::Compressor))
            .collect()
    }

    /// True when the stored bytes are the tensor bytes (zero-copy decode possible).
    pub fn is_raw(&self) -> bool {
        *self == Pipeline::default()
    }

    /// True for `"auto"`, which [`Self::resolve`] turns into a concrete pipeline.
    pub fn is_auto(&self) -> bool {
        self.auto
    }

    /// True when no stage loses information (decode is bit-exact).
    pub fn is_lossless(&self) -> bool {
        self.base.is_none_or(Base::is_lossless) && self.sparse.is_none() && self.quantizer.is_none()
    }

    /// True when decoding needs the base tensor (delta stages).
    pub fn needs_base(&self) -> bool {
        self.base.is_some()
    }

    /// The dtype of the values the layout and compressor stages see.
    pub(super) fn value_dtype(&self, dtype: DType) -> DType {
        self.quantizer
            .map_or(scalar_of(dtype), Quantizer::value_dtype)
    }

    /// Check that this pipeline can encode a tensor of `dtype`.
    pub fn check(&self, dtype: DType) -> Result<()> {
        let misfit = self
            .base
            .and_then(|s| Some((Stage::Base(s), s.misfit(scalar_of(dtype))?)))
            .or_else(|| {
                self.sparse
                    .and_then(|s| Some((Stage::Sparse(s), s.misfit(dtype)?)))
            })
            .or_else(|| {
                self.quantizer
                    .and_then(|s| Some((Stage::Quantizer(s), s.misfit(dtype)?)))
            })
            .or_else(|| {
                let values = self.value_dtype(dtype);
                self.layout
                    .and_then(|s| Some((Stage::Layout(s), s.misfit(values)?)))
            });
        match misfit {
            None => Ok(()),
            Some((stage, why)) => Err(Error::codec(format!(
                "codec {self}: stage {stage} does not fit a {dtype} tensor: {why}"
            ))),
        }
    }

    /// Encode a tensor's little-endian bytes (`"auto"` is resolved first; see
    /// [`Self::resolve`], whose result the header must record).
    pub fn encode(
        &self,
        dtype: DType,
        shape: &[u64],
        data: &[u8],
        base: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        if self.is_auto() {
            return self.resolve(dtype, data)?.encode(dtype, shape, data, base);
        }
        if self.is_raw() {
            return Ok(data.to_vec());
        }
        self.check(dtype)?;
        let plan = Plan::new(self, dtype, shape, data.len())?;
        let base = match (self.needs_base(), base) {
            (false, _) => None,
            (true, None) => return Err(Error::codec(format!("codec {self} needs a base tensor"))),
            (true, Some(b)) if b.len() != data.len() => {
                return Err(Error::input(format!(
                    "base tensor has {} bytes, the tensor {}",
                    b.len(),
                    data.len()
                )))
            }
            (true, Some(b)) => Some(b),
        };
        plan.encode(data, base)
    }

    /// The most stored bytes [`Self::encode`] can produce for a tensor of `dtype` and
    /// `shape` (`nbytes` of it), whatever its values: exactly `nbytes` for raw. `"auto"`
    /// must be resolved first (its choice depends on the values).
    pub fn most_stored(&self, dtype: DType, shape: &[u64], nbytes: usize) -> Result<usize> {
        if self.is_auto() {
            return Err(Error::codec(
                "codec \"auto\" is resolved against the tensor before it can be sized",
            ));
        }
        if self.is_raw() {
            return Ok(nbytes);
        }
        self.check(dtype)?;
        Ok(Plan::new(self, dtype, shape, nbytes)?.most_stored())
    }

    /// Decode stored bytes into `out`, which has exactly the decoded size.
    pub fn decode(
        &self,
        dtype: DType,
        shape: &[u64],
        stored: &[u8],
        base: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<()> {
        if self.is_raw() {
            if stored.len() != out.len() {
                return Err(Error::integrity(format!(
                    "raw tensor holds {} bytes, expected {}",
                    stored.len(),
                    out.len()
                )));
            }
            out.copy_from_slice(stored);
            return Ok(());
        }
        let coded = self.open(dtype, shape, out.len(), stored)?;
        let base = match (self.needs_base(), base) {
            (false, _) => None,
            (true, None) => {
                return Err(Error::integrity(format!(
                    "codec {self} is a delta and needs the base it was encoded against"
                )))
            }
            (true, Some(b)) if b.len() != out.len() => {
                return Err(Error::integrity(format!(
                    "the base tensor has {} bytes, this delta needs {}",
                    b.len(),
                    out.len()
                )))
            }
            (true, Some(b)) => Some(b),
        };
        coded.plan.decode_framed(&coded.framing, base, out)
    }

    /// Check that `stored` can be the stored bytes of a tensor of `dtype` and `shape`
    /// (`nbytes` decoded) under this pipeline, from its framing alone: the block table,
    /// the block lengths and the documented expansion limits (see [`super::ZSTD_MAX_RATIO`]).
    /// O(blocks); allocates only the block table.
    pub fn check_stored(
        &self,
        dtype: DType,
        shape: &[u64],
        nbytes: usize,
        stored: &[u8],
    ) -> Result<()> {
        if self.is_raw() {
            if stored.len() != nbytes {
                return Err(Error::format(format!(
                    "raw tensor holds {} bytes, its shape needs {nbytes}",
                    stored.len()
                )));
            }
            return Ok(());
        }
        self.open(dtype, shape, nbytes, stored).map(drop)
    }

    /// A coded tensor's stored bytes opened for decoding, block by block or whole.
    pub fn open<'a>(
        &'a self,
        dtype: DType,
        shape: &[u64],
        nbytes: usize,
        stored: &'a [u8],
    ) -> Result<Coded<'a>> {
        if self.is_auto() {
            return Err(Error::format(
                "codec \"auto\" is resolved when encoding and never stored",
            ));
        }
        if self.is_raw() {
            return Err(Error::format("a raw tensor has no codec blocks"));
        }
        self.check(dtype).map_err(|e| e.with_kind(Kind::Format))?;
        if crate::memory::nbytes(dtype, shape) != Some(nbytes) {
            return Err(Error::input(format!(
                "{nbytes} bytes do not hold a {dtype} tensor of shape {shape:?}"
            )));
        }
        let plan = Plan::new(self, dtype, shape, nbytes).map_err(|e| match e.kind() {
            Kind::Codec => e.with_kind(Kind::Format),
            _ => e,
        })?;
        let framing = plan.framing(stored)?;
        Ok(Coded { plan, framing })
    }
}

/// A coded tensor whose framing has been checked ([`Pipeline::open`]): its blocks can
/// be decoded one at a time (each into its own slice of the output) or all at once.
pub struct Coded<'a> {
    plan: Plan<'a>,
    framing: Framing<'a>,
}

impl Coded<'_> {
    /// Decoded bytes per block; the last block may be shorter.
    pub fn block_bytes(&self) -> usize {
        self.framing.block * self.plan.s
    }

    /// Number of blocks.
    pub fn block_count(&self) -> usize {
        self.framing.blocks.len()
    }

    /// Decoded bytes of block `b` (of [`Self::block_count`]).
    pub fn block_len(&self, b: usize) -> usize {
        let bytes = self.block_bytes();
        bytes.min((self.plan.n * self.plan.s).saturating_sub(b * bytes))
    }

    /// Decode block `b` into `out` (exactly that block's decoded bytes: the tensor's
    /// bytes `b * block_bytes()..`); `base` is the same range of the base tensor, for
    /// delta pipelines.
    pub fn decode_block(&self, b: usize, base: Option<&[u8]>, out: &mut [u8]) -> Result<()> {
        let expected = self.block_len(b);
        if b >= self.block_count() || out.len() != expected {
            return Err(Error::input(format!(
                "block {b} of {}: output of {} bytes, {expected} needed",
                self.block_count(),
                out.len()
            )));
        }
        let base = match base {
            _ if !self.plan.pipe.needs_base() => None,
            Some(base) if base.len() == out.len() => Some(base),
            _ => {
                return Err(Error::integrity(format!(
                    "codec {} needs the base's bytes for block {b}",
                    self.plan.pipe
                )))
            }
        };
        let (src, count) = self.framing.blocks[b];
        self.plan
            .decode_block(
                b * self.framing.block,
                src,
                count,
                out,
                base,
                &self.framing.scales,
            )
            .map_err(|e| e.in_block(b))
    }
}
