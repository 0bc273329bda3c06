//! Codec pipelines: how a tensor's bytes are transformed before they are stored.
//!
//! A pipeline is a `+`-separated list of stages, applied left to right on encode and
//! right to left on decode, e.g. `"shuffle+zstd:3"`. `"raw"` is the empty pipeline:
//! the stored bytes are the tensor's little-endian bytes. The canonical spelling
//! (what [`Pipeline`]'s `Display` prints) is what the header stores.

use std::fmt;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Default zstd level when a spec says just `zstd`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// One stage of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Byte shuffle: byte k of every element, then byte k+1, ... (improves compression).
    Shuffle,
    /// zstd at a level (1..=22, or negative for the fast levels).
    Zstd(i32),
    /// LZ4 block compression.
    Lz4,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Shuffle => f.write_str("shuffle"),
            Stage::Zstd(level) => write!(f, "zstd:{level}"),
            Stage::Lz4 => f.write_str("lz4"),
        }
    }
}

impl Stage {
    fn parse(token: &str) -> Result<Stage> {
        let (name, arg) = match token.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (token, None),
        };
        let no_arg = |stage: Stage| match arg {
            None => Ok(stage),
            Some(a) => Err(Error::codec(format!(
                "codec stage {name:?} takes no argument (got {a:?})"
            ))),
        };
        match name {
            "shuffle" => no_arg(Stage::Shuffle),
            "lz4" => no_arg(Stage::Lz4),
            "zstd" => {
                let level = match arg {
                    None => DEFAULT_ZSTD_LEVEL,
                    Some(a) => a
                        .parse::<i32>()
                        .ok()
                        .filter(|l| (-7..=22).contains(l) && *l != 0)
                        .ok_or_else(|| {
                            Error::codec(format!(
                                "zstd level must be an integer in -7..=22 other than 0, got {a:?}"
                            ))
                        })?,
                };
                Ok(Stage::Zstd(level))
            }
            _ => Err(Error::codec(format!("unknown codec stage {name:?}"))),
        }
    }
}

/// A parsed codec pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stages.is_empty() {
            return f.write_str("raw");
        }
        for (i, s) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl Pipeline {
    /// Parse a spec such as `"raw"`, `"zstd"`, `"shuffle+zstd:3"`.
    pub fn parse(spec: &str) -> Result<Pipeline> {
        let spec = spec.trim();
        if spec == "raw" {
            return Ok(Pipeline::default());
        }
        if spec.is_empty() {
            return Err(Error::codec("empty codec spec (use \"raw\" for none)"));
        }
        let stages = spec
            .split('+')
            .map(|t| Stage::parse(t.trim()))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::codec(format!("invalid codec spec {spec:?}: {e}")))?;
        Ok(Pipeline { stages })
    }

    /// True when the stored bytes are the tensor bytes (zero-copy decode possible).
    pub fn is_raw(&self) -> bool {
        self.stages.is_empty()
    }

    /// True when decoding needs the base tensor (delta stages).
    pub fn needs_base(&self) -> bool {
        false
    }

    /// Check that this pipeline can encode a tensor of `dtype`.
    pub fn check(&self, _dtype: DType) -> Result<()> {
        Ok(())
    }

    /// Encode a tensor's little-endian bytes.
    pub fn encode(
        &self,
        dtype: DType,
        _shape: &[u64],
        data: &[u8],
        _base: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let mut buf = data.to_vec();
        for stage in &self.stages {
            buf = match *stage {
                Stage::Shuffle => shuffle(&buf, dtype.itemsize()),
                Stage::Zstd(level) => zstd::bulk::compress(&buf, level)
                    .map_err(|e| Error::codec(format!("zstd failed: {e}")))?,
                Stage::Lz4 => lz4_flex::block::compress(&buf),
            };
        }
        Ok(buf)
    }

    /// Decode stored bytes into `out`, which has exactly the decoded size.
    pub fn decode(
        &self,
        dtype: DType,
        _shape: &[u64],
        stored: &[u8],
        _base: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<()> {
        let mut buf = stored.to_vec();
        for stage in self.stages.iter().rev() {
            buf = match *stage {
                Stage::Shuffle => unshuffle(&buf, dtype.itemsize()),
                Stage::Zstd(_) => {
                    let mut dst = vec![0u8; out.len()];
                    let n = zstd::bulk::decompress_to_buffer(&buf, &mut dst)
                        .map_err(|e| Error::integrity(format!("zstd data is corrupt: {e}")))?;
                    dst.truncate(n);
                    dst
                }
                Stage::Lz4 => {
                    let mut dst = vec![0u8; out.len()];
                    let n = lz4_flex::block::decompress_into(&buf, &mut dst)
                        .map_err(|e| Error::integrity(format!("lz4 data is corrupt: {e}")))?;
                    dst.truncate(n);
                    dst
                }
            };
        }
        if buf.len() != out.len() {
            return Err(Error::integrity(format!(
                "decoded {} bytes, expected {}",
                buf.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&buf);
        Ok(())
    }
}

fn shuffle(data: &[u8], itemsize: usize) -> Vec<u8> {
    let n = data.len() / itemsize;
    let mut out = vec![0u8; data.len()];
    for (i, elem) in data.chunks_exact(itemsize).enumerate() {
        for (k, &b) in elem.iter().enumerate() {
            out[k * n + i] = b;
        }
    }
    out
}

fn unshuffle(data: &[u8], itemsize: usize) -> Vec<u8> {
    let n = data.len() / itemsize;
    let mut out = vec![0u8; data.len()];
    for (i, elem) in out.chunks_exact_mut(itemsize).enumerate() {
        for (k, b) in elem.iter_mut().enumerate() {
            *b = data[k * n + i];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!(Pipeline::parse("raw").unwrap().to_string(), "raw");
        assert_eq!(Pipeline::parse("zstd").unwrap().to_string(), "zstd:3");
        assert_eq!(
            Pipeline::parse("shuffle+zstd:9").unwrap().to_string(),
            "shuffle+zstd:9"
        );
        for bad in ["", "zstd:99", "gzip", "lz4:3", "zstd:x", "+"] {
            assert!(Pipeline::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lossless_round_trip() {
        let data: Vec<u8> = (0..4000u32)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        for spec in ["zstd", "lz4", "shuffle+zstd:1", "shuffle+lz4"] {
            let p = Pipeline::parse(spec).unwrap();
            let enc = p.encode(DType::F32, &[4000], &data, None).unwrap();
            let mut out = vec![0u8; data.len()];
            p.decode(DType::F32, &[4000], &enc, None, &mut out).unwrap();
            assert_eq!(out, data, "{spec}");
        }
    }
}
