//! Federated averaging over encoded updates.
//!
//! A [`Round`] fixes what the round expects: tensor names, dtypes and shapes, and the
//! id of the base (global) model the updates were made against. [`Round::check`]
//! tells why an update does not fit (a reason, never a silent average). [`aggregate`]
//! averages many updates at once, tensor by tensor in parallel: each worker decodes one
//! update's tensor into a scratch block it reuses and adds it into that tensor's
//! accumulator, so memory stays near one model plus one tensor per thread, whatever
//! the number of updates. [`Accumulator`] is the streaming form for a server that
//! receives updates one at a time.
//!
//! Semantics. With a base `b`, every update contributes `d = x - b` (a model `x`) or
//! `d = x` (an update stored as a difference); the result is `b + Σ wᵢ sᵢ dᵢ / Σ wᵢ`,
//! where `sᵢ = min(1, clip / ‖dᵢ‖)` when clipping and 1 otherwise. Without a base the
//! updates are averaged as they decode: `Σ wᵢ sᵢ xᵢ / Σ wᵢ`. Float tensors accumulate in
//! float32 (float64 for float64 tensors, or when asked); integer tensors accumulate in
//! float64 and are rounded half to even (saturating) on output.

use std::collections::HashMap;
use std::ops::{Add, AddAssign, Mul, Sub};

use rayon::prelude::*;

use crate::container::Layout;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::header::{hex32, nbytes};

/// Elements converted per block by the kernels (two stack buffers of this many values).
const BLOCK: usize = 2048;
/// At most this many problems are listed in one mismatch reason.
const MAX_LISTED: usize = 3;

/// One tensor of the round: what every update must hold under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape, C order.
    pub shape: Vec<u64>,
}

/// One in-memory tensor of an update given as arrays: little-endian, C-contiguous bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Shape, C order.
    pub shape: &'a [u64],
    /// The bytes (`numel * itemsize` of them).
    pub data: &'a [u8],
}

/// Where an update's tensors come from.
#[derive(Debug)]
pub enum Source<'a> {
    /// An encoded payload (any codec) and its validated layout.
    Payload {
        /// The whole payload.
        buf: &'a [u8],
        /// What [`crate::container::parse`] made of it.
        layout: &'a Layout,
    },
    /// Tensors already in memory.
    Tensors(&'a [TensorView<'a>]),
}

/// What an update's tensors hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The client's model (a delta codec decodes it against the base).
    Model,
    /// The difference (new − old) against the base whose id is given.
    Difference([u8; 32]),
}

/// One update that fits the round: where it comes from, its weight, and for each of
/// the round's tensors the index of that tensor in the update.
#[derive(Debug)]
pub struct Contribution<'a> {
    /// The update's tensors.
    pub source: Source<'a>,
    /// What they hold.
    pub kind: Kind,
    /// Its weight (e.g. the client's sample count); finite and non-negative.
    pub weight: f64,
    /// `index[t]` is the update's tensor for the round's tensor `t` (from [`Round::check`]).
    pub index: Vec<usize>,
}

/// Accumulator precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// float32 for float16/bfloat16/float32 tensors, float64 for float64 and integers.
    #[default]
    Auto,
    /// float64 for every tensor.
    Float64,
}

/// Options of [`aggregate`] and [`Accumulator`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Clip every update's L2 norm (over all its tensors) to this value.
    pub clip_norm: Option<f64>,
    /// Accumulator precision.
    pub precision: Precision,
    /// Check each stored tensor's checksum before using it.
    pub verify: bool,
}

/// What [`aggregate`] and [`Accumulator::add`] found out about the updates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// L2 norm of each update's contribution `d` (only computed when clipping).
    pub norms: Vec<f64>,
    /// Factor each update was scaled by (1.0 unless clipped).
    pub scales: Vec<f64>,
}

/// What a round expects of its updates.
#[derive(Debug, Clone)]
pub struct Round {
    tensors: Vec<TensorSpec>,
    by_name: HashMap<String, usize>,
    base_id: Option<[u8; 32]>,
}

fn averageable(dtype: DType) -> bool {
    !matches!(
        dtype,
        DType::Bool | DType::C64 | DType::C128 | DType::F8E4M3 | DType::F8E5M2
    )
}

fn shape_str(shape: &[u64]) -> String {
    format!("{shape:?}")
}

