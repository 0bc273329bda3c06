//! Quantizers (slot 3): `f16`, `bf16` (round to nearest even) and `int8` (symmetric,
//! per tensor or per output channel, nearest or stochastic rounding); the blockwise
//! ones (`int8:block=N`, `int4`, `nf4`) live in `blockwise.rs`.

use std::any::TypeId;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::blockwise::{self, Blockwise, ROUND_MAGIC};
use crate::dtype::scalar::{is_float, with_float, Float};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Quantizer {
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
    /// One absmax scale per run of values, stored in each coded block before the codes.
    Block(Blockwise),
}

/// How a tensor's scalars map to int8 channels (one scale each): `row` scalars per
/// channel (an axis-0 slice), `count` channels. Without per-channel scales, one
/// channel holds every scalar.
#[derive(Debug, Clone, Copy)]
pub(super) struct Channels {
    /// Scalars per channel.
    pub row: usize,
    /// Number of channels.
    pub count: usize,
}

impl Channels {
    /// The channels of `n` scalars of a tensor of `shape` under `quantizer`.
    pub(super) fn of(quantizer: Option<Quantizer>, shape: &[u64], n: usize) -> Result<Self> {
        if !matches!(
            quantizer,
            Some(Quantizer::Int8 {
                per_channel: true,
                ..
            })
        ) {
            return Ok(Channels { row: n, count: 1 });
        }
        let Some(&c) = shape.first() else {
            return Err(Error::codec(
                "int8:channel needs a tensor with at least one axis (channels are axis 0)",
            ));
        };
        let count = c as usize;
        Ok(Channels {
            row: n.checked_div(count).unwrap_or(0),
            count,
        })
    }

    /// The channel of the scalar at tensor-wide `index`.
    pub(super) fn of_index(&self, index: usize) -> usize {
        index.checked_div(self.row).unwrap_or(0)
    }

    /// Channel runs of the scalars `lo..hi`: (channel, local start, local end).
    pub(super) fn runs(&self, lo: usize, hi: usize) -> Vec<(usize, usize, usize)> {
        if self.row == 0 || self.count <= 1 {
            return vec![(0, 0, hi - lo)];
        }
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
}

/// Where a block's values sit in the tensor: the block's first scalar `lo`, and for a
/// sparse block the block-local index of each value.
#[derive(Clone, Copy)]
pub(super) struct Positions<'a> {
    /// Tensor-wide index of the block's first scalar.
    pub lo: usize,
    /// Block-local index of each value (sparse); `None`: value `j` is scalar `lo + j`.
    pub indices: Option<&'a [u32]>,
}

impl Quantizer {
    /// The dtype of the values it produces.
    pub(super) fn value_dtype(self) -> DType {
        match self {
            Quantizer::F16 => DType::F16,
            Quantizer::BF16 => DType::BF16,
            Quantizer::Int8 { .. } => DType::I8,
            // Bytes of scales and codes: see [`Self::value_bytes`].
            Quantizer::Block(_) => DType::U8,
        }
    }

    /// Stored bytes of `count` values of a block, `q` bytes each for all but the
    /// blockwise quantizers (which add their scales and pack int4/nf4 two to a byte).
    pub(super) fn value_bytes(quantizer: Option<Self>, count: usize, q: usize) -> usize {
        match quantizer {
            Some(Quantizer::Block(b)) => b.value_bytes(count),
            _ => count * q,
        }
    }

    /// The blockwise quantizer, when this is one.
    pub(super) fn blockwise(self) -> Option<Blockwise> {
        match self {
            Quantizer::Block(b) => Some(b),
            _ => None,
        }
    }

    /// Why this stage cannot encode a tensor of `dtype`.
    pub(super) fn misfit(self, dtype: DType) -> Option<String> {
        match self {
            Quantizer::F16 | Quantizer::BF16 if !matches!(dtype, DType::F32 | DType::F64) => {
                Some("it narrows float32 or float64 tensors only".into())
            }
            Quantizer::Int8 { .. } | Quantizer::Block(_) if !is_float(dtype) => {
                Some("it needs a float16, bfloat16, float32 or float64 tensor".into())
            }
            _ => None,
        }
    }

    /// True when the stored bytes carry one float32 scale per channel.
    pub(super) fn is_scaled(self) -> bool {
        matches!(self, Quantizer::Int8 { .. })
    }

