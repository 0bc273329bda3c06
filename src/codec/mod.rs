//! Codec pipelines: how a tensor's bytes are transformed before they are stored.
//!
//! A pipeline is a `+`-separated list of stages, e.g. `"shuffle+zstd:3"` or
//! `"delta+topk:0.01+f16+zstd"`. Stages come in five slots, in this order, each used at
//! most once:
//!
//! 1. base: `delta` (new - base, float dtypes) or `xor` (bitwise, any dtype, exact);
//! 2. sparse: `topk:<fraction>` or `threshold:<value>` (real float dtypes);
//! 3. quantizer: `f16`, `bf16` (from float32/float64) or `int8[:channel][:stochastic=SEED]`;
//! 4. layout: `shuffle` (byte planes) or `floatzip` (sign-rotated byte planes, each
//!    entropy-coded with zstd or stored raw: the ZipNN idea);
//! 5. compressor: `zstd[:level]` or `lz4` (not after `floatzip`, which compresses itself).
//!
//! `"raw"` is the empty pipeline: the stored bytes are the tensor's little-endian bytes.
//! `"auto"` (alone) picks, per tensor, the smallest lossless pipeline on a sample, or raw
//! when compression saves less than 5%; [`Pipeline::resolve`] turns it into the concrete
//! pipeline that the header stores. The canonical spelling ([`Pipeline`]'s `Display`) is
//! what the header stores. Every non-raw pipeline stores the framed block format of
//! docs/FORMAT.md ("Codec stages"): blocks of about 1 MiB are encoded and decoded
//! independently, in parallel, each straight into its slice of the output.

mod delta;
mod framing;
mod lossless;
mod quant;
mod scalar;
mod sparse;

use std::borrow::Cow;
use std::fmt;

use rayon::prelude::*;

use crate::dtype::DType;
use crate::error::{Error, Result};
use framing::Framing;
pub use framing::{LZ4_MAX_RATIO, ZSTD_MAX_RATIO};
use scalar::{with_float, Float};
use sparse::Keep;

/// Default zstd level when a spec says just `zstd`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Input bytes per block when encoding (the last block of a tensor may be shorter).
pub const BLOCK_BYTES: usize = 1 << 20;

/// Largest number of scalars per block a decoder accepts (bounds its scratch memory).
pub const MAX_BLOCK_SCALARS: usize = 1 << 21;
/// First bytes of every non-raw stored tensor.
pub const MAGIC: [u8; 4] = *b"TWC1";
/// `auto` stores raw unless the best pipeline reaches this fraction of the sample.
const AUTO_MAX_RATIO: f64 = 0.95;
/// `auto` samples [`AUTO_SAMPLE_PIECES`] evenly spaced pieces of this many bytes.
const AUTO_SAMPLE_BYTES: usize = 32 << 10;
/// How many pieces `auto` samples (the whole tensor when it is no larger).
const AUTO_SAMPLE_PIECES: usize = 8;

/// One stage of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    /// Pick the best lossless pipeline per tensor (resolved before encoding).
    Auto,
    /// Store `new - base` (float dtypes).
    Delta,
    /// Store `new ^ base` bitwise (any dtype; exact).
    Xor,
    /// Keep the `fraction` largest-magnitude entries (sparse).
    TopK(f64),
    /// Keep the entries with magnitude above `value` (sparse).
    Threshold(f64),
    /// Round to float16 (nearest even).
    F16,
    /// Round to bfloat16 (nearest even).
    BF16,
    /// Symmetric int8 with float32 scales.
    Int8 {
        /// One scale per slice along axis 0 instead of one per tensor.
        per_channel: bool,
        /// Seed of stochastic rounding; nearest-even rounding when `None`.
        stochastic_seed: Option<u64>,
    },
    /// Byte shuffle: byte k of every scalar, then byte k+1, ...
    Shuffle,
    /// Float-aware lossless coding: sign-rotated byte planes, each zstd-coded or raw.
    FloatZip,
    /// zstd at a level (1..=22, or negative for the fast levels).
    Zstd(i32),
    /// LZ4 block compression.
    Lz4,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Auto => f.write_str("auto"),
            Stage::Delta => f.write_str("delta"),
            Stage::Xor => f.write_str("xor"),
            Stage::TopK(x) => write!(f, "topk:{x:?}"),
            Stage::Threshold(x) => write!(f, "threshold:{x:?}"),
            Stage::F16 => f.write_str("f16"),
            Stage::BF16 => f.write_str("bf16"),
            Stage::Int8 {
                per_channel,
                stochastic_seed,
            } => {
                f.write_str("int8")?;
                if *per_channel {
                    f.write_str(":channel")?;
                }
                if let Some(seed) = stochastic_seed {
                    write!(f, ":stochastic={seed}")?;
                }
                Ok(())
            }
            Stage::Shuffle => f.write_str("shuffle"),
            Stage::FloatZip => f.write_str("floatzip"),
            Stage::Zstd(level) => write!(f, "zstd:{level}"),
            Stage::Lz4 => f.write_str("lz4"),
        }
    }
}

