//! Helpers shared by the fuzz targets (`fuzz_targets/`) and the corpus generator
//! (`examples/make_corpus.rs`).
//!
//! Two ideas run through all of it:
//!
//! * **Caps.** The targets never allocate more than [`MAX_DECODE`] bytes for one tensor
//!   (and [`MAX_TOTAL`] for one input) themselves. A declared shape larger than that is
//!   skipped by the target, not decoded: whatever still allocates too much, overflows or
//!   panics after that is the core's doing, and libFuzzer's `-malloc_limit_mb` /
//!   `-rss_limit_mb` report it.
//! * **Resealing.** An attacker can recompute BLAKE3 and CRC-32; libFuzzer cannot guess
//!   them. So a target also tries each input after recomputing the checksums it covers
//!   ([`reseal_header`], [`reseal_tensors`], [`reseal_chunk`]), which lets mutations
//!   reach the JSON header, the codecs and the reassembly logic behind the checks.

pub mod targets;

use tensorwire::chunk::{ChunkPlan, CHUNK_HEADER_LEN};
use tensorwire::fedavg::{
    self, Accumulator, Contribution, Kind, Method, Options, Precision, Round, Source, TensorSpec,
};
use tensorwire::format::{self, EncodeOptions, Layout, TensorInput};
use tensorwire::DType;
use tensorwire::TensorView;

/// Largest decoded tensor a target allocates for (64 MiB).
pub const MAX_DECODE: usize = 64 << 20;
/// Largest sum of decoded sizes one input may make a target allocate (outputs, bases).
pub const MAX_TOTAL: usize = 256 << 20;

/// Every codec stage, alone and in the combinations servers meet. The first bytes of a
/// `codec_decode` input pick one of these (see [`CodecInput`]).
pub const SPECS: &[&str] = &[
    "raw",
    "zstd:3",
    "zstd:-7",
    "lz4",
    "shuffle",
    "shuffle+zstd:3",
    "shuffle+lz4",
    "floatzip",
    "f16",
    "bf16",
    "f16+shuffle+lz4",
    "bf16+floatzip",
    "f16+floatzip",
    "int8",
    "int8:channel",
    "int8:stochastic=7",
    "int8:channel:stochastic=1",
    "int8:channel+zstd:3",
    "int8+shuffle+lz4",
    "topk:0.1",
    "threshold:0.5",
    "topk:0.1+zstd:3",
    "threshold:0.0+lz4",
    "topk:0.5+floatzip",
    "threshold:0.0+int8:channel+lz4",
    "topk:0.01+f16+floatzip",
    "topk:0.2+bf16+shuffle+zstd:3",
    "delta",
    "delta+zstd:3",
    "delta+floatzip",
    "delta+shuffle+lz4",
    "xor",
    "xor+floatzip",
    "xor+shuffle+zstd:3",
    "xor+lz4",
    "delta+topk:0.01+f16+zstd:3",
    "delta+threshold:0.5+int8:channel+shuffle+lz4",
    "delta+int8+zstd:3",
    "delta+bf16+lz4",
    "delta+topk:0.3+int8:channel:stochastic=3+floatzip",
    // Never valid in a payload: the decoder must refuse, not panic.
    "auto",
    // The blockwise quantizers (after `auto`, so that earlier seeds keep their index).
    "int8:block=16",
    "int4:block=64",
    "nf4:block=64+zstd:3",
    "topk:0.1+int4:block=16+lz4",
    "delta+nf4:block=4096",
];

/// Byte that makes a `codec_decode` input carry its own spec string (NUL-terminated)
/// instead of an index into [`SPECS`].
pub const SPEC_INLINE: u8 = 0xFF;

/// The dtypes a pipeline accepts when encoding (what `Pipeline::check` allows).
pub fn dtypes_for(spec: &str) -> Vec<DType> {
    let p = tensorwire::codec::Pipeline::parse(spec).expect("spec in SPECS parses");
    DType::ALL
        .iter()
        .copied()
        .filter(|&d| p.check(d).is_ok())
        .collect()
}

