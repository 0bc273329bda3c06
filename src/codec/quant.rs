//! Quantizers: `f16`, `bf16` (round to nearest even) and `int8` (symmetric, per tensor
//! or per output channel, nearest or stochastic rounding).

use half::{bf16, f16};

use super::scalar::Float;
use crate::error::{Error, Result};

/// Cast `src` (scalars of `T`) to float16 into `out`. A finite value that would
/// round to infinity is refused, never silently turned into inf.
pub(crate) fn to_f16<T: Float>(src: &[u8], out: &mut [u8], first: usize) -> Result<()> {
    for (i, (x, o)) in src
        .chunks_exact(T::SIZE)
        .zip(out.chunks_exact_mut(2))
        .enumerate()
    {
        let x = T::read(x);
        let h = x.to_f16();
        if h.is_infinite() && x.to_f64().is_finite() {
            return Err(out_of_range("float16", "65504", x, first + i));
        }
        o.copy_from_slice(&h.to_le_bytes());
    }
    Ok(())
}

/// Cast `src` (scalars of `T`) to bfloat16 into `out`; as [`to_f16`].
pub(crate) fn to_bf16<T: Float>(src: &[u8], out: &mut [u8], first: usize) -> Result<()> {
    for (i, (x, o)) in src
        .chunks_exact(T::SIZE)
        .zip(out.chunks_exact_mut(2))
        .enumerate()
    {
        let x = T::read(x);
        let h = x.to_bf16();
        if h.is_infinite() && x.to_f64().is_finite() {
            return Err(out_of_range("bfloat16", "3.3895e38", x, first + i));
        }
        o.copy_from_slice(&h.to_le_bytes());
    }
    Ok(())
}

fn out_of_range<T: Float>(target: &str, max: &str, x: T, index: usize) -> Error {
    Error::codec(format!(
        "value {x} at element {index} is beyond {target}'s range (largest finite {max}) \
         and would become inf; scale the tensor or keep it wider (e.g. a lossless codec)"
    ))
}

/// Widen float16 scalars in `src` to `T` in `out` (exact).
pub(crate) fn from_f16<T: Float>(src: &[u8], out: &mut [u8]) {
    for (h, o) in src.chunks_exact(2).zip(out.chunks_exact_mut(T::SIZE)) {
        T::from_f32(f16::from_le_bytes([h[0], h[1]]).to_f32()).write(o);
    }
}

/// Widen bfloat16 scalars in `src` to `T` in `out` (exact).
pub(crate) fn from_bf16<T: Float>(src: &[u8], out: &mut [u8]) {
    for (h, o) in src.chunks_exact(2).zip(out.chunks_exact_mut(T::SIZE)) {
        T::from_f32(bf16::from_le_bytes([h[0], h[1]]).to_f32()).write(o);
    }
}

/// The int8 scale for values of largest magnitude `max`: the smallest float32 `s`
/// with `127 * s >= max` (0 when `max` is 0).
pub(crate) fn int8_scale(max: f64) -> Result<f32> {
    if !max.is_finite() {
        return Err(Error::codec(
            "int8 needs finite values (and a largest magnitude within float32's range)",
        ));
    }
    if max == 0.0 {
        return Ok(0.0);
    }
    let mut s = (max / 127.0) as f32;
    while (s as f64) * 127.0 < max {
        s = f32::from_bits(s.to_bits() + 1);
    }
    if !s.is_finite() {
        return Err(Error::codec(format!(
            "int8 scale for largest magnitude {max} overflows float32"
        )));
    }
    Ok(s)
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
pub(crate) fn int8_one(x: f64, scale: f32, seed: Option<u64>, index: u64) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    let r = x / scale as f64;
    let q = match seed {
        None => r.round_ties_even(),
        Some(seed) => (r + uniform(seed, index)).floor(),
    };
    q.clamp(-127.0, 127.0) as i8
}

/// Quantize a run of scalars sharing one scale; `first` is the first one's index.
pub(crate) fn to_int8<T: Float>(
    src: &[u8],
    out: &mut [u8],
    scale: f32,
    seed: Option<u64>,
    first: u64,
) {
    for (i, (x, o)) in src.chunks_exact(T::SIZE).zip(out.iter_mut()).enumerate() {
        *o = int8_one(T::read(x).to_f64(), scale, seed, first + i as u64) as u8;
    }
}

/// Dequantize one int8 into `T`.
#[inline]
pub(crate) fn from_int8_one<T: Float>(q: u8, scale: f32) -> T {
    T::from_f64(q as i8 as f64 * scale as f64)
}

/// Dequantize a run of int8 sharing one scale.
pub(crate) fn from_int8<T: Float>(src: &[u8], out: &mut [u8], scale: f32) {
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