impl Round {
    /// A round over `tensors` (in result order); `base_id` is the id
    /// ([`crate::container::tensors_id`]) of the base model, when there is one.
    pub fn new(tensors: Vec<TensorSpec>, base_id: Option<[u8; 32]>) -> Result<Round> {
        let mut by_name = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(Error::input(format!(
                    "tensor name {:?} appears twice",
                    t.name
                )));
            }
            if !averageable(t.dtype) {
                return Err(Error::input(format!(
                    "tensor {:?}: dtype {} cannot be averaged (float16, bfloat16, float32, \
                     float64 and integer tensors can)",
                    t.name, t.dtype
                )));
            }
            if nbytes(t.dtype, &t.shape).is_none() {
                return Err(Error::input(format!(
                    "tensor {:?}: shape {:?} is too large",
                    t.name, t.shape
                )));
            }
        }
        Ok(Round {
            tensors,
            by_name,
            base_id,
        })
    }

    /// The round's tensors, in result order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// The base model's id, if the round has a base.
    pub fn base_id(&self) -> Option<&[u8; 32]> {
        self.base_id.as_ref()
    }

    /// Why `source` (holding `kind`) does not fit the round, or, when it fits, the index
    /// of each round tensor in it. `first_kind` is the kind of the updates already
    /// accepted without a base: models and differences cannot be mixed then.
    pub fn check(
        &self,
        source: &Source<'_>,
        kind: Kind,
        first_kind: Option<Kind>,
    ) -> std::result::Result<Vec<usize>, String> {
        // Base: a delta payload or a difference must be against the round's base.
        let header_base = match source {
            Source::Payload { layout, .. } => layout.base,
            Source::Tensors(_) => None,
        };
        let want = self.base_id.as_ref();
        if let Some(got) = header_base {
            match want {
                None => {
                    return Err(format!(
                        "it is delta-encoded against base {}, and the round has no base \
                         (pass base=)",
                        hex32(&got)
                    ))
                }
                Some(w) if *w != got => {
                    return Err(format!(
                        "it is delta-encoded against base {}, the round's base is {}",
                        hex32(&got),
                        hex32(w)
                    ))
                }
                Some(_) => {}
            }
        }
        if let Kind::Difference(got) = kind {
            match want {
                Some(w) if *w != got => {
                    return Err(format!(
                        "it is a difference against base {}, the round's base is {}",
                        hex32(&got),
                        hex32(w)
                    ))
                }
                None => {
                    if let Some(Kind::Difference(first)) = first_kind {
                        if first != got {
                            return Err(format!(
                                "it is a difference against base {}, earlier updates against {}",
                                hex32(&got),
                                hex32(&first)
                            ));
                        }
                    }
                }
                Some(_) => {}
            }
        }
        if want.is_none() {
            let is_diff = |k: Kind| matches!(k, Kind::Difference(_));
            if let Some(first) = first_kind {
                if is_diff(first) != is_diff(kind) {
                    let what = |k: Kind| {
                        if is_diff(k) {
                            "a difference"
                        } else {
                            "a model"
                        }
                    };
                    return Err(format!(
                        "it is {} and earlier updates are {}: without a base they cannot be \
                         averaged together (pass base=)",
                        what(kind),
                        what(first)
                    ));
                }
            }
        }

        // Structure: the same names, dtypes and shapes.
        let mut problems = Vec::new();
        let mut index = vec![usize::MAX; self.tensors.len()];
        let mut visit =
            |j: usize, name: &str, dtype: DType, shape: &[u64]| match self.by_name.get(name) {
                None => problems.push(format!("unexpected tensor {name:?}")),
                Some(&t) => {
                    let spec = &self.tensors[t];
                    if spec.dtype != dtype || spec.shape != shape {
                        problems.push(format!(
                            "tensor {name:?} is {dtype}{}, the round expects {}{}",
                            shape_str(shape),
                            spec.dtype,
                            shape_str(&spec.shape)
                        ));
                    }
                    index[t] = j;
                }
            };
        match source {
            Source::Payload { layout, .. } => {
                for (j, e) in layout.entries.iter().enumerate() {
                    visit(j, &e.name, e.dtype, &e.shape);
                }
            }
            Source::Tensors(views) => {
                for (j, v) in views.iter().enumerate() {
                    visit(j, v.name, v.dtype, v.shape);
                }
            }
        }
        for (t, &j) in index.iter().enumerate() {
            if j == usize::MAX {
                problems.push(format!("missing tensor {:?}", self.tensors[t].name));
            }
        }
        if problems.is_empty() {
            return Ok(index);
        }
        let more = problems.len().saturating_sub(MAX_LISTED);
        problems.truncate(MAX_LISTED);
        let mut reason = problems.join("; ");
        if more > 0 {
            reason.push_str(&format!(" (and {more} more)"));
        }
        Err(reason)
    }
}

/// Prefix an error with the update it concerns.
pub(crate) fn about_update(u: usize, e: Error) -> Error {
    e.context(format_args!("update {u}"))
}

