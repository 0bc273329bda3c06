//! Element types a payload can carry (all stored little-endian), in one table: each
//! one's header name, itemsize and numpy descriptor; `scalar` is the trait of the float
//! types the codecs and the aggregation compute in.

pub(crate) mod scalar;

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

/// How numpy makes the descriptor of a dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Numpy {
    /// One of numpy's own: its little-endian array-interface type string (`"<f4"`).
    Builtin(&'static str),
    /// A type of the `ml_dtypes` package, under the dtype's name (bfloat16, float8).
    MlDtypes,
}

/// One row of the dtype table: everything tensorwire knows about a dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Row {
    /// The dtype.
    pub dtype: DType,
    /// The name used in headers (numpy's `dtype.name`).
    pub name: &'static str,
    /// Bytes per element.
    pub itemsize: usize,
    /// Where numpy's descriptor comes from.
    pub numpy: Numpy,
}

const fn row(dtype: DType, name: &'static str, itemsize: usize, numpy: Numpy) -> Row {
    Row {
        dtype,
        name,
        itemsize,
        numpy,
    }
}

use Numpy::{Builtin, MlDtypes};

/// The dtype table, in declaration order ([`DType::index`] is the position here): the
/// one list of dtypes, which the Python layer reads too (`tensorwire._core.DTYPES`).
pub const TABLE: [Row; 17] = [
    row(DType::Bool, "bool", 1, Builtin("|b1")),
    row(DType::I8, "int8", 1, Builtin("|i1")),
    row(DType::I16, "int16", 2, Builtin("<i2")),
    row(DType::I32, "int32", 4, Builtin("<i4")),
    row(DType::I64, "int64", 8, Builtin("<i8")),
    row(DType::U8, "uint8", 1, Builtin("|u1")),
    row(DType::U16, "uint16", 2, Builtin("<u2")),
    row(DType::U32, "uint32", 4, Builtin("<u4")),
    row(DType::U64, "uint64", 8, Builtin("<u8")),
    row(DType::F16, "float16", 2, Builtin("<f2")),
    row(DType::BF16, "bfloat16", 2, MlDtypes),
    row(DType::F32, "float32", 4, Builtin("<f4")),
    row(DType::F64, "float64", 8, Builtin("<f8")),
    row(DType::C64, "complex64", 8, Builtin("<c8")),
    row(DType::C128, "complex128", 16, Builtin("<c16")),
    row(DType::F8E4M3, "float8_e4m3fn", 1, MlDtypes),
    row(DType::F8E5M2, "float8_e5m2", 1, MlDtypes),
];

/// Every dtype, in declaration order (the table's first column).
pub(crate) const ALL: [DType; TABLE.len()] = {
    let mut all = [DType::Bool; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        all[i] = TABLE[i].dtype;
        i += 1;
    }
    all
};

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; TABLE.len()] = ALL;

    /// This dtype's position in [`DType::ALL`] and [`TABLE`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// This dtype's row of [`TABLE`].
    pub fn row(self) -> &'static Row {
        &TABLE[self.index()]
    }

    /// The name used in headers (numpy's `dtype.name`).
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        self.row().itemsize
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
        TABLE
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.dtype)
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
    fn the_table_matches_numpy_itemsizes() {
        for r in TABLE {
            if let Numpy::Builtin(typestr) = r.numpy {
                let size: usize = typestr[2..].parse().unwrap();
                assert_eq!(size, r.itemsize, "{}", r.name);
                assert!(typestr.starts_with(if r.itemsize == 1 { '|' } else { '<' }));
            }
        }
        let ml: Vec<_> = TABLE
            .iter()
            .filter(|r| r.numpy == Numpy::MlDtypes)
            .collect();
        assert_eq!(ml.len(), 3);
        assert!(ml.iter().all(|r| r.dtype.is_float()));
    }

    #[test]
    fn names_round_trip() {
        for d in ALL {
            assert_eq!(DType::parse(d.name()).unwrap(), d);
        }
        assert!(DType::parse("object").is_err());
        for (i, d) in DType::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
            assert_eq!(d.row().dtype, *d);
        }
        assert!(DType::parse("").is_err());
    }
}
