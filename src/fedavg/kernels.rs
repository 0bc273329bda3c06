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
    /// `acc[i] += c * d[i]` for every `d[i]`, each also seen into the lanes' running
    /// `max` and `probe` (see [`Extent`]).
    #[inline(always)]
    fn add_lanes(
        acc: &mut [Self],
        d: &[Self],
        c: Self,
        max: &mut [Self; LANES],
        probe: &mut [Self; LANES],
    ) {
        add_lanes_portable(acc, d, c, max, probe);
    }
    /// `self` if it is greater than `max`, else `max` (NaN is never greater).
    #[inline(always)]
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
    #[inline(always)]
    fn add_lanes(
        acc: &mut [f32],
        d: &[f32],
        c: f32,
        max: &mut [f32; LANES],
        probe: &mut [f32; LANES],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { add_lanes_f32_avx2(acc, d, c, max, probe) };
        }
        add_lanes_portable(acc, d, c, max, probe);
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32::abs(self)
    }
}

impl Acc for f64 {
    const LIMIT: f64 = f64::MAX / 2.0;
    #[inline(always)]
    fn abs(self) -> Self {
        f64::abs(self)
    }
}

/// Convert `dst.len()` elements of `dtype` from `src` (little-endian bytes).
#[inline(always)]
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
        DType::F16 => conv!(u16, |s: A| crate::dtype::scalar::f16_from_f64(s.to_f64())
            .to_bits()),
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
#[inline(always)]
fn view<A: Acc>(dtype: DType, x: &[u8]) -> Option<&[A]> {
    if dtype != A::DTYPE || cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: A is f32 or f64, for which every bit pattern is a valid value.
    let (pre, mid, post) = unsafe { x.align_to::<A>() };
    (pre.is_empty() && post.is_empty()).then_some(mid)
}

/// `d = x - base` (or `x`), `x` and `base` as `dtype` bytes, block by block in the
/// accumulator's type: [`Blocks::next`] gives each block of `d` and its offset in
/// elements. Bytes that already are `A` values are read in place when there is no base.
/// A loop over `next` rather than a callback, so that the loop's body is compiled with
/// its caller's target features (a closure would be compiled on its own, for the
/// baseline).
struct Blocks<'a, A> {
    dtype: DType,
    x: &'a [u8],
    base: Option<&'a [u8]>,
    /// The values themselves, when they are read in place.
    values: Option<&'a [A]>,
    /// Elements in all, and the offset of the next block.
    n: usize,
    k: usize,
    xb: [A; BLOCK],
    bb: [A; BLOCK],
}

