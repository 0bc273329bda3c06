//! Codec pipelines: how a tensor's bytes are transformed before they are stored.
//!
//! A pipeline is a `+`-separated list of stages, e.g. `"shuffle+zstd:3"` or
//! `"delta+topk:0.01+f16+zstd"`. Stages come in five slots, in this order, each used at
//! most once (one file per slot):
//!
//! 1. base (`base.rs`): `delta` (new - base, float dtypes) or `xor` (bitwise, any dtype, exact);
//! 2. sparse (`sparse.rs`): `topk:<fraction>` or `threshold:<value>` (real float dtypes);
//! 3. quantizer (`quantizer.rs`): `f16`, `bf16` (from float32/float64) or
//!    `int8[:channel][:stochastic=SEED]`; blockwise (`blockwise.rs`): `int8:block=N`,
//!    `int4[:block=N]`, `nf4[:block=N]` (one absmax scale per `N` values);
//! 4. layout (`layout.rs`): `shuffle` (byte planes) or `floatzip` (sign-rotated byte
//!    planes, each entropy-coded with zstd or stored raw: the ZipNN idea);
//! 5. compressor (`compressor.rs`): `zstd[:level]` or `lz4` (not after `floatzip`, which
//!    compresses itself).
//!
//! `"raw"` is the empty pipeline: the stored bytes are the tensor's little-endian bytes.
//! `"auto"` (alone) picks, per tensor, the smallest lossless pipeline on a sample, or raw
//! when compression saves less than 5%; [`Pipeline::resolve`] (in `auto.rs`) turns it
//! into the concrete pipeline that the header stores. The canonical spelling
//! ([`Pipeline`]'s `Display`) is what the header stores; the grammar and the spelling of
//! every stage are one table (`spec.rs`). Every non-raw pipeline stores the framed block
//! format of docs/FORMAT.md ("Codec stages", `framing.rs`): blocks of about 1 MiB are
//! encoded and decoded independently, in parallel, each straight into its slice of the
//! output (`block.rs`).

mod auto;
mod base;
mod block;
mod blockwise;
mod compressor;
mod framing;
mod layout;
mod literals;
mod pipeline;
mod planes;
#[cfg(target_arch = "x86_64")]
mod planes_sse2;
mod quantizer;
mod sparse;
mod spec;

pub use compressor::{LZ4_MAX_RATIO, ZSTD_MAX_RATIO};
pub use pipeline::{Coded, Pipeline};

/// Default zstd level when a spec says just `zstd`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Input bytes per block when encoding (the last block of a tensor may be shorter).
pub const BLOCK_BYTES: usize = 1 << 20;
/// Largest number of scalars per block a decoder accepts (bounds its scratch memory).
pub const MAX_BLOCK_SCALARS: usize = 1 << 21;
/// First bytes of every non-raw stored tensor.
pub const MAGIC: [u8; 4] = *b"TWC1";

#[cfg(test)]
mod tests;
