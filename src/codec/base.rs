//! Base stages (slot 1): `delta` (new - base, in the float dtype) and `xor` (bitwise,
//! exact). Both need the base tensor the update was made against.

use crate::dtype::scalar::{is_float, with_float, Float};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A base stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Base {
    /// Store `new - base` (float dtypes).
    Delta,
    /// Store `new ^ base` bitwise (any dtype; exact).
    Xor,
}

impl Base {
    /// Why this stage cannot encode a tensor whose scalars are of dtype `scalar`.
    pub(super) fn misfit(self, scalar: DType) -> Option<String> {
        match self {
            Base::Delta if !is_float(scalar) => {
                Some("delta needs floating-point values; use xor for an exact bitwise delta".into())
            }
            _ => None,
        }
    }

    /// True when decoding gives back the exact input.
    pub(super) fn is_lossless(self) -> bool {
        self == Base::Xor
    }

    /// True when what it stores are numbers a sparse stage or a quantizer may act on
    /// (not bit patterns).
    pub(super) fn is_numeric(self) -> bool {
        self == Base::Delta
    }

    /// `out = new (-) base` for the scalars of dtype `scalar` starting at index `first`.
    pub(super) fn encode(
        self,
        scalar: DType,
        new: &[u8],
        base: &[u8],
        out: &mut [u8],
        first: usize,
    ) -> Result<()> {
        match self {
            Base::Delta => with_float!(scalar, T => subtract::<T>(new, base, out, first)),
            Base::Xor => {
                xor_into(new, base, out);
                Ok(())
            }
        }
    }

    /// Undo [`Self::encode`] in place: `out = base (+) out`.
    pub(super) fn decode(self, scalar: DType, out: &mut [u8], base: &[u8]) -> Result<()> {
        match self {
            Base::Delta => with_float!(scalar, T => { add_base::<T>(out, base); Ok(()) }),
            Base::Xor => {
                xor_in_place(out, base);
                Ok(())
            }
        }
    }
}

/// `out = new - base`, element by element, computed in float64 and rounded to nearest
/// even in `T`. `first` is the index of the first scalar (for error messages).
/// Non-finite inputs and differences that overflow `T` are refused.
fn subtract<T: Float>(new: &[u8], base: &[u8], out: &mut [u8], first: usize) -> Result<()> {
    let s = T::SIZE;
    for (i, ((n, b), o)) in new
        .chunks_exact(s)
        .zip(base.chunks_exact(s))
        .zip(out.chunks_exact_mut(s))
        .enumerate()
    {
        let (n, b) = (T::read(n).to_f64(), T::read(b).to_f64());
        let d = T::from_f64(n - b);
        if !d.to_f64().is_finite() {
            let what = if !n.is_finite() || !b.is_finite() {
                format!("element {} is not finite (new {n}, base {b})", first + i)
            } else {
                format!(
                    "the difference at element {} (new {n}, base {b}) overflows its dtype",
                    first + i
                )
            };
            return Err(Error::codec(format!(
                "delta needs finite values and differences: {what}; use \"xor\" for an exact delta"
            )));
        }
        d.write(o);
    }
    Ok(())
}

/// `out = base + out` in place, computed in float64 and rounded to nearest even in `T`.
fn add_base<T: Float>(out: &mut [u8], base: &[u8]) {
    let s = T::SIZE;
    for (o, b) in out.chunks_exact_mut(s).zip(base.chunks_exact(s)) {
        let v = T::read(b).to_f64() + T::read(o).to_f64();
        T::from_f64(v).write(o);
    }
}

/// `out = a ^ b` byte by byte.
fn xor_into(a: &[u8], b: &[u8], out: &mut [u8]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
}

/// `out ^= b` byte by byte.
fn xor_in_place(out: &mut [u8], b: &[u8]) {
    for (o, y) in out.iter_mut().zip(b) {
        *o ^= y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn delta_round_trip_within_bound() {
        let new = [1.0f32, -3.5, 1e-30, 7.25e5, 0.1];
        let base = [0.999f32, -3.0, 2e-30, -7.0e5, 0.1];
        let mut d = vec![0u8; 20];
        subtract::<f32>(&bytes(&new), &bytes(&base), &mut d, 0).unwrap();
        add_base::<f32>(&mut d, &bytes(&base));
        for (i, c) in d.chunks_exact(4).enumerate() {
            let got = f32::read(c);
            let bound = f32::EPSILON * (new[i].abs() + base[i].abs());
            assert!((got - new[i]).abs() <= bound, "{i}: {got} vs {}", new[i]);
        }
    }

    #[test]
    fn delta_refuses_non_finite() {
        let mut d = vec![0u8; 4];
        let e = subtract::<f32>(&bytes(&[f32::NAN]), &bytes(&[1.0]), &mut d, 7).unwrap_err();
        assert!(e.to_string().contains("element 7"), "{e}");
        let e = subtract::<f32>(&bytes(&[3e38]), &bytes(&[-3e38]), &mut d, 0).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn xor_is_exact() {
        let a = [1u8, 2, 3, 255];
        let b = [7u8, 2, 0, 1];
        let mut o = [0u8; 4];
        xor_into(&a, &b, &mut o);
        xor_in_place(&mut o, &b);
        assert_eq!(o, a);
    }
}