/// Pipeline slots, in the order stages must appear.
const SLOT_NAMES: [&str; 6] = [
    "auto",
    "base (delta, xor)",
    "sparse (topk, threshold)",
    "quantizer (f16, bf16, int8)",
    "layout (shuffle, floatzip)",
    "compressor (zstd, lz4)",
];

impl Stage {
    fn slot(self) -> usize {
        match self {
            Stage::Auto => 0,
            Stage::Delta | Stage::Xor => 1,
            Stage::TopK(_) | Stage::Threshold(_) => 2,
            Stage::F16 | Stage::BF16 | Stage::Int8 { .. } => 3,
            Stage::Shuffle | Stage::FloatZip => 4,
            Stage::Zstd(_) | Stage::Lz4 => 5,
        }
    }

    fn parse(token: &str) -> Result<Stage> {
        let mut parts = token.split(':');
        let name = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let no_arg = |stage: Stage| match args.first() {
            None => Ok(stage),
            Some(a) => Err(Error::codec(format!(
                "codec stage {name:?} takes no argument (got {a:?})"
            ))),
        };
        let one_number = |what: &str| -> Result<f64> {
            match args.as_slice() {
                [a] => a
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| Error::codec(format!("{name} needs {what}, got {a:?}"))),
                _ => Err(Error::codec(format!(
                    "{name} needs exactly one argument: {what} (e.g. \"{name}:0.01\")"
                ))),
            }
        };
        match name {
            "auto" => no_arg(Stage::Auto),
            "delta" => no_arg(Stage::Delta),
            "xor" => no_arg(Stage::Xor),
            "f16" => no_arg(Stage::F16),
            "bf16" => no_arg(Stage::BF16),
            "shuffle" => no_arg(Stage::Shuffle),
            "floatzip" => no_arg(Stage::FloatZip),
            "lz4" => no_arg(Stage::Lz4),
            "topk" => {
                let f = one_number("a fraction in (0, 1]")?;
                if f <= 0.0 || f > 1.0 {
                    return Err(Error::codec(format!(
                        "topk fraction must be in (0, 1], got {f}"
                    )));
                }
                Ok(Stage::TopK(f))
            }
            "threshold" => {
                let v = one_number("a finite magnitude >= 0")?;
                if v < 0.0 {
                    return Err(Error::codec(format!(
                        "threshold must be a magnitude >= 0, got {v}"
                    )));
                }
                Ok(Stage::Threshold(v + 0.0))
            }
            "int8" => {
                let mut per_channel = false;
                let mut stochastic_seed = None;
                for a in &args {
                    if *a == "channel" && !per_channel {
                        per_channel = true;
                    } else if let (Some(seed), None) =
                        (a.strip_prefix("stochastic="), stochastic_seed)
                    {
                        stochastic_seed = Some(seed.parse::<u64>().map_err(|_| {
                            Error::codec(format!(
                                "int8 stochastic seed must be an integer in 0..2^64, got {seed:?}"
                            ))
                        })?);
                    } else {
                        return Err(Error::codec(format!(
                            "int8 options are \"channel\" and \"stochastic=SEED\", each at most \
                             once; got {a:?}"
                        )));
                    }
                }
                Ok(Stage::Int8 {
                    per_channel,
                    stochastic_seed,
                })
            }
            "zstd" => {
                let level = match args.as_slice() {
                    [] => DEFAULT_ZSTD_LEVEL,
                    [a] => a
                        .parse::<i32>()
                        .ok()
                        .filter(|l| (-7..=22).contains(l) && *l != 0)
                        .ok_or_else(|| {
                            Error::codec(format!(
                                "zstd level must be an integer in -7..=22 other than 0, got {a:?}"
                            ))
                        })?,
                    _ => return Err(Error::codec("zstd takes at most one argument, the level")),
                };
                Ok(Stage::Zstd(level))
            }
            _ => Err(Error::codec(format!(
                "unknown codec stage {name:?} (known: auto, delta, xor, topk, threshold, f16, \
                 bf16, int8, shuffle, floatzip, zstd, lz4)"
            ))),
        }
    }
}

