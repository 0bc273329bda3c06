//! Kernels: blocks of little-endian elements converted to the accumulator type (f32 or
//! f64) and back, added with a coefficient, scanned for the values that would poison a
//! round, and turned into the result.

use std::ops::{Add, AddAssign, Mul, Sub};

use crate::dtype::scalar::Float;
use crate::dtype::DType;

/// Elements converted per block by the kernels (two stack buffers of this many values).
pub(super) const BLOCK: usize = 2048;

/// The accumulator element type, f32 or f64: a [`Float`] with the arithmetic of sums.
pub(super) trait Acc:
    Float
    + PartialOrd
    + Default
    + AddAssign
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + crate::memory::Zeroed
{
    /// The largest magnitude a sum may reach: half the type's range, so that rounding
    /// on the way can never carry it to infinity.
    const LIMIT: f64;
    fn abs(self) -> Self;
    /// `self` if it is greater than `max`, else `max` (NaN is never greater).
    fn at_least(self, max: Self) -> Self {
        if self > max {
            self
        } else {
            max
        }
    }
}

impl Acc for f32 {
    const LIMIT: f64 = f32::MAX as f64 / 2.0;
    fn abs(self) -> Self {
        f32::abs(self)
    }
}

impl Acc for f64 {
    const LIMIT: f64 = f64::MAX / 2.0;
    fn abs(self) -> Self {
        f64::abs(self)
    }
}