/// Decoded size of `shape` of `dtype`, when it is within [`MAX_DECODE`].
pub fn capped_nbytes(dtype: DType, shape: &[u64]) -> Option<usize> {
    let mut n: u64 = dtype.itemsize() as u64;
    for &d in shape {
        n = n.checked_mul(d)?;
    }
    (n <= MAX_DECODE as u64).then_some(n as usize)
}

// ---------------------------------------------------------------------------------
// Resealing: what a forger does after tampering.

/// Recompute the preamble's `data_len` (from the buffer's length) and `header_hash`
/// when the preamble's `header_len` fits the buffer. Returns whether it did.
pub fn reseal_header(buf: &mut [u8]) -> bool {
    if buf.len() < 64 {
        return false;
    }
    let header_len = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    let Some(data_start) = (header_len as usize).checked_add(64) else {
        return false;
    };
    if header_len > (buf.len() - 64) as u64 {
        return false;
    }
    let data_len = (buf.len() - data_start) as u64;
    buf[24..32].copy_from_slice(&data_len.to_le_bytes());
    let mut h = blake3::Hasher::new();
    h.update(&buf[..32]);
    h.update(&buf[64..data_start]);
    let hash = *h.finalize().as_bytes();
    buf[32..64].copy_from_slice(&hash);
    true
}

/// `(name, dtype name, shape, codec, stored bytes)` of one tensor for [`assemble`].
pub type StoredTensor<'a> = (&'a str, &'a str, &'a [u64], &'a str, &'a [u8]);