    /// Quantize `values` (scalars of dtype `scalar` at `at`) into `out` (one value
    /// each), with `scales` per channel of `channels`.
    pub(super) fn encode(
        self,
        scalar: DType,
        values: &[u8],
        out: &mut [u8],
        at: Positions<'_>,
        scales: &[f32],
        channels: Channels,
    ) -> Result<()> {
        let lo = at.lo;
        match self {
            Quantizer::Block(b) => b.encode(scalar, values, out, |j| {
                lo + at.indices.map_or(j, |ix| ix[j] as usize)
            }),
            Quantizer::F16 => with_float!(scalar, T => to_f16::<T>(values, out, lo)),
            Quantizer::BF16 => with_float!(scalar, T => to_bf16::<T>(values, out, lo)),
            Quantizer::Int8 {
                stochastic_seed, ..
            } => with_float!(scalar, T => {
                let s = T::SIZE;
                match at.indices {
                    Some(ix) => {
                        for ((c, o), &i) in values.chunks_exact(s).zip(out.iter_mut()).zip(ix) {
                            let g = lo + i as usize;
                            let scale = scales[channels.of_index(g)];
                            *o = int8_one(T::read(c).to_f64(), scale, stochastic_seed, g as u64) as u8;
                        }
                    }
                    None => {
                        let hi = lo + values.len() / s;
                        for (c, a, b) in channels.runs(lo, hi) {
                            to_int8::<T>(&values[a * s..b * s], &mut out[a..b], scales[c], stochastic_seed, (lo + a) as u64);
                        }
                    }
                }
                Ok(())
            }),
        }
    }

    /// Undo [`Self::encode`]: the values `qvals` back to scalars of dtype `scalar`.
    pub(super) fn decode(
        self,
        scalar: DType,
        qvals: &[u8],
        out: &mut [u8],
        at: Positions<'_>,
        scales: &[f32],
        channels: Channels,
    ) -> Result<()> {
        let lo = at.lo;
        match self {
            Quantizer::Block(b) => b.decode(scalar, qvals, out),
            Quantizer::F16 => with_float!(scalar, T => { from_f16::<T>(qvals, out); Ok(()) }),
            Quantizer::BF16 => with_float!(scalar, T => { from_bf16::<T>(qvals, out); Ok(()) }),
            Quantizer::Int8 { .. } => with_float!(scalar, T => {
                let s = T::SIZE;
                match at.indices {
                    Some(ix) => {
                        for ((&qv, o), &i) in qvals.iter().zip(out.chunks_exact_mut(s)).zip(ix) {
                            let scale = scales[channels.of_index(lo + i as usize)];
                            from_int8_one::<T>(qv, scale).write(o);
                        }
                    }
                    None => {
                        for (c, a, b) in channels.runs(lo, lo + qvals.len()) {
                            from_int8::<T>(&qvals[a..b], &mut out[a * s..b * s], scales[c]);
                        }
                    }
                }
                Ok(())
            }),
        }
    }
}

/// Cast `src` (scalars of `T`) to float16 into `out`. A finite value that would
/// round to infinity is refused, never silently turned into inf.
fn to_f16<T: Float>(src: &[u8], out: &mut [u8], first: usize) -> Result<()> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        return f32_to_f16(src, out, first);
    }
    to_half(src, out, first, ("float16", "65504"), |x: T| {
        let h = x.to_f16();
        (h.is_infinite(), h.to_le_bytes())
    })
}

/// Cast `src` (scalars of `T`) to bfloat16 into `out`; as [`to_f16`].
fn to_bf16<T: Float>(src: &[u8], out: &mut [u8], first: usize) -> Result<()> {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        return f32_to_bf16(src, out, first);
    }
    to_half(src, out, first, ("bfloat16", "3.3895e38"), |x: T| {
        let h = x.to_bf16();
        (h.is_infinite(), h.to_le_bytes())
    })
}

/// The scalar loop of [`to_f16`] and [`to_bf16`]: `cast` gives a value's 16-bit bytes
/// and whether they are infinite; `target` names the type and its largest finite value.
fn to_half<T: Float>(
    src: &[u8],
    out: &mut [u8],
    first: usize,
    target: (&str, &str),
    cast: impl Fn(T) -> (bool, [u8; 2]),
) -> Result<()> {
    for (i, (x, o)) in src
        .chunks_exact(T::SIZE)
        .zip(out.chunks_exact_mut(2))
        .enumerate()
    {
        let x = T::read(x);
        let (infinite, bytes) = cast(x);
        if infinite && x.to_f64().is_finite() {
            return Err(out_of_range(target.0, target.1, x, first + i));
        }
        o.copy_from_slice(&bytes);
    }
    Ok(())
}

fn out_of_range<T: Float>(target: &str, max: &str, x: T, index: usize) -> Error {
    Error::codec(format!(
        "value {x} at element {index} is beyond {target}'s range (largest finite {max}) \
         and would become inf; scale the tensor or keep it wider (e.g. a lossless codec)"
    ))
}