/// Convert `dst.len()` elements of `dtype` from `src` (little-endian bytes).
pub(super) fn load<A: Acc>(dtype: DType, src: &[u8], dst: &mut [A]) {
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
pub(super) fn store<A: Acc>(dtype: DType, src: &[A], dst: &mut [u8]) {
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

/// `x`'s bytes as `A` values without a copy, when they are `A`'s own dtype and aligned.
fn view<A: Acc>(dtype: DType, x: &[u8]) -> Option<&[A]> {
    if dtype != A::DTYPE || cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: A is f32 or f64, for which every bit pattern is a valid value.
    let (pre, mid, post) = unsafe { x.align_to::<A>() };
    (pre.is_empty() && post.is_empty()).then_some(mid)
}

/// `d = x - base` (or `x`), `x` and `base` as `dtype` bytes, block by block in the
/// accumulator's type: `f` gets each block of `d` and its offset in elements. Bytes that
/// already are `A` values are read in place when there is no base.
fn for_each_block<A: Acc>(
    dtype: DType,
    x: &[u8],
    base: Option<&[u8]>,
    mut f: impl FnMut(usize, &[A]),
) {
    let size = dtype.itemsize();
    let n = x.len() / size.max(1);
    if base.is_none() {
        if let Some(values) = view::<A>(dtype, x) {
            for (k, d) in values.chunks(BLOCK).enumerate() {
                f(k * BLOCK, d);
            }
            return;
        }
    }
    let mut xb = [A::default(); BLOCK];
    let mut bb = [A::default(); BLOCK];
    let mut k = 0;
    while k < n {
        let m = BLOCK.min(n - k);
        let range = k * size..(k + m) * size;
        load(dtype, &x[range.clone()], &mut xb[..m]);
        if let Some(b) = base {
            load(dtype, &b[range], &mut bb[..m]);
            for (x, &b) in xb[..m].iter_mut().zip(&bb[..m]) {
                *x = *x - b;
            }
        }
        f(k, &xb[..m]);
        k += m;
    }
}

/// Lanes of the running extent: independent maxima and probes that the compiler keeps
/// in one vector register each (a single running value would be a sequential chain).
const LANES: usize = 8;

/// What a pass over `d` tracks in float arithmetic only, lane by lane (it vectorizes):
/// the largest magnitude, and `probe`, the sum of `d - d`, which is 0 while every value
/// is finite and NaN as soon as one is not.
#[derive(Clone, Copy, Default)]
struct Extent<A> {
    max: [A; LANES],
    probe: [A; LANES],
}

impl<A: Acc> Extent<A> {
    #[allow(clippy::eq_op)] // `d - d` is the point: NaN for NaN and ±inf, else 0
    fn see(&mut self, lane: usize, d: A) {
        self.max[lane] = d.abs().at_least(self.max[lane]);
        self.probe[lane] += d - d;
    }

    fn see_all(&mut self, d: &[A]) {
        let mut chunks = d.chunks_exact(LANES);
        for c in &mut chunks {
            for (lane, &v) in c.iter().enumerate() {
                self.see(lane, v);
            }
        }
        for (lane, &v) in chunks.remainder().iter().enumerate() {
            self.see(lane, v);
        }
    }

    fn scan(self) -> Scan {
        let non_finite = self.probe.iter().any(|p| p.to_f64() != 0.0);
        let max = self.max.iter().map(|m| m.to_f64()).fold(0.0, f64::max);
        Scan {
            max_abs: if non_finite { f64::INFINITY } else { max },
            non_finite,
            ..Scan::default()
        }
    }
}

/// `acc += c * d`, `d = x - base` (or `x`), computed as the sums are, and what `d`
/// held: its largest magnitude and whether some element is not finite (without its
/// norm, and without the element's index: [`scan`] finds it when needed).
pub(super) fn add_scan<A: Acc>(
    acc: &mut [A],
    dtype: DType,
    x: &[u8],
    base: Option<&[u8]>,
    c: f64,
) -> Scan {
    let c = A::from_f64(c);
    let mut seen = Extent::<A>::default();
    for_each_block(dtype, x, base, |k, d: &[A]| {
        for (a, &d) in acc[k..k + d.len()].iter_mut().zip(d) {
            *a += c * d;
        }
        seen.see_all(d);
    });
    seen.scan()
}

/// Write `base + acc * inv_w` (or `acc * inv_w`) as `dtype` into `out`.
pub(super) fn finish<A: Acc>(
    acc: &[A],
    dtype: DType,
    base: Option<&[u8]>,
    inv_w: f64,
    out: &mut [u8],
) {
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
pub(super) fn finish_in_place<A: Acc>(acc: &mut [A], base: Option<&[u8]>, inv_w: f64) {
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
pub(super) fn as_acc_mut<A: Acc>(bytes: &mut [u8]) -> Option<&mut [A]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: A is f32 or f64, for which every bit pattern is a valid value.
    let (pre, mid, post) = unsafe { bytes.align_to_mut::<A>() };
    (pre.is_empty() && post.is_empty()).then_some(mid)
}

/// What a pass saw of one tensor of an update, its contribution `d`: the sum of
/// squares (when asked for), the largest magnitude, and whether some element is not
/// finite — with its index and value when [`scan`] looked for it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Scan {
    pub sum_sq: f64,
    pub max_abs: f64,
    pub non_finite: bool,
    pub bad: Option<(usize, f64)>,
}

impl Scan {
    /// Fold in the scan of the next elements (`offset` elements in).
    pub(super) fn join(&mut self, other: Scan, offset: usize) {
        self.sum_sq += other.sum_sq;
        self.max_abs = self.max_abs.max(other.max_abs);
        self.non_finite |= other.non_finite;
        if self.bad.is_none() {
            self.bad = other.bad.map(|(i, v)| (i + offset, v));
        }
    }
}

/// Scan `d = x - base` (or `x`), computed in the accumulator's type `A` as the sums will
/// be: its sum of squares in float64 (when `norm`), its largest magnitude, and the first
/// element that is not finite (a value that is, or a difference that overflows `A`).
pub(super) fn scan<A: Acc>(dtype: DType, x: &[u8], base: Option<&[u8]>, norm: bool) -> Scan {
    let mut out = Scan::default();
    scan_on::<A>(&mut out, 0, dtype, x, base, norm);
    out
}

/// [`scan`] of the next elements of a tensor (`offset` elements in), folded into `out`,
/// the scan of the elements before: the same additions in the same order as one
/// [`scan`] of the whole when `offset` is a multiple of [`BLOCK`].
pub(super) fn scan_on<A: Acc>(
    out: &mut Scan,
    offset: usize,
    dtype: DType,
    x: &[u8],
    base: Option<&[u8]>,
    norm: bool,
) {
    for_each_block(dtype, x, base, |k, d: &[A]| {
        let k = k + offset;
        let mut seen = Extent::<A>::default();
        seen.see_all(d);
        let block = seen.scan();
        if block.non_finite && out.bad.is_none() {
            let i = d
                .iter()
                .position(|v| !v.to_f64().is_finite())
                .expect("found");
            out.bad = Some((k + i, d[i].to_f64()));
        }
        out.join(block, 0);
        if norm {
            out.sum_sq += d.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>();
        }
    });
}