/// A parsed codec pipeline.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stages.is_empty() {
            return f.write_str("raw");
        }
        for (i, s) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// The scalar type a dtype is made of: complex numbers are pairs of float32/float64.
fn scalar_of(dtype: DType) -> DType {
    match dtype {
        DType::C64 => DType::F32,
        DType::C128 => DType::F64,
        d => d,
    }
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
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
            .map(|t| Stage::parse(t.trim()))
            .collect::<Result<Vec<_>>>()
            .map_err(invalid)?;
        for pair in stages.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a == Stage::Auto || b == Stage::Auto {
                return Err(invalid(Error::codec("\"auto\" must be the whole spec")));
            }
            if b.slot() <= a.slot() {
                return Err(invalid(Error::codec(format!(
                    "{b} cannot follow {a}: stages go in the order {}, each slot at most once",
                    SLOT_NAMES[1..].join(" + ")
                ))));
            }
            if a == Stage::FloatZip && b.slot() == 5 {
                return Err(invalid(Error::codec(
                    "floatzip entropy-codes its output itself; drop the compressor after it",
                )));
            }
            if a == Stage::Xor && matches!(b.slot(), 2 | 3) {
                return Err(invalid(Error::codec(format!(
                    "xor deltas are bit patterns, not numbers: {b} cannot follow xor \
                     (use delta for lossy deltas)"
                ))));
            }
        }
        Ok(Pipeline { stages })
    }

    fn slot(&self, slot: usize) -> Option<Stage> {
        self.stages.iter().copied().find(|s| s.slot() == slot)
    }

    /// True when the stored bytes are the tensor bytes (zero-copy decode possible).
    pub fn is_raw(&self) -> bool {
        self.stages.is_empty()
    }

    /// True for `"auto"`, which [`Self::resolve`] turns into a concrete pipeline.
    pub fn is_auto(&self) -> bool {
        self.stages.first() == Some(&Stage::Auto)
    }

    /// True when no stage loses information (decode is bit-exact).
    pub fn is_lossless(&self) -> bool {
        self.stages
            .iter()
            .all(|s| s.slot() != 2 && s.slot() != 3 && *s != Stage::Delta)
    }

    /// True when decoding needs the base tensor (delta stages).
    pub fn needs_base(&self) -> bool {
        self.slot(1).is_some()
    }

    /// The dtype of the values the layout and compressor stages see.
    fn value_dtype(&self, dtype: DType) -> DType {
        match self.slot(3) {
            Some(Stage::F16) => DType::F16,
            Some(Stage::BF16) => DType::BF16,
            Some(Stage::Int8 { .. }) => DType::I8,
            _ => scalar_of(dtype),
        }
    }

    /// Check that this pipeline can encode a tensor of `dtype`.
    pub fn check(&self, dtype: DType) -> Result<()> {
        let refuse = |stage: Stage, why: String| {
            Err(Error::codec(format!(
                "codec {self}: stage {stage} does not fit a {dtype} tensor: {why}"
            )))
        };
        for &stage in &self.stages {
            match stage {
                Stage::Delta if !is_float(scalar_of(dtype)) => {
                    return refuse(
                        stage,
                        "delta needs floating-point values; use xor for an exact bitwise delta"
                            .into(),
                    )
                }
                Stage::TopK(_) | Stage::Threshold(_) | Stage::Int8 { .. } if !is_float(dtype) => {
                    return refuse(
                        stage,
                        "it needs a float16, bfloat16, float32 or float64 tensor".into(),
                    )
                }
                Stage::F16 | Stage::BF16 if !matches!(dtype, DType::F32 | DType::F64) => {
                    return refuse(stage, "it narrows float32 or float64 tensors only".into())
                }
                Stage::FloatZip if !is_float(self.value_dtype(dtype)) => {
                    return refuse(
                        stage,
                        format!(
                            "floatzip needs float values, these are {}; use shuffle+zstd",
                            self.value_dtype(dtype)
                        ),
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The concrete pipeline to store: for `"auto"`, the smallest lossless pipeline on a
    /// sample of `data` (raw when none saves at least 5%); any other pipeline as is.
    pub fn resolve(&self, dtype: DType, data: &[u8]) -> Result<Pipeline> {
        if !self.is_auto() {
            return Ok(self.clone());
        }
        let size = dtype.itemsize();
        let candidates: &[&str] = if is_float(scalar_of(dtype)) {
            &["floatzip", "shuffle+zstd:3", "zstd:3"]
        } else if size > 1 {
            &["shuffle+zstd:3", "zstd:3"]
        } else {
            &["zstd:3"]
        };
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
        for spec in candidates {
            let p = Pipeline::parse(spec)?;
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
    /// the block lengths and the documented expansion limits (see [`ZSTD_MAX_RATIO`]).
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
        self.check(dtype)
            .map_err(|e| Error::format(e.to_string()))?;
        if crate::memory::nbytes(dtype, shape) != Some(nbytes) {
            return Err(Error::input(format!(
                "{nbytes} bytes do not hold a {dtype} tensor of shape {shape:?}"
            )));
        }
        let plan = Plan::new(self, dtype, shape, nbytes).map_err(|e| match e {
            Error::Codec(m) => Error::Format(m),
            e => e,
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
            .map_err(|e| e.context(format_args!("block {b}")))
    }
}

thread_local! {
    /// Block-sized buffers that this thread's block encodes reuse, so that encoding a
    /// large tensor does not fault in fresh memory for every stage of every block (at
    /// most a few per thread are kept).
    static SCRATCH: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A zero-filled buffer of `len` bytes, from this thread's pool when it has one.
fn scratch(len: usize) -> Vec<u8> {
    let mut v = SCRATCH.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    v.clear();
    v.resize(len, 0);
    v
}

/// Give an owned stage buffer back to this thread's pool.
fn recycle(b: Cow<'_, [u8]>) {
    if let Cow::Owned(v) = b {
        SCRATCH.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < 4 {
                pool.push(v);
            }
        });
    }
}

/// Everything about one tensor that the block coder needs.
struct Plan<'p> {
    pipe: &'p Pipeline,
    /// The scalar dtype (complex: its component).
    scalar: DType,
    /// Bytes per scalar.
    s: usize,
    /// Bytes per value after the quantizer.
    q: usize,
    /// Number of scalars.
    n: usize,
    /// Scalars per int8 channel (axis-0 slice), and how many channels.
    row: usize,
    nchan: usize,
}

impl<'p> Plan<'p> {
    fn new(pipe: &'p Pipeline, dtype: DType, shape: &[u64], nbytes: usize) -> Result<Self> {
        let scalar = scalar_of(dtype);
        let s = scalar.itemsize();
        let n = nbytes / s;
        let (mut row, mut nchan) = (n, 1);
        if let Some(Stage::Int8 {
            per_channel: true, ..
        }) = pipe.slot(3)
        {
            let Some(&c) = shape.first() else {
                return Err(Error::codec(
                    "int8:channel needs a tensor with at least one axis (channels are axis 0)",
                ));
            };
            nchan = c as usize;
            row = n.checked_div(nchan).unwrap_or(0);
        }
        Ok(Plan {
            pipe,
            scalar,
            s,
            q: pipe.value_dtype(dtype).itemsize(),
            n,
            row,
            nchan,
        })
    }

    fn sparse(&self) -> Option<Stage> {
        self.pipe.slot(2)
    }

    fn int8(&self) -> Option<(bool, Option<u64>)> {
        match self.pipe.slot(3) {
            Some(Stage::Int8 {
                per_channel,
                stochastic_seed,
            }) => Some((per_channel, stochastic_seed)),
            _ => None,
        }
    }

    fn nscales(&self) -> usize {
        if self.n == 0 {
            return 0;
        }
        match self.int8() {
            Some((true, _)) => self.nchan,
            Some((false, _)) => 1,
            None => 0,
        }
    }

    fn blocks(&self, block: usize) -> usize {
        self.n.div_ceil(block)
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
        match (self.pipe.slot(1), base) {
            (Some(Stage::Delta), Some(base)) => {
                let mut v = scratch(b - a);
                with_float!(self.scalar, T => delta::subtract::<T>(new, &base[a..b], &mut v, lo))?;
                Ok(Cow::Owned(v))
            }
            (Some(Stage::Xor), Some(base)) => {
                let mut v = scratch(b - a);
                delta::xor_into(new, &base[a..b], &mut v);
                Ok(Cow::Owned(v))
            }
            _ => Ok(Cow::Borrowed(new)),
        }
    }

    /// Channel runs of the scalars `lo..hi`: (channel, local start, local end).
    fn runs(&self, lo: usize, hi: usize) -> Vec<(usize, usize, usize)> {
        match self.int8() {
            Some((true, _)) if self.row > 0 => {
                let mut v = Vec::new();
                let mut at = lo;
                while at < hi {
                    let c = at / self.row;
                    let end = ((c + 1) * self.row).min(hi);
                    v.push((c, at - lo, end - lo));
                    at = end;
                }
                v
            }
            _ => vec![(0, 0, hi - lo)],
        }
    }

    fn channel(&self, index: usize) -> usize {
        match self.int8() {
            Some((true, _)) if self.row > 0 => index / self.row,
            _ => 0,
        }
    }

    fn keep_rule(&self, data: &[u8], base: Option<&[u8]>, block: usize) -> Result<Keep> {
        match self.sparse() {
            Some(Stage::Threshold(v)) => Ok(Keep::Above(v)),
            Some(Stage::TopK(fraction)) => {
                let k = ((fraction * self.n as f64).ceil() as usize).min(self.n);
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
                Ok(Keep::AtLeast(sparse::kth_largest(mags.concat(), k)))
            }
            _ => Ok(Keep::Above(-1.0)),
        }
    }

    fn int8_scales(
        &self,
        data: &[u8],
        base: Option<&[u8]>,
        keep: Keep,
        block: usize,
    ) -> Result<Vec<f32>> {
        if self.int8().is_none() {
            return Ok(Vec::new());
        }
        let sparse = self.sparse().is_some();
        let partial: Vec<(usize, Vec<f64>)> = (0..self.blocks(block))
            .into_par_iter()
            .map(|b| {
                let (lo, hi) = (b * block, ((b + 1) * block).min(self.n));
                let staged = self.staged(lo, hi, data, base)?;
                let c0 = self.channel(lo);
                let mut maxes = vec![0f64; self.channel(hi - 1) - c0 + 1];
                for (c, a, b) in self.runs(lo, hi) {
                    let m = &mut maxes[c - c0];
                    with_float!(self.scalar, T => {
                        for (i, x) in staged[a * T::SIZE..b * T::SIZE]
                            .chunks_exact(T::SIZE)
                            .map(T::read)
                            .enumerate()
                        {
                            if sparse && !keep.keeps(x) {
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
        maxes.into_iter().map(quant::int8_scale).collect()
    }

    fn encode(&self, data: &[u8], base: Option<&[u8]>) -> Result<Vec<u8>> {
        let block = (BLOCK_BYTES / self.s).max(1);
        let keep = self.keep_rule(data, base, block)?;
        let scales = self.int8_scales(data, base, keep, block)?;
        let nblocks = self.blocks(block);
        let sparse = self.sparse().is_some();
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
    #[allow(clippy::too_many_arguments)]
    fn encode_block(
        &self,
        lo: usize,
        hi: usize,
        data: &[u8],
        base: Option<&[u8]>,
        keep: Keep,
        scales: &[f32],
        out: &mut Vec<u8>,
    ) -> Result<u32> {
        let s = self.s;
        let sparse = self.sparse().is_some();
        let staged = self.staged(lo, hi, data, base)?;
        // Sparse: the kept entries' local indices and their scalars.
        let mut indices: Vec<u32> = Vec::new();
        let values: Cow<[u8]> = if sparse {
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
        } else {
            staged
        };
        let count = values.len() / s;
        // Quantizer.
        let quantized: Cow<[u8]> = match self.pipe.slot(3) {
            Some(Stage::F16) => {
                let mut o = scratch(count * 2);
                with_float!(self.scalar, T => quant::to_f16::<T>(&values, &mut o, lo))?;
                recycle(values);
                Cow::Owned(o)
            }
            Some(Stage::BF16) => {
                let mut o = scratch(count * 2);
                with_float!(self.scalar, T => quant::to_bf16::<T>(&values, &mut o, lo))?;
                recycle(values);
                Cow::Owned(o)
            }
            Some(Stage::Int8 {
                stochastic_seed, ..
            }) => {
                let mut o = scratch(count);
                if sparse {
                    with_float!(self.scalar, T => {
                        for ((c, o), &i) in values.chunks_exact(s).zip(o.iter_mut()).zip(&indices) {
                            let g = lo + i as usize;
                            let scale = scales[self.channel(g)];
                            *o = quant::int8_one(T::read(c).to_f64(), scale, stochastic_seed, g as u64) as u8;
                        }
                        Ok(())
                    })?;
                } else {
                    for (c, a, b) in self.runs(lo, hi) {
                        with_float!(self.scalar, T => {
                            quant::to_int8::<T>(&values[a * s..b * s], &mut o[a..b], scales[c], stochastic_seed, (lo + a) as u64);
                            Ok(())
                        })?;
                    }
                }
                recycle(values);
                Cow::Owned(o)
            }
            _ => values,
        };
        // Layout.
        // Sparse indices, then the laid-out values: the block itself, or the input of the
        // compressor. The last stage writes straight into `out`.
        let compressor = self.pipe.slot(5);
        let layout = self.pipe.slot(4);
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
                Some(Stage::Shuffle) => {
                    let at = target.len();
                    target.resize(at + quantized.len(), 0);
                    lossless::shuffle(&quantized, self.q, &mut target[at..]);
                }
                Some(Stage::FloatZip) => lossless::floatzip_encode(&quantized, self.q, target)?,
                _ => target.extend_from_slice(&quantized),
            }
        }
        let inner: &[u8] = if compressor.is_some() && !sparse && layout.is_none() {
            &quantized
        } else {
            &pre
        };
        match compressor {
            Some(Stage::Zstd(level)) => lossless::zstd_compress(inner, level, out)?,
            Some(Stage::Lz4) => lossless::lz4_compress(inner, out),
            _ => {}
        }
        recycle(quantized);
        recycle(Cow::Owned(pre));
        Ok(count as u32)
    }

    /// Decode every block of `framing` into `out`, in parallel.
    fn decode_framed(
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
                    .map_err(|e| e.context(format_args!("block {b}")))
            })
    }

    fn decode_block(
        &self,
        lo: usize,
        src: &[u8],
        count: usize,
        out: &mut [u8],
        base: Option<&[u8]>,
        scales: &[f32],
    ) -> Result<()> {
        let (s, q) = (self.s, self.q);
        let m = out.len() / s;
        let sparse = self.sparse().is_some();
        if count > m {
            return Err(Error::integrity(format!(
                "a sparse block claims {count} entries but has only {m} scalars"
            )));
        }
        let quantized = self.pipe.slot(3).is_some();
        let layout = self.pipe.slot(4);
        // Dense, no quantizer, no layout: decompress straight into `out`.
        if !sparse && !quantized && layout.is_none() {
            let n = match self.pipe.slot(5) {
                Some(_) => self.decompress(src, out)?,
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
        let mut decompressed = scratch(0);
        let inner: &[u8] = match self.pipe.slot(5) {
            Some(_) => {
                decompressed.resize(if sparse { count * (5 + q) } else { m * q }, 0);
                let n = self.decompress(src, &mut decompressed)?;
                &decompressed[..n]
            }
            None => src,
        };
        let mut indices = Vec::new();
        let (values_src, nvals) = if sparse {
            let used = sparse::read_indices(inner, count, m, &mut indices)?;
            (&inner[used..], count)
        } else {
            (inner, m)
        };
        if !(quantized || sparse) {
            // Undo the layout straight into `out`.
            self.unlayout(values_src, out)?;
            recycle(Cow::Owned(decompressed));
            return self.apply_base(out, base);
        }
        let mut qvals = scratch(nvals * q);
        self.unlayout(values_src, &mut qvals)?;
        if sparse {
            let mut vals = scratch(count * s);
            self.dequantize(&qvals, &mut vals, lo, Some(&indices), scales)?;
            out.fill(0);
            for (v, &i) in vals.chunks_exact(s).zip(&indices) {
                let i = i as usize;
                out[i * s..(i + 1) * s].copy_from_slice(v);
            }
            recycle(Cow::Owned(vals));
        } else {
            self.dequantize(&qvals, out, lo, None, scales)?;
        }
        recycle(Cow::Owned(qvals));
        recycle(Cow::Owned(decompressed));
        self.apply_base(out, base)
    }

    /// Undo the layout stage: `src` (exactly the block's values) into `dst`.
    fn unlayout(&self, src: &[u8], dst: &mut [u8]) -> Result<()> {
        match self.pipe.slot(4) {
            Some(Stage::FloatZip) => {
                let used = lossless::floatzip_decode(src, self.q, dst)?;
                if used != src.len() {
                    return Err(Error::integrity(format!(
                        "{} stray bytes after a block's values",
                        src.len() - used
                    )));
                }
            }
            layout => {
                if src.len() != dst.len() {
                    return Err(Error::integrity(format!(
                        "a block holds {} bytes of values, expected {}",
                        src.len(),
                        dst.len()
                    )));
                }
                if layout == Some(Stage::Shuffle) {
                    lossless::unshuffle(src, self.q, dst);
                } else {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }

    /// Undo the compressor stage into `dst` (the largest size the block can have);
    /// returns the decoded length.
    fn decompress(&self, src: &[u8], dst: &mut [u8]) -> Result<usize> {
        match self.pipe.slot(5) {
            Some(Stage::Zstd(_)) => lossless::zstd_decompress(src, dst),
            Some(Stage::Lz4) => lossless::lz4_decompress(src, dst),
            _ => Err(Error::format("no compressor stage to undo")),
        }
    }

    /// Quantized values → scalars of the tensor's dtype.
    fn dequantize(
        &self,
        qvals: &[u8],
        out: &mut [u8],
        lo: usize,
        indices: Option<&[u32]>,
        scales: &[f32],
    ) -> Result<()> {
        let s = self.s;
        match self.pipe.slot(3) {
            Some(Stage::F16) => {
                with_float!(self.scalar, T => { quant::from_f16::<T>(qvals, out); Ok(()) })
            }
            Some(Stage::BF16) => {
                with_float!(self.scalar, T => { quant::from_bf16::<T>(qvals, out); Ok(()) })
            }
            Some(Stage::Int8 { .. }) => match indices {
                Some(ix) => with_float!(self.scalar, T => {
                    for ((&qv, o), &i) in qvals.iter().zip(out.chunks_exact_mut(s)).zip(ix) {
                        let scale = scales[self.channel(lo + i as usize)];
                        quant::from_int8_one::<T>(qv, scale).write(o);
                    }
                    Ok(())
                }),
                None => {
                    for (c, a, b) in self.runs(lo, lo + qvals.len()) {
                        with_float!(self.scalar, T => {
                            quant::from_int8::<T>(&qvals[a..b], &mut out[a * s..b * s], scales[c]);
                            Ok(())
                        })?;
                    }
                    Ok(())
                }
            },
            _ => {
                out.copy_from_slice(qvals);
                Ok(())
            }
        }
    }

    fn apply_base(&self, out: &mut [u8], base: Option<&[u8]>) -> Result<()> {
        match (self.pipe.slot(1), base) {
            (Some(Stage::Delta), Some(b)) => {
                with_float!(self.scalar, T => { delta::add_base::<T>(out, b); Ok(()) })
            }
            (Some(Stage::Xor), Some(b)) => {
                delta::xor_in_place(out, b);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
