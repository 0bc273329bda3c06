//! The one scalar trait: the floating-point types the numeric codec stages (delta,
//! sparse, quantizers) and the aggregation kernels (as accumulators) work on, and the
//! macro that runs generic code for a dtype's type.

use half::{bf16, f16};

use crate::dtype::DType;

/// The scalar type a dtype is made of: complex numbers are pairs of float32/float64.
pub(crate) fn scalar_of(dtype: DType) -> DType {
    match dtype {
        DType::C64 => DType::F32,
        DType::C128 => DType::F64,
        d => d,
    }
}

/// `v` rounded to float16, to nearest even, in one rounding. (`half`'s `f16::from_f64`
/// goes through float32 on x86 with F16C, rounding twice: it can be one ulp off.) Rounds
/// to float32 with round-to-odd first (exact, or the odd one of the two neighbours), which
/// keeps enough bits for the rounding to float16's 11 to be the correct one.
pub(crate) fn f16_from_f64(v: f64) -> f16 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v || f.to_bits() & 1 == 1 {
        return f16::from_f32(f);
    }
    // `f` is the even neighbour of `v`: take the other one, across `v`.
    let (bits, up) = (f.to_bits(), (f as f64) < v);
    let odd = if f == 0.0 {
        if up {
            1
        } else {
            0x8000_0001
        }
    } else if (bits >> 31 == 0) == up {
        bits + 1
    } else {
        bits - 1
    };
    f16::from_f32(f32::from_bits(odd))
}

/// True for the float dtypes the numeric stages work on (those [`Float`] covers).
pub(crate) fn is_float(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}

/// A little-endian floating-point scalar read from and written to byte slices.
pub(crate) trait Float:
    Copy + Send + Sync + PartialEq + std::fmt::Display + 'static
{
    /// Bytes per scalar.
    const SIZE: usize;
    /// The dtype whose elements are this type.
    const DTYPE: DType;
    /// Read from the first `SIZE` bytes of `b`.
    fn read(b: &[u8]) -> Self;
    /// Write into the first `SIZE` bytes of `b`.
    fn write(self, b: &mut [u8]);
    /// Exact widening.
    fn to_f64(self) -> f64;
    /// Round to nearest even.
    fn from_f64(v: f64) -> Self;
    /// Round to nearest even (exact for float16/bfloat16 inputs).
    fn from_f32(v: f32) -> Self;
    /// To float16, rounding to nearest even.
    fn to_f16(self) -> f16;
    /// To bfloat16, rounding to nearest even.
    fn to_bf16(self) -> bf16;
    /// To float32 (rounding for float64).
    fn to_f32(self) -> f32;
    /// |x| as float32 (rounded for float64); NaN counts as +inf.
    fn mag(self) -> f32 {
        let m = self.to_f32().abs();
        if m.is_nan() {
            f32::INFINITY
        } else {
            m
        }
    }
}

impl Float for f32 {
    const DTYPE: DType = DType::F32;
    const SIZE: usize = 4;
    fn read(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn write(self, b: &mut [u8]) {
        b[..4].copy_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f16(self) -> f16 {
        f16::from_f32(self)
    }
    fn to_bf16(self) -> bf16 {
        bf16::from_f32(self)
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Float for f64 {
    const DTYPE: DType = DType::F64;
    const SIZE: usize = 8;
    fn read(b: &[u8]) -> Self {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        f64::from_le_bytes(w)
    }
    fn write(self, b: &mut [u8]) {
        b[..8].copy_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn to_f16(self) -> f16 {
        f16_from_f64(self)
    }
    fn to_bf16(self) -> bf16 {
        bf16::from_f64(self)
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl Float for f16 {
    const DTYPE: DType = DType::F16;
    const SIZE: usize = 2;
    fn read(b: &[u8]) -> Self {
        f16::from_le_bytes([b[0], b[1]])
    }
    fn write(self, b: &mut [u8]) {
        b[..2].copy_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        f16_from_f64(v)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f16(self) -> f16 {
        self
    }
    fn to_bf16(self) -> bf16 {
        bf16::from_f32(f16::to_f32(self))
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Float for bf16 {
    const DTYPE: DType = DType::BF16;
    const SIZE: usize = 2;
    fn read(b: &[u8]) -> Self {
        bf16::from_le_bytes([b[0], b[1]])
    }
    fn write(self, b: &mut [u8]) {
        b[..2].copy_from_slice(&self.to_le_bytes());
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f16(self) -> f16 {
        f16::from_f32(bf16::to_f32(self))
    }
    fn to_bf16(self) -> bf16 {
        self
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// Run `$body` with `$T` bound to the Rust type of the float dtype `$dt`
/// (float16, bfloat16, float32, float64); any other dtype is a codec error.
macro_rules! with_float {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            $crate::dtype::DType::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::dtype::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            $crate::dtype::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::dtype::DType::F64 => {
                type $T = f64;
                $body
            }
            other => Err($crate::error::Error::codec(format!(
                "{other} is not a float16/bfloat16/float32/float64 scalar"
            ))),
        }
    };
}
pub(crate) use with_float;

#[cfg(test)]
mod tests {
    use super::*;

    /// `f16_from_f64` picks the nearest float16 (ties to even), where `f16::from_f64`
    /// via float32 can round twice; the exact float16 midpoint plus a hair is the case.
    #[test]
    fn f16_from_f64_rounds_once() {
        let one_plus_half_ulp = 1.0 + 2f64.powi(-11); // the midpoint of 1 and 1 + 2^-10
        let v = one_plus_half_ulp + 2f64.powi(-40); // just above it: rounds up
        assert_eq!(f16_from_f64(v).to_f64(), 1.0 + 2f64.powi(-10));
        assert_eq!(f16_from_f64(one_plus_half_ulp).to_f64(), 1.0); // a tie: to even
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x >> 2 | 0x3e00_0000_0000_0000)
                * if x & 1 == 1 { -1.0 } else { 1.0 };
            let got = f16_from_f64(v);
            let err = (got.to_f64() - v).abs();
            for n in [got.to_bits().wrapping_add(1), got.to_bits().wrapping_sub(1)] {
                let other = f16::from_bits(n);
                if other.is_finite() {
                    let e = (other.to_f64() - v).abs();
                    assert!(
                        err < e || (err == e && got.to_bits() & 1 == 0),
                        "{v}: {got} vs {other}"
                    );
                }
            }
        }
        assert_eq!(f16_from_f64(-0.0).to_bits(), 0x8000);
        assert!(f16_from_f64(f64::NAN).is_nan());
        assert!(f16_from_f64(1e6).is_infinite());
        assert_eq!(f16_from_f64(1e-30).to_bits(), 0);
    }
}