/// Scalars converted per chunk by the float32 fast paths (F16C when the CPU has it).
const CHUNK: usize = 256;

fn f32_to_f16(src: &[u8], out: &mut [u8], first: usize) -> Result<()> {
    let mut xs = [0f32; CHUNK];
    let mut hs = [f16::ZERO; CHUNK];
    for (c, (s, o)) in src
        .chunks(4 * CHUNK)
        .zip(out.chunks_mut(2 * CHUNK))
        .enumerate()
    {
        let n = s.len() / 4;
        for (x, b) in xs.iter_mut().zip(s.chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        hs[..n].convert_from_f32_slice(&xs[..n]);
        let mut overflow = false;
        for ((h, x), b) in hs.iter().zip(&xs).zip(o.chunks_exact_mut(2)) {
            overflow |= h.is_infinite() & x.is_finite();
            b.copy_from_slice(&h.to_le_bytes());
        }
        if overflow {
            let i = (0..n)
                .find(|&i| hs[i].is_infinite() && xs[i].is_finite())
                .unwrap_or(0);
            return Err(out_of_range(
                "float16",
                "65504",
                xs[i],
                first + c * CHUNK + i,
            ));
        }
    }
    Ok(())
}

fn f16_to_f32(src: &[u8], out: &mut [u8]) {
    let mut xs = [0f32; CHUNK];
    let mut hs = [f16::ZERO; CHUNK];
    for (s, o) in src.chunks(2 * CHUNK).zip(out.chunks_mut(4 * CHUNK)) {
        let n = s.len() / 2;
        for (h, b) in hs.iter_mut().zip(s.chunks_exact(2)) {
            *h = f16::from_le_bytes([b[0], b[1]]);
        }
        hs[..n].convert_to_f32_slice(&mut xs[..n]);
        for (x, b) in xs.iter().zip(o.chunks_exact_mut(4)) {
            b.copy_from_slice(&x.to_le_bytes());
        }
    }
}

/// float32 bits to bfloat16 bits, round to nearest even, NaN kept quiet (as `half`).
#[inline]
fn bf16_bits(x: u32) -> u16 {
    let rounded = (x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16) as u16;
    if x & 0x7FFF_FFFF > 0x7F80_0000 {
        ((x >> 16) | 0x40) as u16
    } else {
        rounded
    }
}

fn f32_to_bf16(src: &[u8], out: &mut [u8], first: usize) -> Result<()> {
    let mut overflow = false;
    for (b, o) in src.chunks_exact(4).zip(out.chunks_exact_mut(2)) {
        let x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let h = bf16_bits(x);
        // Finite input (exponent not all ones) that rounded to inf.
        overflow |= (h & 0x7FFF == 0x7F80) & (x & 0x7F80_0000 != 0x7F80_0000);
        o.copy_from_slice(&h.to_le_bytes());
    }
    if overflow {
        for (i, b) in src.chunks_exact(4).enumerate() {
            let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if x.is_finite() && bf16::from_f32(x).is_infinite() {
                return Err(out_of_range("bfloat16", "3.3895e38", x, first + i));
            }
        }
    }
    Ok(())
}

/// Widen float16 scalars in `src` to `T` in `out` (exact).
fn from_f16<T: Float>(src: &[u8], out: &mut [u8]) {
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        return f16_to_f32(src, out);
    }
    for (h, o) in src.chunks_exact(2).zip(out.chunks_exact_mut(T::SIZE)) {
        T::from_f32(f16::from_le_bytes([h[0], h[1]]).to_f32()).write(o);
    }
}

/// Widen bfloat16 scalars in `src` to `T` in `out` (exact).
fn from_bf16<T: Float>(src: &[u8], out: &mut [u8]) {
    for (h, o) in src.chunks_exact(2).zip(out.chunks_exact_mut(T::SIZE)) {
        T::from_f32(bf16::from_le_bytes([h[0], h[1]]).to_f32()).write(o);
    }
}

/// The int8 scale for values of largest magnitude `max`: the smallest float32 `s`
/// with `127 * s >= max` (0 when `max` is 0).
pub(super) fn int8_scale(max: f64) -> Result<f32> {
    blockwise::absmax_scale(max, 127.0, "int8")
}

