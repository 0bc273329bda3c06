//! Blockwise quantizers (slot 3): `int8:block=N`, `int4:block=N` and `nf4:block=N`, one
//! absmax scale per run of `N` values (as bitsandbytes and NVFlare ship them). A coded
//! block's values are stored as its float32 scales, then its codes (one byte each for
//! int8, two per byte for int4 and nf4, the even value in the low nibble); see
//! docs/FORMAT.md, "Blockwise quantizers".

use crate::dtype::scalar::{with_float, Float};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// What a blockwise quantizer stores per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// Symmetric int8, `-127..=127` times the block's scale.
    Int8,
    /// Symmetric int4, `-7..=7` times the block's scale, two per byte.
    Int4,
    /// An index into the NormalFloat4 table ([`NF4`]) times the block's scale, two per byte.
    Nf4,
}

/// A blockwise quantizer: its code and the values per scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blockwise {
    /// What each value is stored as.
    pub code: Code,
    /// Values per scale: a power of two in [`MIN_BLOCK`]`..=`[`MAX_BLOCK`].
    pub block: u32,
}

/// Fewest values per scale.
pub(super) const MIN_BLOCK: u32 = 16;
/// Most values per scale.
pub(super) const MAX_BLOCK: u32 = 4096;
/// Values per scale when `int4` or `nf4` name none.
pub(super) const DEFAULT_BLOCK: u32 = 64;

/// The NormalFloat4 table of QLoRA (Dettmers et al. 2023, bitsandbytes `nf4`): code `k`
/// stands for `NF4[k] × scale`. Ascending; code 7 is exactly 0. The digits are the
/// published float64 ones; each rounds to the float32 the table holds.
#[allow(clippy::excessive_precision)]
pub(super) const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

impl Code {
    /// The stage's name in a spec.
    pub(super) fn name(self) -> &'static str {
        match self {
            Code::Int8 => "int8",
            Code::Int4 => "int4",
            Code::Nf4 => "nf4",
        }
    }

    /// The largest code magnitude: a block's scale is the smallest float32 with
    /// `levels · scale ≥ max|x|`.
    fn levels(self) -> f64 {
        match self {
            Code::Int8 => 127.0,
            Code::Int4 => 7.0,
            Code::Nf4 => 1.0,
        }
    }

    /// Bytes of codes for `count` values.
    fn code_bytes(self, count: usize) -> usize {
        match self {
            Code::Int8 => count,
            Code::Int4 | Code::Nf4 => count.div_ceil(2),
        }
    }
}

/// The smallest float32 `s` with `levels · s ≥ max` (0 when `max` is 0); `what` names
/// the stage in the errors.
pub(super) fn absmax_scale(max: f64, levels: f64, what: &str) -> Result<f32> {
    if !max.is_finite() {
        return Err(Error::codec(format!(
            "{what} needs finite values (and a largest magnitude within float32's range)"
        )));
    }
    if max == 0.0 {
        return Ok(0.0);
    }
    let mut s = (max / levels) as f32;
    while (s as f64) * levels < max {
        s = f32::from_bits(s.to_bits() + 1);
    }
    if !s.is_finite() {
        return Err(Error::codec(format!(
            "{what} scale for largest magnitude {max} overflows float32"
        )));
    }
    Ok(s)
}

pub(super) const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// `r` (|r| ≤ 2^51) rounded to nearest even, without a libm call.
#[inline]
fn round_even(r: f64) -> f64 {
    (r + ROUND_MAGIC) - ROUND_MAGIC
}

/// The midpoints between neighbouring [`NF4`] entries, in float64: a value above the
/// `k`th and not above the next is nearest code `k + 1`.
const NF4_MID: [f64; 15] = {
    let mut mid = [0.0; 15];
    let mut k = 0;
    while k < 15 {
        mid[k] = (NF4[k] as f64 + NF4[k + 1] as f64) / 2.0;
        k += 1;
    }
    mid
};

/// The NF4 code nearest `r` (|r| ≤ 1); on a tie, the lower one: the number of midpoints
/// below `r`, counted without a branch (the midpoints ascend).
#[inline]
fn nf4_code(r: f64) -> u8 {
    NF4_MID.iter().map(|&m| u8::from(r > m)).sum()
}