impl Source<'_> {
    /// Check that the alignment padding between stored tensors is zero, so that a
    /// verified aggregation covers every byte of the payload (tensor bytes are
    /// covered by their checksums as they are used).
    fn check_padding(&self) -> Result<()> {
        if let Source::Payload { buf, layout } = self {
            let mut pos = layout.data_start;
            for e in &layout.entries {
                if buf[pos..e.start].iter().any(|&b| b != 0) {
                    return Err(Error::integrity(format!(
                        "padding before tensor {:?} is not zero: the payload is corrupt",
                        e.name
                    )));
                }
                pos = e.start + e.length;
            }
        }
        Ok(())
    }

    /// The little-endian bytes of the update's tensor `j`: the stored bytes themselves
    /// when raw, else decoded into `scratch` (grown as needed and reused).
    fn values<'r>(
        &'r self,
        j: usize,
        scratch: &'r mut Vec<u8>,
        base: Option<&[u8]>,
        verify: bool,
    ) -> Result<&'r [u8]> {
        match self {
            Source::Tensors(views) => Ok(views[j].data),
            Source::Payload { buf, layout } => {
                let e = &layout.entries[j];
                if e.pipeline.is_raw() {
                    if verify {
                        layout.verify(buf, Some(&[j]))?;
                    }
                    return Ok(layout.stored(buf, j));
                }
                if scratch.len() < e.nbytes {
                    scratch.resize(e.nbytes, 0);
                }
                let out = &mut scratch[..e.nbytes];
                layout.decode_into(buf, j, out, base, verify)?;
                Ok(out)
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Kernels: convert blocks of little-endian elements to the accumulator type and back.

trait Acc:
    Copy
    + Default
    + Send
    + Sync
    + AddAssign
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
{
    /// The dtype whose bytes are this type's bytes.
    const DTYPE: DType;
    fn from_f32(v: f32) -> Self;
    fn from_f64(v: f64) -> Self;
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
}

impl Acc for f32 {
    const DTYPE: DType = DType::F32;
    fn from_f32(v: f32) -> Self {
        v
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Acc for f64 {
    const DTYPE: DType = DType::F64;
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// Convert `dst.len()` elements of `dtype` from `src` (little-endian bytes).
fn load<A: Acc>(dtype: DType, src: &[u8], dst: &mut [A]) {
    macro_rules! conv {
        ($t:ty, $f:expr) => {{
            const N: usize = std::mem::size_of::<$t>();
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(N)) {
                let v = <$t>::from_le_bytes(s.try_into().expect("chunk of N bytes"));
                *d = $f(v);
            }
        }};
    }
    match dtype {
        DType::F32 => conv!(f32, A::from_f32),
        DType::F64 => conv!(f64, A::from_f64),
        DType::F16 => conv!(u16, |b| A::from_f32(half::f16::from_bits(b).to_f32())),
        DType::BF16 => conv!(u16, |b| A::from_f32(half::bf16::from_bits(b).to_f32())),
        DType::I8 => conv!(i8, |v| A::from_f64(v as f64)),
        DType::I16 => conv!(i16, |v| A::from_f64(v as f64)),
        DType::I32 => conv!(i32, |v| A::from_f64(v as f64)),
        DType::I64 => conv!(i64, |v| A::from_f64(v as f64)),
        DType::U8 => conv!(u8, |v| A::from_f64(v as f64)),
        DType::U16 => conv!(u16, |v| A::from_f64(v as f64)),
        DType::U32 => conv!(u32, |v| A::from_f64(v as f64)),
        DType::U64 => conv!(u64, |v| A::from_f64(v as f64)),
        DType::Bool | DType::C64 | DType::C128 | DType::F8E4M3 | DType::F8E5M2 => {
            unreachable!("Round::new refuses dtypes that cannot be averaged")
        }
    }
}

/// Convert `src` to `dtype` into `dst` (little-endian bytes); integers round half to
/// even and saturate.
fn store<A: Acc>(dtype: DType, src: &[A], dst: &mut [u8]) {
    macro_rules! conv {
        ($t:ty, $f:expr) => {{
            const N: usize = std::mem::size_of::<$t>();
            for (d, &s) in dst.chunks_exact_mut(N).zip(src) {
                let v: $t = $f(s);
                d.copy_from_slice(&v.to_le_bytes());
            }
        }};
    }
    macro_rules! int {
        ($t:ty) => {
            conv!($t, |s: A| s.to_f64().round_ties_even() as $t)
        };
    }
    match dtype {
        DType::F32 => conv!(f32, |s: A| s.to_f32()),
        DType::F64 => conv!(f64, |s: A| s.to_f64()),
        DType::F16 => conv!(u16, |s: A| half::f16::from_f64(s.to_f64()).to_bits()),
        DType::BF16 => conv!(u16, |s: A| half::bf16::from_f64(s.to_f64()).to_bits()),
        DType::I8 => int!(i8),
        DType::I16 => int!(i16),
        DType::I32 => int!(i32),
        DType::I64 => int!(i64),
        DType::U8 => int!(u8),
        DType::U16 => int!(u16),
        DType::U32 => int!(u32),
        DType::U64 => int!(u64),
        DType::Bool | DType::C64 | DType::C128 | DType::F8E4M3 | DType::F8E5M2 => {
            unreachable!("Round::new refuses dtypes that cannot be averaged")
        }
    }
}

/// `acc += c * (x - base)` (or `c * x` without a base), `x` and `base` as `dtype` bytes.
fn add_scaled<A: Acc>(acc: &mut [A], dtype: DType, x: &[u8], base: Option<&[u8]>, c: f64) {
    let size = dtype.itemsize();
    let c = A::from_f64(c);
    let mut xb = [A::default(); BLOCK];
    let mut bb = [A::default(); BLOCK];
    for (k, a) in acc.chunks_mut(BLOCK).enumerate() {
        let n = a.len();
        let range = k * BLOCK * size..(k * BLOCK + n) * size;
        load(dtype, &x[range.clone()], &mut xb[..n]);
        match base {
            Some(b) => {
                load(dtype, &b[range], &mut bb[..n]);
                for ((a, &x), &b) in a.iter_mut().zip(&xb[..n]).zip(&bb[..n]) {
                    *a += c * (x - b);
                }
            }
            None => {
                for (a, &x) in a.iter_mut().zip(&xb[..n]) {
                    *a += c * x;
                }
            }
        }
    }
}

/// `Σ (x - base)²` (or `Σ x²`) in float64.
fn sum_squares(dtype: DType, x: &[u8], base: Option<&[u8]>) -> f64 {
    let size = dtype.itemsize();
    let n = x.len() / size.max(1);
    let mut xb = [0f64; BLOCK];
    let mut bb = [0f64; BLOCK];
    let mut total = 0f64;
    let mut k = 0;
    while k < n {
        let m = BLOCK.min(n - k);
        let range = k * size..(k + m) * size;
        load(dtype, &x[range.clone()], &mut xb[..m]);
        match base {
            Some(b) => {
                load(dtype, &b[range], &mut bb[..m]);
                total += xb[..m]
                    .iter()
                    .zip(&bb[..m])
                    .map(|(x, b)| (x - b) * (x - b))
                    .sum::<f64>();
            }
            None => total += xb[..m].iter().map(|x| x * x).sum::<f64>(),
        }
        k += m;
    }
    total
}

/// Write `base + acc * inv_w` (or `acc * inv_w`) as `dtype` into `out`.
fn finish<A: Acc>(acc: &[A], dtype: DType, base: Option<&[u8]>, inv_w: f64, out: &mut [u8]) {
    let size = dtype.itemsize();
    let inv = A::from_f64(inv_w);
    let mut vb = [A::default(); BLOCK];
    let mut bb = [A::default(); BLOCK];
    for (k, a) in acc.chunks(BLOCK).enumerate() {
        let n = a.len();
        let range = k * BLOCK * size..(k * BLOCK + n) * size;
        match base {
            Some(b) => {
                load(dtype, &b[range.clone()], &mut bb[..n]);
                for ((v, &a), &b) in vb.iter_mut().zip(a).zip(&bb[..n]) {
                    *v = b + a * inv;
                }
            }
            None => {
                for (v, &a) in vb.iter_mut().zip(a) {
                    *v = a * inv;
                }
            }
        }
        store(dtype, &vb[..n], &mut out[range]);
    }
}

/// In place: `acc = base + acc * inv_w` (or `acc * inv_w`), base as `A`'s own dtype.
fn finish_in_place<A: Acc>(acc: &mut [A], base: Option<&[u8]>, inv_w: f64) {
    let inv = A::from_f64(inv_w);
    let mut bb = [A::default(); BLOCK];
    let size = std::mem::size_of::<A>();
    for (k, a) in acc.chunks_mut(BLOCK).enumerate() {
        let n = a.len();
        match base {
            Some(b) => {
                load(
                    A::DTYPE,
                    &b[k * BLOCK * size..(k * BLOCK + n) * size],
                    &mut bb[..n],
                );
                for (a, &b) in a.iter_mut().zip(&bb[..n]) {
                    *a = b + *a * inv;
                }
            }
            None => {
                for a in a.iter_mut() {
                    *a = *a * inv;
                }
            }
        }
    }
}

/// `bytes` as a slice of `A` when it is suitably aligned (and the target little-endian).
fn as_acc_mut<A: Acc>(bytes: &mut [u8]) -> Option<&mut [A]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: A is f32 or f64, for which every bit pattern is a valid value.
    let (pre, mid, post) = unsafe { bytes.align_to_mut::<A>() };
    (pre.is_empty() && post.is_empty()).then_some(mid)
}

/// The accumulator of one tensor: a buffer of f32 or f64.
#[derive(Debug, Clone)]
enum AccBuf {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

fn uses_f64(dtype: DType, precision: Precision) -> bool {
    precision == Precision::Float64 || !matches!(dtype, DType::F16 | DType::BF16 | DType::F32)
}

fn numel(spec: &TensorSpec) -> usize {
    nbytes(spec.dtype, &spec.shape).expect("checked by Round::new") / spec.dtype.itemsize()
}

// ---------------------------------------------------------------------------------
// The work shared by the batch and the streaming forms.

/// Per-update contribution coefficient, `Σ weights` checked.
fn total_weight(weights: impl Iterator<Item = f64>) -> Result<f64> {
    let mut total = 0f64;
    for (i, w) in weights.enumerate() {
        if !w.is_finite() || w < 0.0 {
            return Err(Error::input(format!(
                "update {i}: weight {w} is not a finite non-negative number"
            )));
        }
        total += w;
    }
    Ok(total)
}

/// The round tensor `t`'s base bytes, if there is a base.
fn base_of<'b>(base: Option<&[&'b [u8]]>, t: usize) -> Option<&'b [u8]> {
    base.map(|b| b[t])
}

/// L2 norms of every contribution's `d` (decoding each tensor once), in parallel.
fn norms(
    round: &Round,
    base: Option<&[&[u8]]>,
    updates: &[&Contribution<'_>],
    verify: bool,
) -> Result<Vec<f64>> {
    let per_tensor: Vec<Vec<f64>> = (0..round.tensors.len())
        .into_par_iter()
        .map_init(Vec::new, |scratch, t| {
            let spec = &round.tensors[t];
            let b = base_of(base, t);
            updates
                .iter()
                .enumerate()
                .map(|(u, c)| {
                    let x = c
                        .source
                        .values(c.index[t], scratch, b, verify)
                        .map_err(|e| about_update(u, e))?;
                    let rel = if matches!(c.kind, Kind::Difference(_)) {
                        None
                    } else {
                        b
                    };
                    Ok(sum_squares(spec.dtype, x, rel))
                })
                .collect::<Result<Vec<f64>>>()
        })
        .collect::<Result<_>>()?;
    Ok((0..updates.len())
        .map(|u| per_tensor.iter().map(|v| v[u]).sum::<f64>().sqrt())
        .collect())
}

fn clip_scales(norms: &[f64], clip: f64) -> Vec<f64> {
    norms
        .iter()
        .map(|&n| if n > clip { clip / n } else { 1.0 })
        .collect()
}

/// Elements per block of the fused hash-and-add pass (256 KiB of float32: cache-sized).
const FUSED_BLOCK: usize = 64 << 10;

/// An update's tensor that is read in place: stored raw in a payload (with its expected
/// checksum) or given as an in-memory array.
struct InPlace<'a> {
    update: usize,
    bytes: &'a [u8],
    hash: Option<(&'a [u8; 32], &'a str)>,
    relative: bool,
    coef: f64,
}

/// Add the in-place tensors block by block: for each block of the accumulator (kept in
/// cache), every update's matching block is hashed (when verifying) and added, so each
/// byte of every update is read from memory once and the accumulator not at all.
/// On a checksum mismatch `acc` holds garbage and the caller fails.
fn add_in_place<A: Acc>(
    acc: &mut [A],
    dtype: DType,
    sources: &[InPlace<'_>],
    base: Option<&[u8]>,
) -> Result<()> {
    let size = dtype.itemsize();
    let mut hashers: Vec<Option<blake3::Hasher>> = sources
        .iter()
        .map(|s| s.hash.map(|_| blake3::Hasher::new()))
        .collect();
    for (k, a) in acc.chunks_mut(FUSED_BLOCK).enumerate() {
        let range = k * FUSED_BLOCK * size..(k * FUSED_BLOCK + a.len()) * size;
        for (s, h) in sources.iter().zip(hashers.iter_mut()) {
            let x = &s.bytes[range.clone()];
            if let Some(h) = h {
                h.update(x);
            }
            let b = if s.relative {
                base.map(|b| &b[range.clone()])
            } else {
                None
            };
            add_scaled(a, dtype, x, b, s.coef);
        }
    }
    for (s, h) in sources.iter().zip(hashers) {
        if let (Some(h), Some((expected, name))) = (h, s.hash) {
            if h.finalize().as_bytes() != expected {
                return Err(about_update(
                    s.update,
                    Error::integrity(format!(
                        "tensor {name:?}: checksum mismatch, its bytes are corrupt"
                    )),
                ));
            }
        }
    }
    Ok(())
}

/// Add every contribution's tensor `t`, times `coef[u]`, into `acc`: encoded tensors one
/// update at a time through `scratch`, tensors readable in place all together.
/// Parallelism is across tensors only: nesting it here would let a waiting worker start
/// another tensor with another scratch block, and memory would grow past one per thread.
#[allow(clippy::too_many_arguments)]
fn accumulate_tensor<A: Acc>(
    acc: &mut [A],
    spec: &TensorSpec,
    t: usize,
    base: Option<&[u8]>,
    updates: &[&Contribution<'_>],
    coef: &[f64],
    scratch: &mut Vec<u8>,
    verify: bool,
) -> Result<()> {
    let mut in_place = Vec::new();
    for (u, c) in updates.iter().enumerate() {
        if coef[u] == 0.0 {
            continue;
        }
        let relative = !matches!(c.kind, Kind::Difference(_));
        let j = c.index[t];
        match &c.source {
            Source::Payload { buf, layout } if layout.entries[j].pipeline.is_raw() => {
                let e = &layout.entries[j];
                in_place.push(InPlace {
                    update: u,
                    bytes: layout.stored(buf, j),
                    hash: verify.then_some((&e.hash, e.name.as_str())),
                    relative,
                    coef: coef[u],
                });
            }
            Source::Tensors(views) => in_place.push(InPlace {
                update: u,
                bytes: views[j].data,
                hash: None,
                relative,
                coef: coef[u],
            }),
            Source::Payload { .. } => {
                let x = c
                    .source
                    .values(j, scratch, base, verify)
                    .map_err(|e| about_update(u, e))?;
                add_scaled(
                    acc,
                    spec.dtype,
                    x,
                    if relative { base } else { None },
                    coef[u],
                );
            }
        }
    }
    if in_place.is_empty() {
        return Ok(());
    }
    add_in_place(acc, spec.dtype, &in_place, base)
}

/// Average `updates` into `out` (one buffer per round tensor, exactly its size), in
/// parallel over tensors; `base` holds the round's base tensors (in round order) when
/// the round has one. Every update must come from [`Round::check`] on this round.
pub fn aggregate(
    round: &Round,
    base: Option<&[&[u8]]>,
    updates: &[Contribution<'_>],
    out: Vec<&mut [u8]>,
    opts: &Options,
) -> Result<Report> {
    check_buffers(round, base, &out)?;
    if let Some(clip) = opts.clip_norm {
        if !(clip.is_finite() && clip > 0.0) {
            return Err(Error::input(format!(
                "clip norm must be a positive finite number, got {clip}"
            )));
        }
    }
    let total = total_weight(updates.iter().map(|c| c.weight))?;
    if total <= 0.0 {
        return Err(Error::input(
            "nothing to average: no updates, or their weights sum to zero",
        ));
    }
    if opts.verify {
        for (u, c) in updates.iter().enumerate() {
            c.source.check_padding().map_err(|e| about_update(u, e))?;
        }
    }
    let refs: Vec<&Contribution<'_>> = updates.iter().collect();
    let (norms, scales) = match opts.clip_norm {
        Some(clip) => {
            let n = norms(round, base, &refs, opts.verify)?;
            let s = clip_scales(&n, clip);
            (n, s)
        }
        None => (Vec::new(), vec![1.0; updates.len()]),
    };
    let coef: Vec<f64> = updates
        .iter()
        .zip(&scales)
        .map(|(c, s)| c.weight * s)
        .collect();
    let inv_w = 1.0 / total;
    // With clipping the checksums were checked by the norm pass.
    let verify = opts.verify && opts.clip_norm.is_none();

    let mut jobs: Vec<(usize, &mut [u8])> = out.into_iter().enumerate().collect();
    // Largest tensors first, so that no big one is left for the end.
    jobs.sort_by_key(|(_, o)| std::cmp::Reverse(o.len()));
    jobs.into_par_iter()
        .map_init(Vec::new, |scratch, (t, out)| {
            let spec = &round.tensors[t];
            let b = base_of(base, t);
            let f64_acc = uses_f64(spec.dtype, opts.precision);
            macro_rules! run {
                ($a:ty) => {{
                    if <$a as Acc>::DTYPE == spec.dtype {
                        if let Some(acc) = as_acc_mut::<$a>(out) {
                            acc.fill(0.0);
                            accumulate_tensor(acc, spec, t, b, &refs, &coef, scratch, verify)?;
                            finish_in_place(acc, b, inv_w);
                            return Ok(());
                        }
                    }
                    let mut acc = vec![<$a>::default(); numel(spec)];
                    accumulate_tensor(&mut acc, spec, t, b, &refs, &coef, scratch, verify)?;
                    finish(&acc, spec.dtype, b, inv_w, out);
                    Ok(())
                }};
            }
            if f64_acc {
                run!(f64)
            } else {
                run!(f32)
            }
        })
        .collect::<Result<()>>()?;
    Ok(Report { norms, scales })
}

fn check_buffers(round: &Round, base: Option<&[&[u8]]>, out: &[&mut [u8]]) -> Result<()> {
    let n = round.tensors.len();
    if out.len() != n {
        return Err(Error::input(format!(
            "{} output buffers for {n} tensors",
            out.len()
        )));
    }
    match (base, round.base_id.is_some()) {
        (Some(b), true) if b.len() != n => {
            return Err(Error::input(format!(
                "{} base tensors for {n} tensors",
                b.len()
            )))
        }
        (Some(_), false) => return Err(Error::input("a base was given to a round without one")),
        (None, true) => return Err(Error::input("the round has a base: pass its tensors")),
        _ => {}
    }
    for (t, spec) in round.tensors.iter().enumerate() {
        let size = nbytes(spec.dtype, &spec.shape).expect("checked by Round::new");
        if out[t].len() != size {
            return Err(Error::input(format!(
                "tensor {:?}: output buffer of {} bytes, {size} needed",
                spec.name,
                out[t].len()
            )));
        }
        if let Some(b) = base {
            if b[t].len() != size {
                return Err(Error::input(format!(
                    "tensor {:?}: base of {} bytes, {size} needed",
                    spec.name,
                    b[t].len()
                )));
            }
        }
    }
    Ok(())
}

/// The streaming form: updates are added one at a time into running sums (one model of
/// float32, float64 for float64/integer tensors), and [`Accumulator::finish_into`] writes
/// the average.
#[derive(Debug, Clone)]
pub struct Accumulator {
    round: Round,
    sums: Vec<AccBuf>,
    opts: Options,
    total_weight: f64,
    count: usize,
    first_kind: Option<Kind>,
}

impl Accumulator {
    /// Zeroed running sums for `round`.
    pub fn new(round: Round, opts: Options) -> Result<Accumulator> {
        if let Some(clip) = opts.clip_norm {
            if !(clip.is_finite() && clip > 0.0) {
                return Err(Error::input(format!(
                    "clip norm must be a positive finite number, got {clip}"
                )));
            }
        }
        let sums = round
            .tensors
            .iter()
            .map(|spec| {
                if uses_f64(spec.dtype, opts.precision) {
                    AccBuf::F64(vec![0.0; numel(spec)])
                } else {
                    AccBuf::F32(vec![0.0; numel(spec)])
                }
            })
            .collect();
        Ok(Accumulator {
            round,
            sums,
            opts,
            total_weight: 0.0,
            count: 0,
            first_kind: None,
        })
    }

    /// The round the accumulator is for.
    pub fn round(&self) -> &Round {
        &self.round
    }

    /// Why `source` does not fit (see [`Round::check`]), taking earlier updates into account.
    pub fn check(
        &self,
        source: &Source<'_>,
        kind: Kind,
    ) -> std::result::Result<Vec<usize>, String> {
        self.round.check(source, kind, self.first_kind)
    }

    /// Number of updates added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Sum of the weights added.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// Add one update (from [`Accumulator::check`]). Its checksums are verified (when
    /// asked) before anything is added; if decoding still fails half-way, what was
    /// added is taken back, so a bad update never leaves the sums half-updated.
    /// Returns `(norm, scale)`: the update's norm (NaN unless clipping) and its factor.
    pub fn add(&mut self, update: &Contribution<'_>, base: Option<&[&[u8]]>) -> Result<(f64, f64)> {
        let n = self.round.tensors.len();
        if let Some(b) = base {
            if b.len() != n {
                return Err(Error::input(format!(
                    "{} base tensors for {n} tensors",
                    b.len()
                )));
            }
        }
        if base.is_some() != self.round.base_id.is_some() {
            return Err(Error::input(if base.is_some() {
                "a base was given to a round without one"
            } else {
                "the round has a base: pass its tensors"
            }));
        }
        let w = total_weight(std::iter::once(update.weight))?;
        if update.index.len() != n {
            return Err(Error::input("update was not checked against this round"));
        }
        if self.opts.verify {
            update.source.check_padding()?;
            if let Source::Payload { buf, layout } = &update.source {
                let mut ix: Vec<usize> = update.index.clone();
                ix.sort_unstable();
                layout.verify(buf, Some(&ix))?;
            }
        }
        let refs = [update];
        let (norm, scale) = match self.opts.clip_norm {
            Some(clip) => {
                let norm = norms(&self.round, base, &refs, false)?[0];
                (norm, clip_scales(&[norm], clip)[0])
            }
            None => (f64::NAN, 1.0),
        };
        let coef = [w * scale];
        let done: Vec<Result<()>> = self
            .sums
            .par_iter_mut()
            .enumerate()
            .map_init(Vec::new, |scratch, (t, sum)| {
                let spec = &self.round.tensors[t];
                let b = base_of(base, t);
                match sum {
                    AccBuf::F32(acc) => {
                        accumulate_tensor(acc, spec, t, b, &refs, &coef, scratch, false)
                    }
                    AccBuf::F64(acc) => {
                        accumulate_tensor(acc, spec, t, b, &refs, &coef, scratch, false)
                    }
                }
            })
            .collect();
        if let Some(err) = done.iter().position(Result::is_err) {
            // Take back what was added, then report the first error.
            let undo = [-coef[0]];
            self.sums
                .par_iter_mut()
                .enumerate()
                .filter(|(t, _)| done[*t].is_ok())
                .for_each_init(Vec::new, |scratch, (t, sum)| {
                    let spec = &self.round.tensors[t];
                    let b = base_of(base, t);
                    // These tensors decoded a moment ago, so they decode again.
                    let _ = match sum {
                        AccBuf::F32(acc) => {
                            accumulate_tensor(acc, spec, t, b, &refs, &undo, scratch, false)
                        }
                        AccBuf::F64(acc) => {
                            accumulate_tensor(acc, spec, t, b, &refs, &undo, scratch, false)
                        }
                    };
                });
            return Err(done.into_iter().nth(err).expect("an error").unwrap_err());
        }
        if self.first_kind.is_none() {
            self.first_kind = Some(update.kind);
        }
        self.total_weight += w;
        self.count += 1;
        Ok((norm, scale))
    }

    /// Write the weighted average into `out` (one buffer per round tensor).
    pub fn finish_into(&self, base: Option<&[&[u8]]>, out: Vec<&mut [u8]>) -> Result<()> {
        check_buffers(&self.round, base, &out)?;
        if self.total_weight <= 0.0 {
            return Err(Error::input(
                "nothing to average: no updates were added, or their weights sum to zero",
            ));
        }
        let inv_w = 1.0 / self.total_weight;
        out.into_par_iter()
            .zip(self.sums.par_iter())
            .enumerate()
            .for_each(|(t, (out, sum))| {
                let spec = &self.round.tensors[t];
                let b = base_of(base, t);
                match sum {
                    AccBuf::F32(acc) => finish(acc, spec.dtype, b, inv_w, out),
                    AccBuf::F64(acc) => finish(acc, spec.dtype, b, inv_w, out),
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{parse, prepare, EncodeOptions, TensorInput};

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn f32_of(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn payload(tensors: &[(&str, Vec<f32>)], codec: &str) -> Vec<u8> {
        let bytes: Vec<(Vec<u8>, Vec<u64>)> = tensors
            .iter()
            .map(|(_, v)| (f32_bytes(v), vec![v.len() as u64]))
            .collect();
        let inputs: Vec<TensorInput<'_>> = tensors
            .iter()
            .zip(&bytes)
            .map(|((name, _), (data, shape))| TensorInput {
                name,
                dtype: DType::F32,
                shape,
                data,
                codec,
                base: None,
            })
            .collect();
        let p = prepare(&inputs, &EncodeOptions::default()).unwrap();
        let mut out = vec![0u8; p.total_len()];
        p.write_into(&mut out);
        out
    }

    fn round(names: &[(&str, usize)], base_id: Option<[u8; 32]>) -> Round {
        let specs = names
            .iter()
            .map(|(n, len)| TensorSpec {
                name: n.to_string(),
                dtype: DType::F32,
                shape: vec![*len as u64],
            })
            .collect();
        Round::new(specs, base_id).unwrap()
    }

    fn opts() -> Options {
        Options {
            verify: true,
            ..Options::default()
        }
    }

    #[test]
    fn weighted_average_of_payloads_any_codec() {
        let a = payload(&[("w", vec![1.0, 2.0, 3.0]), ("b", vec![10.0])], "raw");
        let b = payload(
            &[("b", vec![20.0]), ("w", vec![3.0, 4.0, 5.0])],
            "shuffle+zstd",
        );
        let la = parse(&a).unwrap();
        let lb = parse(&b).unwrap();
        let r = round(&[("w", 3), ("b", 1)], None);
        let mut ups = Vec::new();
        for (buf, layout, w) in [(&a, &la, 1.0), (&b, &lb, 3.0)] {
            let source = Source::Payload { buf, layout };
            let index = r.check(&source, Kind::Model, None).unwrap();
            ups.push(Contribution {
                source,
                kind: Kind::Model,
                weight: w,
                index,
            });
        }
        let mut w = vec![0u8; 12];
        let mut bb = vec![0u8; 4];
        aggregate(&r, None, &ups, vec![&mut w, &mut bb], &opts()).unwrap();
        assert_eq!(f32_of(&w), vec![2.5, 3.5, 4.5]);
        assert_eq!(f32_of(&bb), vec![17.5]);
    }

    #[test]
    fn mismatches_are_explained() {
        let a = payload(&[("w", vec![1.0, 2.0])], "raw");
        let la = parse(&a).unwrap();
        let r = round(&[("w", 3), ("b", 1)], None);
        let source = Source::Payload {
            buf: &a,
            layout: &la,
        };
        let why = r.check(&source, Kind::Model, None).unwrap_err();
        assert!(why.contains("tensor \"w\" is float32[2]"), "{why}");
        assert!(why.contains("missing tensor \"b\""), "{why}");
        let why = r
            .check(&source, Kind::Difference([1; 32]), Some(Kind::Model))
            .unwrap_err();
        assert!(why.contains("cannot be averaged together"), "{why}");
        let rb = round(&[("w", 2)], Some([7; 32]));
        let why = rb
            .check(&source, Kind::Difference([1; 32]), None)
            .unwrap_err();
        assert!(why.contains("the round's base is"), "{why}");
    }

    #[test]
    fn base_differences_clipping_and_integers() {
        let base = f32_bytes(&[1.0, 1.0]);
        let r = round(&[("w", 2)], Some([7; 32]));
        let model = f32_bytes(&[4.0, 5.0]); // d = (3, 4), norm 5
        let diff = f32_bytes(&[0.0, 1.0]); // d = (0, 1), norm 1
        let mv = [TensorView {
            name: "w",
            dtype: DType::F32,
            shape: &[2],
            data: &model,
        }];
        let dv = [TensorView {
            name: "w",
            dtype: DType::F32,
            shape: &[2],
            data: &diff,
        }];
        let ups = vec![
            Contribution {
                source: Source::Tensors(&mv),
                kind: Kind::Model,
                weight: 1.0,
                index: vec![0],
            },
            Contribution {
                source: Source::Tensors(&dv),
                kind: Kind::Difference([7; 32]),
                weight: 1.0,
                index: vec![0],
            },
        ];
        let mut out = vec![0u8; 8];
        let o = Options {
            clip_norm: Some(2.5),
            ..opts()
        };
        let rep = aggregate(&r, Some(&[&base]), &ups, vec![&mut out], &o).unwrap();
        assert_eq!(rep.norms, vec![5.0, 1.0]);
        assert_eq!(rep.scales, vec![0.5, 1.0]);
        // base + ((1.5, 2) + (0, 1)) / 2
        assert_eq!(f32_of(&out), vec![1.75, 2.5]);

        // Streaming gives the same, and integers round half to even.
        let mut acc = Accumulator::new(r.clone(), o).unwrap();
        for u in &ups {
            acc.add(u, Some(&[&base])).unwrap();
        }
        let mut out2 = vec![0u8; 8];
        acc.finish_into(Some(&[&base]), vec![&mut out2]).unwrap();
        assert_eq!(out, out2);

        let ri = Round::new(
            vec![TensorSpec {
                name: "n".into(),
                dtype: DType::I64,
                shape: vec![2],
            }],
            None,
        )
        .unwrap();
        let x: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let y: Vec<u8> = [2i64, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let xs = [TensorView {
            name: "n",
            dtype: DType::I64,
            shape: &[2],
            data: &x,
        }];
        let ys = [TensorView {
            name: "n",
            dtype: DType::I64,
            shape: &[2],
            data: &y,
        }];
        let ups: Vec<Contribution<'_>> = [&xs, &ys]
            .iter()
            .map(|v| Contribution {
                source: Source::Tensors(*v),
                kind: Kind::Model,
                weight: 1.0,
                index: vec![0],
            })
            .collect();
        let mut out = vec![0u8; 16];
        aggregate(&ri, None, &ups, vec![&mut out], &opts()).unwrap();
        let got: Vec<i64> = out
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![2, 4]); // 1.5 -> 2, 3.5 -> 4
    }

    #[test]
    fn corrupt_update_is_an_error_and_leaves_the_sums_alone() {
        let good = payload(&[("a", vec![1.0]), ("w", vec![2.0, 4.0])], "zstd");
        let mut bad = payload(&[("a", vec![9.0]), ("w", vec![9.0, 9.0])], "zstd");
        let lg = parse(&good).unwrap();
        let lb = parse(&bad.clone()).unwrap();
        // Garble tensor "w"'s stored bytes: not zstd any more.
        let w = &lb.entries[1];
        bad[w.start..w.start + w.length].fill(0xff);
        let r = round(&[("a", 1), ("w", 2)], None);
        let mut acc = Accumulator::new(r.clone(), opts()).unwrap();
        let c = |buf, layout| Contribution {
            source: Source::Payload { buf, layout },
            kind: Kind::Model,
            weight: 1.0,
            index: vec![0, 1],
        };
        let err = acc.add(&c(&bad, &lb), None).unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
        assert_eq!(acc.count(), 0);
        // Without verification the decoder itself fails, and "a" is taken back.
        let mut no_verify = Accumulator::new(r.clone(), Options::default()).unwrap();
        let err = no_verify.add(&c(&bad, &lb), None).unwrap_err();
        assert!(err.to_string().contains("\"w\""), "{err}");
        no_verify.add(&c(&good, &lg), None).unwrap();
        let mut a = vec![0u8; 4];
        let mut out = vec![0u8; 8];
        no_verify.finish_into(None, vec![&mut a, &mut out]).unwrap();
        assert_eq!(f32_of(&a), vec![1.0]);
        assert_eq!(f32_of(&out), vec![2.0, 4.0]);
        // And the batch form reports the update.
        let err =
            aggregate(&r, None, &[c(&bad, &lb)], vec![&mut a, &mut out], &opts()).unwrap_err();
        assert!(err.to_string().starts_with("update 0: "), "{err}");
    }

    #[test]
    fn bad_options_and_dtypes_are_refused() {
        let r = Round::new(
            vec![TensorSpec {
                name: "m".into(),
                dtype: DType::Bool,
                shape: vec![1],
            }],
            None,
        );
        assert!(matches!(r, Err(Error::Input(_))));
        let r = round(&[("w", 1)], None);
        let mut out = vec![0u8; 4];
        let err = aggregate(&r, None, &[], vec![&mut out], &opts()).unwrap_err();
        assert!(err.to_string().contains("nothing to average"));
        let o = Options {
            clip_norm: Some(-1.0),
            ..opts()
        };
        assert!(Accumulator::new(r, o).is_err());
    }
}