/// A uniform number in [0, 1) determined by `seed` and the scalar's index (splitmix64),
/// so stochastic rounding is reproducible and independent of blocking and threads.
fn uniform(seed: u64, index: u64) -> f64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Quantize one value with `scale`: round to nearest even, or stochastically (floor of
/// `x/scale + u`) when `seed` is set; clamped to -127..=127.
#[inline]
fn int8_one(x: f64, scale: f32, seed: Option<u64>, index: u64) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    let r = (x / scale as f64).clamp(-127.0, 127.0);
    match seed {
        // Adding and removing 1.5 * 2^52 rounds to nearest even (|r| <= 127) without
        // a libm call; the cast is then exact.
        None => ((r + ROUND_MAGIC) - ROUND_MAGIC) as i8,
        Some(seed) => {
            let v = r + uniform(seed, index);
            let t = v as i32; // truncates toward zero
            (t - (v < t as f64) as i32).clamp(-127, 127) as i8
        }
    }
}

/// Quantize a run of scalars sharing one scale; `first` is the first one's index.
fn to_int8<T: Float>(src: &[u8], out: &mut [u8], scale: f32, seed: Option<u64>, first: u64) {
    for (i, (x, o)) in src.chunks_exact(T::SIZE).zip(out.iter_mut()).enumerate() {
        *o = int8_one(T::read(x).to_f64(), scale, seed, first + i as u64) as u8;
    }
}

/// Dequantize one int8 into `T`.
#[inline]
fn from_int8_one<T: Float>(q: u8, scale: f32) -> T {
    T::from_f64(q as i8 as f64 * scale as f64)
}

/// Dequantize a run of int8 sharing one scale.
fn from_int8<T: Float>(src: &[u8], out: &mut [u8], scale: f32) {
    for (&q, o) in src.iter().zip(out.chunks_exact_mut(T::SIZE)) {
        from_int8_one::<T>(q, scale).write(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn f16_bound_and_range() {
        let v = [
            1.0f32,
            0.1,
            -65504.0,
            1e-6,
            3e-8,
            f32::INFINITY,
            -0.0,
            65519.0,
        ];
        let mut h = vec![0u8; v.len() * 2];
        to_f16::<f32>(&bytes(&v), &mut h, 0).unwrap();
        let mut back = vec![0u8; v.len() * 4];
        from_f16::<f32>(&h, &mut back);
        for (i, c) in back.chunks_exact(4).enumerate() {
            let got = f32::read(c);
            if v[i].is_infinite() {
                assert_eq!(got, v[i]);
                continue;
            }
            let bound = (v[i].abs() * 2f32.powi(-11)).max(2f32.powi(-25));
            assert!((got - v[i]).abs() <= bound, "{}: {got}", v[i]);
        }
        let e = to_f16::<f32>(&bytes(&[1.0, 70000.0]), &mut h[..4], 0).unwrap_err();
        assert!(e.to_string().contains("element 1"), "{e}");
        assert!(to_f16::<f32>(&bytes(&[65520.0]), &mut h[..2], 0).is_err());
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        let v = [1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)];
        let mut h = vec![0u8; 4];
        to_bf16::<f32>(&bytes(&v), &mut h, 0).unwrap();
        let mut back = vec![0u8; 8];
        from_bf16::<f32>(&h, &mut back);
        assert_eq!(f32::read(&back[..4]), 1.0);
        assert_eq!(f32::read(&back[4..]), 1.0 + 4.0 * 2f32.powi(-8));
        assert!(to_bf16::<f32>(&bytes(&[f32::MAX]), &mut h[..2], 0).is_err());
    }

    #[test]
    fn fast_bf16_matches_half() {
        let mut x = 1u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            for v in [
                x,
                x & 0xFFFF_8000,
                x | 0x7F80_0000,
                (x & 0x8000_FFFF) | 0x7F7F_0000,
            ] {
                let f = f32::from_bits(v);
                let want = bf16::from_f32(f);
                let got = bf16::from_bits(bf16_bits(v));
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{v:#x}"
                );
            }
        }
    }

    #[test]
    fn int8_bounds() {
        let s = int8_scale(2.54).unwrap();
        assert!(127.0 * s as f64 >= 2.54);
        for x in [-2.54f64, -1.0, 0.0, 0.013, 2.54] {
            let q = int8_one(x, s, None, 0);
            assert!((q as f64 * s as f64 - x).abs() <= s as f64 / 2.0 + 1e-12);
        }
        // Stochastic rounding is unbiased: the mean of many draws is close to x.
        let x = 0.3 * s as f64;
        let mean: f64 = (0..20000)
            .map(|i| int8_one(x, s, Some(7), i) as f64 * s as f64)
            .sum::<f64>()
            / 20000.0;
        assert!((mean - x).abs() < 0.02 * s as f64, "{mean} vs {x}");
        assert_eq!(int8_scale(0.0).unwrap(), 0.0);
        assert!(int8_scale(1e-45).unwrap() > 0.0);
        assert!(int8_scale(f64::NAN).is_err());
    }
}