impl Blockwise {
    /// Parse the options of `int8:block=N`, `int4[:block=N]`, `nf4[:block=N]`.
    pub(super) fn parse(code: Code, args: &[&str]) -> Result<Self> {
        let name = code.name();
        let block = match args {
            [] if code != Code::Int8 => DEFAULT_BLOCK,
            [a] => a
                .strip_prefix("block=")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| n.is_power_of_two() && (MIN_BLOCK..=MAX_BLOCK).contains(n))
                .ok_or_else(|| {
                    Error::codec(format!(
                        "{name}:block=N needs N a power of two in {MIN_BLOCK}..={MAX_BLOCK} \
                         (values per scale), got {a:?}"
                    ))
                })?,
            _ => {
                return Err(Error::codec(format!(
                    "{name} takes one option, block=N (values per scale, e.g. \
                     \"{name}:block={DEFAULT_BLOCK}\")"
                )))
            }
        };
        Ok(Blockwise { code, block })
    }

    /// The canonical spelling of the options (with the leading `:`).
    pub(super) fn spell(self) -> String {
        format!(":block={}", self.block)
    }

    /// Stored bytes of `count` values: their scales, then their codes.
    pub(super) fn value_bytes(self, count: usize) -> usize {
        count.div_ceil(self.block as usize) * 4 + self.code.code_bytes(count)
    }

    /// Quantize `values` (scalars of dtype `scalar`) into `out`, exactly
    /// [`Self::value_bytes`] of them; `element(j)` is value `j`'s tensor-wide index
    /// (for the error naming a non-finite one).
    pub(super) fn encode(
        self,
        scalar: DType,
        values: &[u8],
        out: &mut [u8],
        element: impl Fn(usize) -> usize,
    ) -> Result<()> {
        with_float!(scalar, T => self.encode_as::<T>(values, out, element))
    }

    fn encode_as<T: Float>(
        self,
        values: &[u8],
        out: &mut [u8],
        element: impl Fn(usize) -> usize,
    ) -> Result<()> {
        let (code, qb) = (self.code, self.block as usize);
        let count = values.len() / T::SIZE;
        let (scales, codes) = out.split_at_mut(count.div_ceil(qb) * 4);
        let mut xs = Vec::with_capacity(qb);
        for (b, (chunk, scale_out)) in values
            .chunks(qb * T::SIZE)
            .zip(scales.chunks_exact_mut(4))
            .enumerate()
        {
            xs.clear();
            let mut max = 0f64;
            for (j, c) in chunk.chunks_exact(T::SIZE).enumerate() {
                let x = T::read(c).to_f64();
                if !x.is_finite() {
                    return Err(Error::codec(format!(
                        "{}:block={qb} needs finite values: element {} is {x}",
                        code.name(),
                        element(b * qb + j)
                    )));
                }
                max = max.max(x.abs());
                xs.push(x);
            }
            let scale = absmax_scale(max, code.levels(), code.name())?;
            scale_out.copy_from_slice(&scale.to_le_bytes());
            let inv = if scale == 0.0 {
                0.0
            } else {
                1.0 / scale as f64
            };
            let first = b * qb;
            match code {
                Code::Int8 => {
                    for (o, &x) in codes[first..first + xs.len()].iter_mut().zip(&xs) {
                        *o = round_even((x * inv).clamp(-127.0, 127.0)) as i8 as u8;
                    }
                }
                Code::Int4 | Code::Nf4 => {
                    // `qb` is even, so a run of values starts on a byte boundary.
                    let bytes = &mut codes[first / 2..(first + xs.len()).div_ceil(2)];
                    for (o, pair) in bytes.iter_mut().zip(xs.chunks(2)) {
                        let nibble = |x: f64| match code {
                            Code::Nf4 if scale == 0.0 => 7,
                            Code::Nf4 => nf4_code((x * inv).clamp(-1.0, 1.0)),
                            _ => (round_even((x * inv).clamp(-7.0, 7.0)) as i8 as u8) & 0xF,
                        };
                        let hi = pair.get(1).map_or(0, |&x| nibble(x));
                        *o = nibble(pair[0]) | (hi << 4);
                    }
                }
            }
        }
        Ok(())
    }

    /// Undo [`Self::encode`]: `src` (exactly the stored bytes of `out`'s scalars) into
    /// `out`. Stored bytes are hostile: a wrong length, a negative or non-finite scale,
    /// or a nonzero padding nibble is an integrity error.
    pub(super) fn decode(self, scalar: DType, src: &[u8], out: &mut [u8]) -> Result<()> {
        with_float!(scalar, T => self.decode_as::<T>(src, out))
    }

    fn decode_as<T: Float>(self, src: &[u8], out: &mut [u8]) -> Result<()> {
        let (code, qb) = (self.code, self.block as usize);
        let count = out.len() / T::SIZE;
        let want = self.value_bytes(count);
        if src.len() != want {
            return Err(Error::integrity(format!(
                "{}:block={qb} values hold {} bytes, {count} values need {want}",
                code.name(),
                src.len()
            )));
        }
        let (scales, codes) = src.split_at(count.div_ceil(qb) * 4);
        if code != Code::Int8 && count % 2 == 1 && codes[codes.len() - 1] >> 4 != 0 {
            return Err(Error::integrity(format!(
                "{}:block={qb}: the padding nibble after the last value is not 0",
                code.name()
            )));
        }
        for (b, (s, chunk)) in scales
            .chunks_exact(4)
            .zip(out.chunks_mut(qb * T::SIZE))
            .enumerate()
        {
            let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            if !(scale.is_finite() && scale >= 0.0) {
                return Err(Error::integrity(format!(
                    "{}:block={qb}: scale {b} of the block is {scale} (must be finite and >= 0)",
                    code.name()
                )));
            }
            let scale = scale as f64;
            let first = b * qb;
            let value = |j: usize| -> f64 {
                let i = first + j;
                match code {
                    Code::Int8 => codes[i] as i8 as f64,
                    Code::Int4 => ((((codes[i / 2] >> (4 * (i % 2))) << 4) as i8) >> 4) as f64,
                    Code::Nf4 => NF4[((codes[i / 2] >> (4 * (i % 2))) & 0xF) as usize] as f64,
                }
            };
            for (j, o) in chunk.chunks_exact_mut(T::SIZE).enumerate() {
                T::from_f64(value(j) * scale).write(o);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "blockwise_tests.rs"]
mod tests;