/// A payload put together by hand from already stored tensors
/// `(name, dtype name, shape, codec, stored bytes)`, laid out as FORMAT.md says, with
/// correct checksums: for reproducers that no encoder would write (a declared shape
/// far larger than the stored bytes, a codec applied to a dtype it does not fit).
pub fn assemble(tensors: &[StoredTensor<'_>]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut entries = Vec::new();
    for (name, dtype, shape, codec, stored) in tensors {
        while data.len() % 64 != 0 {
            data.push(0);
        }
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        entries.push(format!(
            r#"{{"name":"{name}","dtype":"{dtype}","shape":[{}],"codec":"{codec}","offset":{},"length":{},"hash":"{}"}}"#,
            shape.join(","),
            data.len(),
            stored.len(),
            hex(blake3::hash(stored).as_bytes())
        ));
        data.extend_from_slice(stored);
    }
    let mut header = format!(r#"{{"tensors":[{}]}}"#, entries.join(",")).into_bytes();
    while header.len() % 64 != 0 {
        header.push(b' ');
    }
    let mut out = vec![0u8; 64];
    out[..8].copy_from_slice(b"\x89TWR\r\n\x1a\n");
    out[8..10].copy_from_slice(&1u16.to_le_bytes());
    out[16..24].copy_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    reseal_header(&mut out);
    out
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Make every tensor checksum in the header match the stored bytes (by replacing the
/// hex digest in the header text, which keeps its length), then reseal the header.
/// Returns the new payload and its layout, when it parses.
pub fn reseal_tensors(buf: &[u8]) -> Option<(Vec<u8>, Layout)> {
    let mut out = buf.to_vec();
    reseal_header(&mut out);
    let layout = format::parse(&out).ok()?;
    let header = layout.data_start;
    let mut changed = false;
    for e in &layout.entries {
        let actual = *blake3::hash(&out[e.start..e.start + e.length]).as_bytes();
        if actual == e.hash {
            continue;
        }
        let (old, new) = (hex(&e.hash), hex(&actual));
        let text = &mut out[64..header];
        if let Some(at) = find(text, old.as_bytes()) {
            text[at..at + 64].copy_from_slice(new.as_bytes());
            changed = true;
        }
    }
    if changed {
        reseal_header(&mut out);
    }
    let layout = format::parse(&out).ok()?;
    Some((out, layout))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Recompute a chunk's CRC-32 (header bytes 0..84, then the body).
pub fn reseal_chunk(chunk: &mut [u8]) {
    if chunk.len() < CHUNK_HEADER_LEN {
        return;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&chunk[..84]);
    h.update(&chunk[CHUNK_HEADER_LEN..]);
    let crc = h.finalize().to_le_bytes();
    chunk[84..88].copy_from_slice(&crc);
}

// ---------------------------------------------------------------------------------
// Decoding a whole payload under the caps.

/// Verify `buf` and decode every tensor whose decoded size is within the caps (delta
/// codecs against a zero base of the right length). Errors are expected; the point is
/// that nothing panics, aborts or allocates without bound.
pub fn exercise_layout(buf: &[u8], layout: &Layout) {
    let _ = layout.verify(buf, None);
    let all: Vec<usize> = (0..layout.entries.len()).collect();
    let _ = layout.verify(buf, Some(&all));
    let mut budget = MAX_TOTAL;
    let mut zeros: Vec<u8> = Vec::new();
    for (i, e) in layout.entries.iter().enumerate() {
        let _ = layout.index(&e.name);
        let _ = layout.stored(buf, i);
        let need = if e.pipeline.needs_base() {
            2 * e.nbytes
        } else {
            e.nbytes
        };
        if e.nbytes > MAX_DECODE || need > budget {
            continue;
        }
        budget -= need;
        let mut out = vec![0u8; e.nbytes];
        let base = if e.pipeline.needs_base() {
            zeros.clear();
            zeros.resize(e.nbytes, 0);
            Some(TensorView {
                name: &e.name,
                dtype: e.dtype,
                shape: &e.shape,
                data: &zeros[..],
            })
        } else {
            None
        };
        // verify=false: as if the attacker had recomputed the checksum.
        let _ = layout.decode_into(buf, i, &mut out, base, false);
        let _ = layout.decode_into(buf, i, &mut out, base, true);
        if base.is_some() {
            // The documented refusal: a delta without its base.
            let _ = layout.decode_into(buf, i, &mut out, None, false);
        }
    }
}

// ---------------------------------------------------------------------------------
// codec_decode inputs.

/// How a `codec_decode` input is laid out:
///
/// | byte | meaning |
/// |---|---|
/// | 0 | spec: index into [`SPECS`] (mod its length), or [`SPEC_INLINE`]: a NUL-terminated spec follows |
/// | 1 | dtype: index into `DType::ALL` (mod 17) |
/// | 2 | bits 0-1: rank (0..=3); bits 2-3: base (0 zeros, 1 a pattern, 2 none, 3 one byte short) |
/// | 3.. | rank × u16 LE dimensions |
/// | then | the stored bytes |
///
/// Shapes whose decoded size exceeds [`CODEC_MAX_BYTES`] are skipped.
#[derive(Debug, Clone)]
pub struct CodecInput<'a> {
    /// The pipeline spec.
    pub spec: String,
    /// The tensor's dtype.
    pub dtype: DType,
    /// The tensor's shape.
    pub shape: Vec<u64>,
    /// Which base a delta pipeline gets (0 zeros, 1 pattern, 2 none, 3 wrong length).
    pub base_mode: u8,
    /// The stored bytes.
    pub stored: &'a [u8],
}

/// Largest decoded tensor of a `codec_decode` input (4 MiB).
pub const CODEC_MAX_BYTES: usize = 4 << 20;

impl<'a> CodecInput<'a> {
    /// Read an input; `None` when it is too short or its shape too large.
    pub fn parse(data: &'a [u8]) -> Option<CodecInput<'a>> {
        let (&sel, mut rest) = data.split_first()?;
        let spec = if sel == SPEC_INLINE {
            let end = rest.iter().position(|&b| b == 0)?;
            let s = std::str::from_utf8(&rest[..end]).ok()?.to_owned();
            rest = &rest[end + 1..];
            s
        } else {
            SPECS[sel as usize % SPECS.len()].to_owned()
        };
        let (&d, rest) = rest.split_first()?;
        let dtype = DType::ALL[d as usize % DType::ALL.len()];
        let (&flags, mut rest) = rest.split_first()?;
        let rank = (flags & 3) as usize;
        let base_mode = (flags >> 2) & 3;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            if rest.len() < 2 {
                return None;
            }
            shape.push(u16::from_le_bytes([rest[0], rest[1]]) as u64);
            rest = &rest[2..];
        }
        match capped_nbytes(dtype, &shape) {
            Some(n) if n <= CODEC_MAX_BYTES => {}
            _ => return None,
        }
        Some(CodecInput {
            spec,
            dtype,
            shape,
            base_mode,
            stored: rest,
        })
    }

    /// The bytes of an input: the inverse of [`Self::parse`] (spec index `spec_index`,
    /// or the spec inline when `None`).
    pub fn to_bytes(&self, spec_index: Option<usize>) -> Vec<u8> {
        let mut v = Vec::new();
        match spec_index {
            Some(i) => v.push(i as u8),
            None => {
                v.push(SPEC_INLINE);
                v.extend_from_slice(self.spec.as_bytes());
                v.push(0);
            }
        }
        v.push(self.dtype.index() as u8);
        v.push(self.shape.len() as u8 | self.base_mode << 2);
        for &d in &self.shape {
            v.extend_from_slice(&(d as u16).to_le_bytes());
        }
        v.extend_from_slice(self.stored);
        v
    }
}

/// Base bytes for a delta pipeline, as [`CodecInput::base_mode`] says.
pub fn codec_base(mode: u8, nbytes: usize) -> Option<Vec<u8>> {
    match mode {
        0 => Some(vec![0; nbytes]),
        1 => Some((0..nbytes).map(|i| (i * 37 + 11) as u8).collect()),
        2 => None,
        _ => Some(vec![0; nbytes.saturating_sub(1)]),
    }
}

// ---------------------------------------------------------------------------------
// Sample tensors and payloads (the seed corpora, and the valid chunks that the
// reassemble target mixes in).

/// Deterministic sample values for a tensor of `dtype` with `n` elements: smooth
/// floats with a few zeros (so sparse stages keep some and drop some), small integers.
pub fn sample_bytes(dtype: DType, n: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * dtype.itemsize());
    let scalars = match dtype {
        DType::C64 | DType::C128 => 2 * n,
        _ => n,
    };
    for i in 0..scalars {
        let x = (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f64 / 1000.0 - 1.0;
        let x = if i % 5 == 3 { 0.0 } else { x };
        match dtype {
            DType::Bool => out.push((i % 3 == 0) as u8),
            DType::I8 | DType::U8 | DType::F8E4M3 | DType::F8E5M2 => {
                out.push(((x * 100.0) as i8) as u8)
            }
            DType::I16 | DType::U16 => out.extend_from_slice(&((x * 1000.0) as i16).to_le_bytes()),
            DType::I32 | DType::U32 => out.extend_from_slice(&((x * 1e6) as i32).to_le_bytes()),
            DType::I64 | DType::U64 => out.extend_from_slice(&((x * 1e9) as i64).to_le_bytes()),
            DType::F16 => out.extend_from_slice(&f16_bits(x as f32).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&((x as f32).to_bits() >> 16).to_le_bytes()[..2]),
            DType::F32 | DType::C64 => out.extend_from_slice(&(x as f32).to_le_bytes()),
            DType::F64 | DType::C128 => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    out
}

/// float32 → float16 bits, for values in [-1, 1] (truncating; good enough for samples).
fn f16_bits(x: f32) -> u16 {
    if x == 0.0 {
        return 0;
    }
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

/// One tensor of a sample payload.
#[derive(Debug, Clone)]
pub struct SampleTensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<u64>,
    /// Codec spec.
    pub codec: String,
    /// Little-endian data.
    pub data: Vec<u8>,
    /// Base data for delta codecs.
    pub base: Option<Vec<u8>>,
}

impl SampleTensor {
    /// A sample tensor with generated data (and a generated base when `codec` needs one).
    pub fn new(name: &str, dtype: DType, shape: &[u64], codec: &str, seed: u32) -> Self {
        let n = shape.iter().product::<u64>() as usize;
        let needs_base = tensorwire::codec::Pipeline::parse(codec)
            .map(|p| p.needs_base())
            .unwrap_or(false);
        SampleTensor {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            codec: codec.to_owned(),
            data: sample_bytes(dtype, n, seed),
            base: needs_base.then(|| sample_bytes(dtype, n, seed ^ 0x5a5a)),
        }
    }
}

/// Encode `tensors` into a payload (a delta payload, with the header's `base`, when any
/// tensor has a base).
pub fn encode(tensors: &[SampleTensor], metadata: Option<&str>) -> tensorwire::Result<Vec<u8>> {
    let inputs: Vec<TensorInput<'_>> = tensors
        .iter()
        .map(|t| TensorInput {
            tensor: TensorView {
                name: &t.name,
                dtype: t.dtype,
                shape: &t.shape,
                data: &t.data,
            },
            codec: &t.codec,
            base: t.base.as_deref(),
        })
        .collect();
    let base_id = tensors.iter().any(|t| t.base.is_some()).then(|| {
        let zeros: Vec<Vec<u8>> = tensors.iter().map(|t| vec![0; t.data.len()]).collect();
        let items: Vec<TensorView<'_>> = tensors
            .iter()
            .zip(&zeros)
            .map(|(t, z)| TensorView {
                name: &t.name,
                dtype: t.dtype,
                shape: &t.shape,
                data: t.base.as_deref().unwrap_or(z),
            })
            .collect();
        hex(&format::tensors_id(&items))
    });
    let opts = EncodeOptions {
        structure: None,
        metadata,
        base_id: base_id.as_deref(),
        auth: None,
        encrypt: Default::default(),
    };
    let prepared = format::prepare(&inputs, &opts)?;
    let mut out = vec![0u8; prepared.total_len()];
    prepared.write_into(&mut out)?;
    Ok(out)
}

/// Small valid payloads, one per spec of [`SPECS`] that encodes (each with a few
/// tensors: the dtypes the spec accepts, one of them 2-d for `int8:channel`), plus a few
/// special ones (empty, structure, metadata, zero-size tensors).
pub fn sample_payloads() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (k, spec) in SPECS.iter().enumerate() {
        if *spec == "auto" {
            continue;
        }
        let dtypes = dtypes_for(spec);
        // At most three dtypes per payload, preferring float32/float64/float16.
        let mut picked: Vec<DType> = [DType::F32, DType::F64, DType::F16, DType::BF16]
            .into_iter()
            .filter(|d| dtypes.contains(d))
            .take(2)
            .collect();
        if let Some(&other) = dtypes.iter().find(|d| !picked.contains(d)) {
            picked.push(other);
        }
        let tensors: Vec<SampleTensor> = picked
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let shape: &[u64] = match i {
                    0 => &[4, 10],
                    1 => &[17],
                    _ => &[3, 2, 2],
                };
                SampleTensor::new(&format!("t{i}"), d, shape, spec, (k * 7 + i) as u32)
            })
            .collect();
        let name = spec.replace([':', '+', '='], "_");
        out.push((name, encode(&tensors, None).expect("sample encodes")));
    }
    out.push(("empty".into(), encode(&[], None).unwrap()));
    let mixed = [
        SampleTensor::new("a/w", DType::F32, &[2, 3], "raw", 1),
        SampleTensor::new("a/b", DType::I64, &[3], "zstd:3", 2),
        SampleTensor::new("z", DType::F32, &[0, 4], "int8:channel", 3),
        SampleTensor::new("s", DType::F64, &[], "shuffle+zstd:3", 4),
        SampleTensor::new("c", DType::C64, &[3], "xor+floatzip", 5),
    ];
    out.push((
        "mixed_metadata".into(),
        encode(
            &mixed,
            Some(r#"{"tensorwire.update":{"kind":"model","round":3},"k":[1,2]}"#),
        )
        .unwrap(),
    ));
    // A payload with a structure tree.
    let inputs: Vec<TensorInput<'_>> = mixed[..2]
        .iter()
        .map(|t| TensorInput {
            tensor: TensorView {
                name: &t.name,
                dtype: t.dtype,
                shape: &t.shape,
                data: &t.data,
            },
            codec: &t.codec,
            base: None,
        })
        .collect();
    let opts = EncodeOptions {
        structure: Some(r#"{"dict":[["a",{"list":[0,{"tuple":[1]}]}]]}"#),
        metadata: None,
        base_id: None,
        auth: None,
        encrypt: Default::default(),
    };
    let prepared = format::prepare(&inputs, &opts).unwrap();
    let mut blob = vec![0u8; prepared.total_len()];
    prepared.write_into(&mut blob).unwrap();
    out.push(("structure".into(), blob));
    out
}

// ---------------------------------------------------------------------------------
// aggregate inputs.

/// Flags of an `aggregate` input (its first byte); the rest is a payload.
#[derive(Debug, Clone, Copy)]
pub struct AggFlags(pub u8);

impl AggFlags {
    /// Verify checksums (the server's setting); mutated inputs then mostly fail early,
    /// so the target also reseals them.
    pub fn verify(self) -> bool {
        self.0 & 1 != 0
    }
    /// Clip norms to 1.0.
    pub fn clip(self) -> bool {
        self.0 & 2 != 0
    }
    /// Accumulate in float64.
    pub fn float64(self) -> bool {
        self.0 & 4 != 0
    }
    /// Treat the update as a difference (against the round's base, or a fixed id).
    pub fn difference(self) -> bool {
        self.0 & 8 != 0
    }
    /// Give the round a base (zeros) even when the payload is not delta-encoded.
    pub fn with_base(self) -> bool {
        self.0 & 16 != 0
    }
    /// Weights of the two updates of the batch aggregation: 0, 1, 2.5 or 1e300.
    pub fn weights(self) -> (f64, f64) {
        const W: [f64; 4] = [0.0, 1.0, 2.5, 1e300];
        (
            W[(self.0 >> 5 & 3) as usize],
            W[(self.0 >> 7) as usize * 2 + 1],
        )
    }
}

/// Largest total decoded size of the round an `aggregate` input builds (16 MiB).
pub const AGG_MAX_BYTES: usize = 16 << 20;

/// Build a round from the payload's own entries and run the streaming and the batch
/// aggregation on it (two copies of the update).
pub fn exercise_aggregate(flags: AggFlags, buf: &[u8], layout: &Layout) {
    let mut total = 0usize;
    let mut specs = Vec::new();
    for e in &layout.entries {
        if matches!(
            e.dtype,
            DType::Bool | DType::C64 | DType::C128 | DType::F8E4M3 | DType::F8E5M2
        ) {
            return;
        }
        total = total.saturating_add(e.nbytes);
        if total > AGG_MAX_BYTES {
            return;
        }
        specs.push(TensorSpec {
            name: e.name.clone(),
            dtype: e.dtype,
            shape: e.shape.clone(),
        });
    }
    const OTHER_BASE: [u8; 32] = [7; 32];
    let base_id = match layout.base {
        Some(b) => Some(b),
        None if flags.with_base() => Some(OTHER_BASE),
        None => None,
    };
    let Ok(round) = Round::new(specs, base_id) else {
        return;
    };
    let bases: Vec<Vec<u8>> = layout.entries.iter().map(|e| vec![0; e.nbytes]).collect();
    let base_refs: Vec<&[u8]> = bases.iter().map(|b| &b[..]).collect();
    let base = base_id.map(|_| &base_refs[..]);
    let kind = if flags.difference() {
        Kind::Difference(base_id.unwrap_or(OTHER_BASE))
    } else {
        Kind::Model
    };
    let opts = Options {
        clip_norm: flags.clip().then_some(1.0),
        max_norm: flags.clip().then_some(1e6),
        precision: if flags.float64() {
            Precision::Float64
        } else {
            Precision::Auto
        },
        verify: flags.verify(),
        method: Method::Mean,
        scratch_out: false,
    };
    let source = || Source::Payload { buf, layout };

    // Streaming.
    if let Ok(mut acc) = Accumulator::new(round.clone(), opts) {
        if let Ok(index) = acc.check(&source(), kind) {
            let update = Contribution {
                id: 0,
                source: source(),
                kind,
                weight: 1.0,
                index,
            };
            let _ = acc.add(&update, base);
            let _ = acc.add(&update, base);
            let mut outs: Vec<Vec<u8>> = layout.entries.iter().map(|e| vec![0; e.nbytes]).collect();
            let _ = acc.finish_into(base, outs.iter_mut().map(|o| &mut o[..]).collect());
        }
    }

    // Batch, two copies with the flags' weights.
    if let Ok(index) = round.check(&source(), kind, None) {
        let (w0, w1) = flags.weights();
        let updates = [
            Contribution {
                id: 0,
                source: source(),
                kind,
                weight: w0,
                index: index.clone(),
            },
            Contribution {
                id: 1,
                source: source(),
                kind,
                weight: w1,
                index,
            },
        ];
        // The second copy is refused (the same payload): both ways of handling that, the
        // one-pass mean into scratch, and every method.
        for (method, skip, scratch_out) in [
            (Method::Mean, false, false),
            (Method::Mean, false, true),
            (Method::Mean, true, false),
            (Method::Median, true, false),
            (Method::TrimmedMean(0.25), true, false),
        ] {
            let mut outs: Vec<Vec<u8>> = layout.entries.iter().map(|e| vec![0; e.nbytes]).collect();
            let _ = fedavg::aggregate(
                &round,
                base,
                &updates,
                outs.iter_mut().map(|o| &mut o[..]).collect(),
                &Options {
                    method,
                    scratch_out,
                    ..opts
                },
                skip,
            );
        }
    }
}

/// Payloads for the aggregate corpus: averageable dtypes only, one per spec that fits.
pub fn aggregate_payloads() -> Vec<(String, Vec<u8>)> {
    let averageable = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I32,
        DType::U8,
        DType::I64,
    ];
    let mut out = Vec::new();
    for (k, spec) in SPECS.iter().enumerate() {
        if *spec == "auto" {
            continue;
        }
        let dtypes = dtypes_for(spec);
        let picked: Vec<DType> = averageable
            .iter()
            .copied()
            .filter(|d| dtypes.contains(d))
            .take(3)
            .collect();
        let mut tensors: Vec<SampleTensor> = picked
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let shape: &[u64] = if i == 0 { &[4, 8] } else { &[9] };
                SampleTensor::new(&format!("w{i}"), d, shape, spec, (k * 3 + i) as u32)
            })
            .collect();
        // A raw tensor next to the coded ones (read in place by the aggregator).
        tensors.push(SampleTensor::new("raw", DType::F32, &[5], "raw", k as u32));
        let name = spec.replace([':', '+', '='], "_");
        out.push((name, encode(&tensors, None).expect("sample encodes")));
    }
    out
}

// ---------------------------------------------------------------------------------
// reassemble inputs.

/// Chunk geometries the reassemble target cuts its built-in payloads with (max bytes
/// per chunk, header included).
pub const CHUNK_SIZES: [u64; 4] = [89, 88 + 64, 88 + 333, 88 + 4096];

/// The built-in payloads whose valid chunks the reassemble target mixes in: a small
/// container (kind 1) and the same bytes with one flipped (kind 0, plain bytes).
pub fn reassembly_payloads() -> Vec<Vec<u8>> {
    let t = [
        SampleTensor::new("w", DType::F32, &[4, 6], "shuffle+zstd:3", 1),
        SampleTensor::new("b", DType::F16, &[6], "raw", 2),
        SampleTensor::new("d", DType::F32, &[10], "topk:0.5+int8+lz4", 3),
    ];
    let container = encode(&t, None).expect("encodes");
    let mut bytes = container.clone();
    bytes[0] ^= 1;
    vec![container, bytes, Vec::new()]
}

/// Valid chunks of built-in payload `p` cut at [`CHUNK_SIZES`]`[size]` with payload id
/// byte `id`.
pub fn valid_chunks(payloads: &[Vec<u8>], p: usize, size: usize, id: u8) -> Vec<Vec<u8>> {
    let payload = &payloads[p % payloads.len()];
    ChunkPlan::new(
        payload,
        CHUNK_SIZES[size % CHUNK_SIZES.len()],
        Some(payload_id(p, id)),
        None,
    )
    .expect("plans")
    .to_vecs(payload)
}

fn payload_id(p: usize, id: u8) -> [u8; 16] {
    let mut pid = [0u8; 16];
    pid[0] = id;
    pid[1] = (p % 256) as u8;
    pid
}

/// [`valid_chunks`] of every built-in payload and size, cut once; chunks with another
/// id byte are made by patching the id and recomputing the CRC.
pub struct ChunkCache {
    payloads: Vec<Vec<u8>>,
    /// `cut[p][size]`: the chunks with id byte 0.
    cut: Vec<Vec<Vec<Vec<u8>>>>,
}

impl ChunkCache {
    /// Cut [`reassembly_payloads`] at every size.
    pub fn new() -> Self {
        let payloads = reassembly_payloads();
        let cut = (0..payloads.len())
            .map(|p| {
                (0..CHUNK_SIZES.len())
                    .map(|size| valid_chunks(&payloads, p, size, 0))
                    .collect()
            })
            .collect();
        ChunkCache { payloads, cut }
    }

    /// The built-in payloads.
    pub fn payloads(&self) -> &[Vec<u8>] {
        &self.payloads
    }

    /// Number of chunks of payload `p` cut at size `size`.
    pub fn count(&self, p: usize, size: usize) -> usize {
        self.cut[p % self.cut.len()][size % CHUNK_SIZES.len()].len()
    }

    /// Chunk `index` (mod the count) of payload `p` cut at size `size`, id byte `id`.
    pub fn chunk(&self, p: usize, size: usize, id: u8, index: usize) -> Vec<u8> {
        let p = p % self.cut.len();
        let all = &self.cut[p][size % CHUNK_SIZES.len()];
        let mut c = all[index % all.len()].clone();
        c[8..24].copy_from_slice(&payload_id(p, id));
        reseal_chunk(&mut c);
        c
    }
}

impl Default for ChunkCache {
    fn default() -> Self {
        Self::new()
    }
}

/// One operation of a reassemble input (see `fuzz_targets/reassemble.rs`).
pub mod reasm_op {
    /// `[op][u16 len][len bytes]`: the bytes are a chunk, added as is.
    pub const RAW: u8 = 0;
    /// As [`RAW`], with the CRC recomputed first.
    pub const RESEALED: u8 = 1;
    /// `[op][payload][size][id][index]`: a valid built-in chunk.
    pub const VALID: u8 = 2;
    /// `[op][payload][size][id][index][pos u16][xor u8]`: a built-in chunk with one byte
    /// changed, CRC recomputed.
    pub const MUTATED: u8 = 3;
    /// `[op][seconds u8]`: the clock jumps ahead.
    pub const WAIT: u8 = 4;
    /// `[op][payload][size][id]`: every valid chunk of a built-in payload, in reverse.
    pub const ALL_REVERSED: u8 = 5;
}
