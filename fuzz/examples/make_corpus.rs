//! Write the seed corpora: `cargo run --manifest-path fuzz/Cargo.toml --example make_corpus`
//! (stable toolchain; writes `fuzz/corpus/<target>/`, replacing the seeds it wrote
//! before, leaving any other file there alone). Every file is small (about 2 KB at
//! most) and deterministic, so the corpora can be committed and regenerated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tensorwire::codec::Pipeline;
use tensorwire::DType;
use tensorwire_fuzz::{
    aggregate_payloads, dtypes_for, reasm_op as op, reassembly_payloads, sample_bytes,
    sample_payloads, valid_chunks, CodecInput, SPECS,
};

/// Prefix of every generated seed (files with other names are left alone).
const PREFIX: &str = "seed-";

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut corpora: BTreeMap<&str, Vec<(String, Vec<u8>)>> = BTreeMap::new();

    // parse: one payload per pipeline, and the special ones.
    corpora.insert("parse", sample_payloads());

    // aggregate: flags byte + payload; a few flag combinations per payload.
    let mut agg = Vec::new();
    for (i, (name, p)) in aggregate_payloads().into_iter().enumerate() {
        // verify on, weights 1 and 1; alternate clipping, float64 and difference.
        let flags = [0b0010_0001u8, 0b1010_0011, 0b0010_1101, 0b0011_0000][i % 4];
        let mut v = vec![flags];
        v.extend_from_slice(&p);
        agg.push((name, v));
    }
    corpora.insert("aggregate", agg);

    // codec_decode: for every spec, a tensor of each dtype it accepts, encoded with it.
    let mut codec = Vec::new();
    for (k, spec) in SPECS.iter().enumerate() {
        let p = Pipeline::parse(spec).unwrap();
        if p.is_auto() {
            let input = CodecInput {
                spec: spec.to_string(),
                dtype: DType::F32,
                shape: vec![4],
                base_mode: 0,
                stored: b"TWC1\x00\x00\x10\x00",
            };
            codec.push(("auto".into(), input.to_bytes(Some(k))));
            continue;
        }
        for (j, dtype) in dtypes_for(spec).into_iter().enumerate() {
            // A shape whose axis 0 gives int8:channel several channels.
            let shape: Vec<u64> = match j % 3 {
                0 => vec![3, 7],
                1 => vec![20],
                _ => vec![2, 2, 3],
            };
            let n = shape.iter().product::<u64>() as usize;
            let data = sample_bytes(dtype, n, (k * 31 + j) as u32);
            // The target's base modes 0 (zeros) and 1 (a pattern), as the encoder had.
            let base_mode = (j % 2) as u8;
            let base = tensorwire_fuzz::codec_base(base_mode, data.len());
            let base = p.needs_base().then_some(base.as_deref()).flatten();
            let Ok(stored) = p.encode(dtype, &shape, &data, base) else {
                continue;
            };
            if stored.len() > 2048 {
                continue;
            }
            let input = CodecInput {
                spec: spec.to_string(),
                dtype,
                shape,
                base_mode,
                stored: &stored,
            };
            // A few seeds spell the spec inline, so the spec parser is fuzzed too.
            let index = if j == 1 { None } else { Some(k) };
            let name = format!("{}_{}", spec.replace([':', '+', '='], "_"), dtype.name());
            codec.push((name, input.to_bytes(index)));
        }
    }
    corpora.insert("codec_decode", codec);

    // codec_roundtrip: spec, dtype, rank, dims, then sample values (with special floats).
    let mut rt = Vec::new();
    for (k, spec) in SPECS.iter().enumerate() {
        let dtypes = if *spec == "auto" {
            vec![DType::F32, DType::I16, DType::U8]
        } else {
            dtypes_for(spec)
        };
        for (j, dtype) in dtypes.into_iter().enumerate().step_by(2) {
            let shape: &[u8] = if j % 4 == 0 { &[3, 5] } else { &[16] };
            let n = shape.iter().map(|&d| d as usize).product();
            let mut v = vec![k as u8, dtype.index() as u8, shape.len() as u8 | 4];
            v.extend_from_slice(shape);
            v.extend_from_slice(&sample_bytes(dtype, n, k as u32));
            if dtype == DType::F32 {
                for x in [f32::NAN, -0.0, f32::INFINITY, 1e-45, -3.4e38] {
                    v.extend_from_slice(&x.to_le_bytes());
                }
            }
            let name = format!("{}_{}", spec.replace([':', '+', '='], "_"), dtype.name());
            rt.push((name, v));
        }
    }
    corpora.insert("codec_roundtrip", rt);

    // reassemble: real chunk bytes (RAW ops) and references to built-in chunks.
    let payloads = reassembly_payloads();
    let mut reasm = Vec::new();
    for (p, name) in ["container", "bytes", "empty"].iter().enumerate() {
        for size in 0..tensorwire_fuzz::CHUNK_SIZES.len() {
            let chunks = valid_chunks(&payloads, p, size, 9);
            if chunks.len() > 12 {
                // Too many to spell out: refer to them.
                for flags in [0b0000_0010u8, 0b0000_0101] {
                    let mut v = vec![flags, op::ALL_REVERSED, p as u8, size as u8, 9];
                    v.extend_from_slice(&[op::VALID, p as u8, size as u8, 9, 0]);
                    v.extend_from_slice(&[op::WAIT, 200, op::VALID, p as u8, size as u8, 4, 1]);
                    reasm.push((format!("{name}_{size}_ref_{flags}"), v));
                }
                continue;
            }
            let mut v = vec![0b0000_0010u8];
            for c in chunks.iter().rev().chain(chunks.first()) {
                v.push(op::RAW);
                v.extend_from_slice(&(c.len() as u16).to_le_bytes());
                v.extend_from_slice(c);
            }
            // A forged copy of the first chunk and a clock jump.
            v.extend_from_slice(&[op::MUTATED, p as u8, size as u8, 9, 0, 100, 0, 0x40]);
            v.extend_from_slice(&[op::WAIT, 255]);
            reasm.push((format!("{name}_{size}"), v));
        }
    }
    corpora.insert("reassemble", reasm);

    // open_sealed: every length (short, across one and two block boundaries) with every
    // change, at a few places; byte 0 is flags (see `targets::open_sealed`).
    let mut sealed = Vec::new();
    for length in [0u8, 5, 6, 7] {
        for change in 0..4u8 {
            let flags = length | change << 3 | ((change + length) & 7) << 5;
            let mut v = vec![flags];
            v.extend_from_slice(&(1000 + 77 * u32::from(change)).to_le_bytes());
            v.extend_from_slice(b"tensorwire sealed seed");
            sealed.push((format!("len{length}_change{change}"), v));
        }
    }
    corpora.insert("open_sealed", sealed);

    let mut total = 0usize;
    for (target, seeds) in &corpora {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus folder");
        for old in std::fs::read_dir(&dir).expect("readable") {
            let old = old.unwrap().path();
            let is_seed = old
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX));
            if is_seed {
                std::fs::remove_file(old).unwrap();
            }
        }
        let mut bytes = 0;
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("{PREFIX}{name}")), data).expect("write seed");
            bytes += data.len();
        }
        println!("{target}: {} seeds, {bytes} bytes", seeds.len());
        total += bytes;
    }
    println!("total: {total} bytes");
}