impl<'a, A: Acc> Blocks<'a, A> {
    #[inline(always)]
    fn new(dtype: DType, x: &'a [u8], base: Option<&'a [u8]>) -> Self {
        let values = base.is_none().then(|| view::<A>(dtype, x)).flatten();
        Blocks {
            dtype,
            x,
            base,
            values,
            n: x.len() / dtype.itemsize().max(1),
            k: 0,
            xb: [A::default(); BLOCK],
            bb: [A::default(); BLOCK],
        }
    }

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, &[A])> {
        let k = self.k;
        if k >= self.n {
            return None;
        }
        let m = BLOCK.min(self.n - k);
        self.k += m;
        if let Some(values) = self.values {
            return Some((k, &values[k..k + m]));
        }
        let size = self.dtype.itemsize();
        let range = k * size..(k + m) * size;
        load(self.dtype, &self.x[range.clone()], &mut self.xb[..m]);
        if let Some(b) = self.base {
            load(self.dtype, &b[range], &mut self.bb[..m]);
            for (x, &b) in self.xb[..m].iter_mut().zip(&self.bb[..m]) {
                *x = *x - b;
            }
        }
        Some((k, &self.xb[..m]))
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

/// One value seen in one lane: its magnitude into the lane's maximum, `d - d` into its
/// probe.
#[allow(clippy::eq_op)] // `d - d` is the point: NaN for NaN and ±inf, else 0
#[inline(always)]
fn see<A: Acc>(max: &mut A, probe: &mut A, d: A) {
    *max = d.abs().at_least(*max);
    *probe += d - d;
}

impl<A: Acc> Extent<A> {
    fn see_all(&mut self, d: &[A]) {
        let (mut max, mut probe) = (self.max, self.probe);
        let mut chunks = d.chunks_exact(LANES);
        for c in &mut chunks {
            for lane in 0..LANES {
                see(&mut max[lane], &mut probe[lane], c[lane]);
            }
        }
        for (lane, &v) in chunks.remainder().iter().enumerate() {
            see(&mut max[lane], &mut probe[lane], v);
        }
        (self.max, self.probe) = (max, probe);
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
/// norm, and without the element's index: [`scan`] finds it when needed). The add and
/// the scan are one loop, so each value is loaded once.
pub(super) fn add_scan<A: Acc>(
    acc: &mut [A],
    dtype: DType,
    x: &[u8],
    base: Option<&[u8]>,
    c: f64,
) -> Scan {
    let c = A::from_f64(c);
    let mut seen = Extent::<A>::default();
    if let Some(values) = base.is_none().then(|| view::<A>(dtype, x)).flatten() {
        A::add_lanes(acc, values, c, &mut seen.max, &mut seen.probe);
    } else {
        let mut blocks = Blocks::<A>::new(dtype, x, base);
        while let Some((k, d)) = blocks.next() {
            A::add_lanes(&mut acc[k..], d, c, &mut seen.max, &mut seen.probe);
        }
    }
    seen.scan()
}

/// `acc[i] += c * d[i]` for every `d[i]`, each seen into the lanes' `max` and `probe`
/// ([`see`]), in portable code (which the compiler vectorizes for the baseline target).
/// A function of its own with local copies of the lanes, so that the compiler knows
/// them apart from `acc` and keeps them in registers.
#[inline(always)]
fn add_lanes_portable<A: Acc>(
    acc: &mut [A],
    d: &[A],
    c: A,
    max: &mut [A; LANES],
    probe: &mut [A; LANES],
) {
    let (mut m, mut p) = (*max, *probe);
    let mut a_lanes = acc[..d.len()].chunks_exact_mut(LANES);
    let mut d_lanes = d.chunks_exact(LANES);
    for (a, d) in (&mut a_lanes).zip(&mut d_lanes) {
        for lane in 0..LANES {
            a[lane] += c * d[lane];
            see(&mut m[lane], &mut p[lane], d[lane]);
        }
    }
    let d_rest = d_lanes.remainder();
    for (lane, (a, &d)) in a_lanes.into_remainder().iter_mut().zip(d_rest).enumerate() {
        *a += c * d;
        see(&mut m[lane], &mut p[lane], d);
    }
    (*max, *probe) = (m, p);
}

/// [`add_lanes_portable`] for float32 with AVX2, 16 values a step: the same operations
/// on each element (a multiply, then an add: no fused multiply-add), so the sums are
/// the portable code's bit for bit; the lanes' maxima are exact whatever the lanes, and
/// the probes stay 0 exactly while every value is finite.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_lanes_f32_avx2(
    acc: &mut [f32],
    d: &[f32],
    c: f32,
    max: &mut [f32; LANES],
    probe: &mut [f32; LANES],
) {
    use std::arch::x86_64::*;
    let acc = &mut acc[..d.len()];
    let n = d.len() / 16 * 16;
    let cv = _mm256_set1_ps(c);
    let sign = _mm256_set1_ps(-0.0);
    // SAFETY: every load and store below is of 8 floats at `i` or `i + 8`, with
    // `i + 16 <= n <= d.len() == acc.len()`; `max` and `probe` are 8 floats each.
    unsafe {
        let (mut m0, mut p0) = (
            _mm256_loadu_ps(max.as_ptr()),
            _mm256_loadu_ps(probe.as_ptr()),
        );
        let (mut m1, mut p1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (a, x) = (acc.as_mut_ptr(), d.as_ptr());
        let mut i = 0;
        while i < n {
            let (x0, x1) = (_mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(x.add(i + 8)));
            let (a0, a1) = (_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(a.add(i + 8)));
            _mm256_storeu_ps(a.add(i), _mm256_add_ps(a0, _mm256_mul_ps(cv, x0)));
            _mm256_storeu_ps(a.add(i + 8), _mm256_add_ps(a1, _mm256_mul_ps(cv, x1)));
            // max(|x|, m): |x| where it is greater, else m (so NaN leaves m), as `see`.
            m0 = _mm256_max_ps(_mm256_andnot_ps(sign, x0), m0);
            m1 = _mm256_max_ps(_mm256_andnot_ps(sign, x1), m1);
            p0 = _mm256_add_ps(p0, _mm256_sub_ps(x0, x0));
            p1 = _mm256_add_ps(p1, _mm256_sub_ps(x1, x1));
            i += 16;
        }
        // NaN in one set stays NaN in the sum: a probe of 0 still means all finite.
        _mm256_storeu_ps(max.as_mut_ptr(), _mm256_max_ps(m1, m0));
        _mm256_storeu_ps(probe.as_mut_ptr(), _mm256_add_ps(p0, p1));
    }
    add_lanes_portable(&mut acc[n..], &d[n..], c, max, probe);
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
    let mut blocks = Blocks::<A>::new(dtype, x, base);
    while let Some((k, d)) = blocks.next() {
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
    }
}

#[cfg(test)]
#[path = "kernels_tests.rs"]
mod tests;
