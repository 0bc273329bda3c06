//! Element types a payload can carry. All are stored little-endian.

use crate::error::{Error, Result};

/// An element type, named as numpy (and `ml_dtypes`) name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `bool`, one byte, 0 or 1.
    Bool,
    /// `int8`.
    I8,
    /// `int16`.
    I16,
    /// `int32`.
    I32,
    /// `int64`.
    I64,
    /// `uint8`.
    U8,
    /// `uint16`.
    U16,
    /// `uint32`.
    U32,
    /// `uint64`.
    U64,
    /// `float16` (IEEE half).
    F16,
    /// `bfloat16`.
    BF16,
    /// `float32`.
    F32,
    /// `float64`.
    F64,
    /// `complex64` (two float32).
    C64,
    /// `complex128` (two float64).
    C128,
    /// `float8_e4m3fn`.
    F8E4M3,
    /// `float8_e5m2`.
    F8E5M2,
}

/// Every dtype, in declaration order ([`DType::index`] is the position here).
pub(crate) const ALL: [DType; 17] = [
    DType::Bool,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U16,
    DType::U32,
    DType::U64,
    DType::F16,
    DType::BF16,
    DType::F32,
    DType::F64,
    DType::C64,
    DType::C128,
    DType::F8E4M3,
    DType::F8E5M2,
];

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 17] = ALL;

    /// This dtype's position in [`DType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in headers (numpy's `dtype.name`).
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
            DType::F8E4M3 => "float8_e4m3fn",
            DType::F8E5M2 => "float8_e5m2",
        }
    }

    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 | DType::F8E4M3 | DType::F8E5M2 => 1,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 | DType::C64 => 8,
            DType::C128 => 16,
        }
    }

    /// True for the real floating-point types (the ones quantizers and deltas accept).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 | DType::F8E4M3 | DType::F8E5M2
        )
    }

    /// Parse a header name; unknown names are a format error.
    pub fn parse(name: &str) -> Result<DType> {
        ALL.iter()
            .copied()
            .find(|d| d.name() == name)
            .ok_or_else(|| Error::format(format!("unknown dtype {name:?}")))
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL {
            assert_eq!(DType::parse(d.name()).unwrap(), d);
        }
        assert!(DType::parse("object").is_err());
        for (i, d) in DType::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        assert!(DType::parse("").is_err());
    }
}
