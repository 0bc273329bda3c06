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
        f16::from_f64(self)
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
        f16::from_f64(v)
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
