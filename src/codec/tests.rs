//! Pipeline-level tests: parsing, round trips, error bounds, misfits, corruption.

use super::block::Plan;
use super::quantizer::{self, Quantizer};
use super::*;
use crate::dtype::scalar::Float;
use crate::dtype::DType;

/// A deterministic pseudo-random generator for test data (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn normal(&mut self) -> f64 {
        // Sum of uniforms: close enough to a bell curve for weights.
        (0..4)
            .map(|_| (self.next() >> 11) as f64 / (1u64 << 53) as f64)
            .sum::<f64>()
            - 2.0
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(f32::read).collect()
}

/// Weight-like float32 data with NaN payloads, -0.0 and infinities sprinkled in.
fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed | 1);
    let mut v: Vec<f32> = (0..n).map(|_| (r.normal() * 0.05) as f32).collect();
    for (i, special) in [
        f32::from_bits(0x7fc0_0001),
        f32::from_bits(0xffa0_beef),
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]
    .into_iter()
    .enumerate()
    {
        if n > 0 {
            v[(i * 7919) % n] = special;
        }
    }
    v
}

fn round_trip(
    spec: &str,
    dtype: DType,
    shape: &[u64],
    data: &[u8],
    base: Option<&[u8]>,
) -> Vec<u8> {
    let p = Pipeline::parse(spec).unwrap();
    let enc = p.encode(dtype, shape, data, base).unwrap();
    let mut out = vec![0xAAu8; data.len()];
    p.decode(dtype, shape, &enc, base, &mut out).unwrap();
    out
}

#[test]
fn parse_and_display() {
    let canonical = [
        ("raw", "raw"),
        ("zstd", "zstd:3"),
        ("shuffle+zstd:9", "shuffle+zstd:9"),
        ("floatzip", "floatzip"),
        (
            " delta + topk:0.01 + f16 + zstd ",
            "delta+topk:0.01+f16+zstd:3",
        ),
        ("int8:stochastic=7:channel", "int8:channel:stochastic=7"),
        ("threshold:1e-3+bf16+lz4", "threshold:0.001+bf16+lz4"),
        ("xor+floatzip", "xor+floatzip"),
        ("auto", "auto"),
    ];
    for (spec, want) in canonical {
        let p = Pipeline::parse(spec).unwrap();
        assert_eq!(p.to_string(), want, "{spec}");
        assert_eq!(Pipeline::parse(want).unwrap(), p, "{spec} reparses");
    }
    for bad in [
        "",
        "zstd:99",
        "gzip",
        "lz4:3",
        "zstd:x",
        "+",
        "zstd+shuffle",
        "f16+f16",
        "floatzip+zstd",
        "xor+topk:0.1",
        "xor+int8",
        "topk",
        "topk:0",
        "topk:1.5",
        "topk:nan",
        "threshold:-1",
        "int8:chan",
        "int8:channel:channel",
        "int8:stochastic=x",
        "auto+zstd",
        "zstd+auto",
    ] {
        let e = Pipeline::parse(bad).unwrap_err();
        assert!((e.kind() == crate::error::Kind::Codec), "{bad}: {e:?}");
    }
}

#[test]
fn lossless_pipelines_are_bit_exact() {
    let lossless = [
        "zstd",
        "zstd:-3",
        "lz4",
        "shuffle",
        "shuffle+zstd:1",
        "shuffle+lz4",
        "floatzip",
    ];
    for n in [0usize, 1, 3, 1001, (BLOCK_BYTES / 4) * 2 + 17] {
        let v = weights(n, n as u64 + 1);
        let data = f32_bytes(&v);
        for spec in lossless {
            let out = round_trip(spec, DType::F32, &[n as u64], &data, None);
            assert!(out == data, "{spec} n={n}");
        }
        // The same bytes read as other dtypes.
        for dtype in [
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::C64,
            DType::I32,
            DType::U8,
        ] {
            let len = data.len() / dtype.itemsize() * dtype.itemsize();
            let d = &data[..len];
            let shape = [(len / dtype.itemsize()) as u64];
            for spec in lossless {
                if spec == "floatzip" && Pipeline::parse(spec).unwrap().check(dtype).is_err() {
                    continue;
                }
                assert!(
                    round_trip(spec, dtype, &shape, d, None) == d,
                    "{spec} {dtype}"
                );
            }
        }
    }
}

#[test]
fn xor_delta_is_exact_and_compresses() {
    let base = weights(50_000, 3);
    let mut r = Rng(9);
    let new: Vec<f32> = base
        .iter()
        .map(|x| if r.next() % 10 == 0 { x + 1e-4 } else { *x })
        .collect();
    let (nb, bb) = (f32_bytes(&new), f32_bytes(&base));
    for spec in ["xor+zstd", "xor+shuffle+zstd", "xor+floatzip", "xor"] {
        assert!(
            round_trip(spec, DType::F32, &[50_000], &nb, Some(&bb)) == nb,
            "{spec}"
        );
    }
    let p = Pipeline::parse("xor+shuffle+zstd").unwrap();
    let enc = p.encode(DType::F32, &[50_000], &nb, Some(&bb)).unwrap();
    assert!(enc.len() < nb.len() / 4, "{}", enc.len());
    // Works for integer tensors too.
    let ints: Vec<u8> = (0..999u32).flat_map(|i| i.to_le_bytes()).collect();
    let base_ints: Vec<u8> = (0..999u32).flat_map(|i| (i ^ 1).to_le_bytes()).collect();
    assert!(round_trip("xor+zstd", DType::U32, &[999], &ints, Some(&base_ints)) == ints);
}

#[test]
fn f16_and_bf16_within_bounds() {
    let v: Vec<f32> = weights(20_000, 5)
        .into_iter()
        .map(|x| if x.is_finite() { x } else { 0.5 })
        .chain([65504.0, -1e-7, 1e-30, 0.1])
        .collect();
    let data = f32_bytes(&v);
    for (spec, rel, abs) in [
        ("f16", 2f64.powi(-11), 2f64.powi(-25)),
        ("f16+zstd", 2f64.powi(-11), 2f64.powi(-25)),
        ("bf16+shuffle+lz4", 2f64.powi(-8), 2f64.powi(-134)),
        ("bf16+floatzip", 2f64.powi(-8), 2f64.powi(-134)),
    ] {
        let out = f32_of(&round_trip(
            spec,
            DType::F32,
            &[v.len() as u64],
            &data,
            None,
        ));
        for (x, y) in v.iter().zip(&out) {
            let (x, y) = (*x as f64, *y as f64);
            assert!(
                (x - y).abs() <= (rel * x.abs()).max(abs),
                "{spec}: {x} -> {y}"
            );
        }
    }
    // float64 through f16 comes back as float64.
    let d64: Vec<u8> = [1.0f64, -0.3, 1e-3]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let out = round_trip("f16", DType::F64, &[3], &d64, None);
    assert_eq!(f64::read(&out[8..]), half::f16::from_f64(-0.3).to_f64());
}

#[test]
fn f16_refuses_out_of_range_finite_values() {
    let data = f32_bytes(&[1.0, 2.0, 1e6]);
    let e = Pipeline::parse("f16+zstd")
        .unwrap()
        .encode(DType::F32, &[3], &data, None)
        .unwrap_err();
    assert!((e.kind() == crate::error::Kind::Codec));
    let msg = e.to_string();
    assert!(
        msg.contains("float16's range") && msg.contains("element 2"),
        "{msg}"
    );
    // inf stays inf: it was inf already.
    let data = f32_bytes(&[f32::INFINITY, f32::NAN]);
    let out = f32_of(&round_trip("f16", DType::F32, &[2], &data, None));
    assert!(out[0] == f32::INFINITY && out[1].is_nan());
}

#[test]
fn int8_within_bounds() {
    let mut r = Rng(11);
    let (rows, cols) = (37usize, 300usize);
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| (r.normal() * (1.0 + (i / cols) as f64)) as f32)
        .collect();
    let data = f32_bytes(&v);
    let shape = [rows as u64, cols as u64];
    for spec in [
        "int8",
        "int8+zstd",
        "int8:channel+shuffle+lz4",
        "int8:stochastic=3",
        "int8:channel:stochastic=3",
    ] {
        let p = Pipeline::parse(spec).unwrap();
        let Some(Quantizer::Int8 {
            per_channel,
            stochastic_seed,
        }) = p.quantizer
        else {
            panic!()
        };
        let out = f32_of(&round_trip(spec, DType::F32, &shape, &data, None));
        let max_of = |range: std::ops::Range<usize>| {
            v[range].iter().fold(0f64, |m, x| m.max(x.abs() as f64))
        };
        for c in 0..rows {
            let max = if per_channel {
                max_of(c * cols..(c + 1) * cols)
            } else {
                max_of(0..v.len())
            };
            let scale = quantizer::int8_scale(max).unwrap() as f64;
            let bound = if stochastic_seed.is_some() {
                scale
            } else {
                scale / 2.0
            };
            for i in c * cols..(c + 1) * cols {
                let err = (v[i] as f64 - out[i] as f64).abs();
                assert!(
                    err <= bound * (1.0 + 1e-6) + 1e-7 * v[i].abs() as f64,
                    "{spec}: {} -> {}",
                    v[i],
                    out[i]
                );
            }
        }
    }
    // Same seed, same bytes; different seed, different bytes.
    let p = |s: &str| {
        Pipeline::parse(s)
            .unwrap()
            .encode(DType::F32, &shape, &data, None)
            .unwrap()
    };
    assert_eq!(p("int8:stochastic=1"), p("int8:stochastic=1"));
    assert_ne!(p("int8:stochastic=1"), p("int8:stochastic=2"));
    // Non-finite values cannot be quantized to int8.
    let e = Pipeline::parse("int8").unwrap().encode(
        DType::F32,
        &[2],
        &f32_bytes(&[1.0, f32::NAN]),
        None,
    );
    assert!(matches!(e, Err(ref x) if x.kind() == crate::error::Kind::Codec));
    // An empty tensor with many channels stores no scales.
    let p = Pipeline::parse("int8:channel").unwrap();
    let enc = p.encode(DType::F32, &[1 << 40, 0], &[], None).unwrap();
    assert_eq!(enc.len(), 8);
    p.decode(DType::F32, &[1 << 40, 0], &enc, None, &mut [])
        .unwrap();
    // int8:channel needs an axis.
    let e =
        Pipeline::parse("int8:channel")
            .unwrap()
            .encode(DType::F32, &[], &f32_bytes(&[1.0]), None);
    assert!(matches!(e, Err(ref x) if x.kind() == crate::error::Kind::Codec));
}

#[test]
fn delta_topk_update() {
    let n = 300_000usize;
    let base = weights(n, 21)
        .into_iter()
        .map(|x| if x.is_finite() { x } else { 0.0 })
        .collect::<Vec<f32>>();
    let mut r = Rng(5);
    let new: Vec<f32> = base
        .iter()
        .map(|x| x + (r.normal() * 1e-3) as f32)
        .collect();
    let (nb, bb) = (f32_bytes(&new), f32_bytes(&base));
    let p = Pipeline::parse("delta+topk:0.01+f16+zstd").unwrap();
    let enc = p.encode(DType::F32, &[n as u64], &nb, Some(&bb)).unwrap();
    assert!(enc.len() * 50 < nb.len(), "{} of {}", enc.len(), nb.len());
    let mut out = vec![0u8; nb.len()];
    p.decode(DType::F32, &[n as u64], &enc, Some(&bb), &mut out)
        .unwrap();
    let out = f32_of(&out);
    // About 1% of entries changed, the rest are exactly the base.
    let changed = out.iter().zip(&base).filter(|(o, b)| o != b).count();
    assert!(
        (n / 100 - 50..=n / 100 + 50).contains(&changed),
        "{changed}"
    );
    // Changed entries are the largest deltas, each within f16's bound of the update.
    let mut deltas: Vec<f32> = new.iter().zip(&base).map(|(a, b)| (a - b).abs()).collect();
    deltas.sort_by(f32::total_cmp);
    let t = deltas[n - n / 100];
    for i in 0..n {
        let d = (new[i] - base[i]).abs();
        if out[i] != base[i] {
            assert!(d >= t * 0.999);
            let err = (out[i] - new[i]).abs() as f64;
            assert!(
                err <= d as f64 * 2f64.powi(-11)
                    + 2.0 * f32::EPSILON as f64 * (new[i].abs() + base[i].abs()) as f64
            );
        } else {
            assert!(d <= t * 1.001, "{i}: dropped delta {d} above threshold {t}");
        }
    }
}

#[test]
fn sparse_decodes_into_zeros() {
    let v = f32_bytes(&[0.0, 5.0, -0.1, 0.0, -7.0, 0.2, f32::NAN]);
    let out = f32_of(&round_trip("threshold:0.15", DType::F32, &[7], &v, None));
    assert_eq!(&out[..6], &[0.0, 5.0, 0.0, 0.0, -7.0, 0.2]);
    assert!(out[6].is_nan());
    let out = f32_of(&round_trip(
        "topk:0.3+shuffle+zstd",
        DType::F32,
        &[7],
        &v,
        None,
    ));
    // k = ceil(2.1) = 3: NaN, -7 and 5.
    assert_eq!(&out[..6], &[0.0, 5.0, 0.0, 0.0, -7.0, 0.0]);
    // threshold:0 keeps every nonzero: exact except -0.0 → +0.0.
    let w = weights(5000, 8);
    let data = f32_bytes(&w);
    let out = f32_of(&round_trip(
        "threshold:0+floatzip",
        DType::F32,
        &[5000],
        &data,
        None,
    ));
    for (a, b) in w.iter().zip(&out) {
        assert!(a.to_bits() == b.to_bits() || (*a == 0.0 && *b == 0.0));
    }
    // int8 on kept values, per channel.
    let m = f32_bytes(&[1.0, 0.0, -2.0, 0.0, 0.0, 100.0]);
    let out = f32_of(&round_trip(
        "topk:0.5+int8:channel+zstd",
        DType::F32,
        &[2, 3],
        &m,
        None,
    ));
    assert!(
        (out[0] - 1.0).abs() < 0.01 && (out[2] + 2.0).abs() < 0.01 && (out[5] - 100.0).abs() < 0.5
    );
}

#[test]
fn misfits_are_codec_errors() {
    let cases = [
        ("f16", DType::I32),
        ("bf16", DType::F16),
        ("int8", DType::I64),
        ("delta", DType::I32),
        ("delta", DType::Bool),
        ("topk:0.1", DType::Bool),
        ("topk:0.1", DType::C64),
        ("threshold:1", DType::U8),
        ("floatzip", DType::I32),
        ("int8+floatzip", DType::F32),
    ];
    for (spec, dtype) in cases {
        let e = Pipeline::parse(spec).unwrap().check(dtype).unwrap_err();
        assert!(
            (e.kind() == crate::error::Kind::Codec),
            "{spec} {dtype}: {e:?}"
        );
        assert!(e.to_string().contains(&dtype.to_string()), "{e}");
    }
    for (spec, dtype) in [
        ("delta", DType::C64),
        ("xor", DType::Bool),
        ("shuffle+zstd", DType::Bool),
        ("floatzip", DType::C128),
    ] {
        Pipeline::parse(spec).unwrap().check(dtype).unwrap();
    }
    let data = f32_bytes(&[1.0]);
    let e = Pipeline::parse("delta+zstd")
        .unwrap()
        .encode(DType::F32, &[1], &data, None);
    assert!(matches!(e, Err(ref x) if x.kind() == crate::error::Kind::Codec));
    let p = Pipeline::parse("delta").unwrap();
    let enc = p.encode(DType::F32, &[1], &data, Some(&data)).unwrap();
    let mut out = vec![0u8; 4];
    assert!(matches!(
        p.decode(DType::F32, &[1], &enc, None, &mut out),
        Err(ref x) if x.kind() == crate::error::Kind::Integrity
    ));
    assert!(matches!(
        p.decode(DType::F32, &[1], &enc, Some(&[0; 8]), &mut out),
        Err(ref x) if x.kind() == crate::error::Kind::Integrity
    ));
}

#[test]
fn auto_picks_and_stores_a_concrete_pipeline() {
    let smooth = f32_bytes(&weights(100_000, 4));
    let p = Pipeline::parse("auto")
        .unwrap()
        .resolve(DType::F32, &smooth)
        .unwrap();
    assert!(!p.is_auto() && !p.is_raw() && p.is_lossless(), "{p}");
    assert!(round_trip(&p.to_string(), DType::F32, &[100_000], &smooth, None) == smooth);
    // encode resolves "auto" itself too.
    let direct = Pipeline::parse("auto")
        .unwrap()
        .encode(DType::F32, &[100_000], &smooth, None);
    assert_eq!(
        direct.unwrap(),
        p.encode(DType::F32, &[100_000], &smooth, None).unwrap()
    );
    let mut r = Rng(77);
    let noise: Vec<u8> = (0..100_000).map(|_| r.next() as u8).collect();
    assert!(Pipeline::parse("auto")
        .unwrap()
        .resolve(DType::U8, &noise)
        .unwrap()
        .is_raw());
    let zeros = vec![0u8; 4096];
    let p = Pipeline::parse("auto")
        .unwrap()
        .resolve(DType::I32, &zeros)
        .unwrap();
    assert!(!p.is_raw());
    assert!(Pipeline::parse("auto")
        .unwrap()
        .resolve(DType::F32, &[])
        .unwrap()
        .is_raw());
    let mut out = vec![0u8; 4];
    let e = Pipeline::parse("auto")
        .unwrap()
        .decode(DType::F32, &[1], b"TWC1", None, &mut out);
    assert!(matches!(e, Err(ref x) if x.kind() == crate::error::Kind::Format));
}

/// Decoding damaged bytes must fail cleanly (or, where no check can notice a change in
/// stored values, return the right size): never panic or allocate without bound.
#[test]
fn corrupt_stored_bytes_never_panic() {
    let v = weights(70_000, 13);
    let data = f32_bytes(&v);
    let finite = |v: Vec<f32>| -> Vec<f32> {
        v.into_iter()
            .map(|x| if x.is_finite() { x } else { 0.0 })
            .collect()
    };
    let base = f32_bytes(&finite(weights(70_000, 14)));
    let shape = [70_000u64];
    let specs = [
        "zstd",
        "lz4",
        "shuffle+zstd",
        "floatzip",
        "f16+zstd",
        "int8:channel",
        "delta+topk:0.05+f16+zstd",
        "topk:0.1+floatzip",
        "threshold:0.01+int8+lz4",
        "xor+shuffle",
    ];
    let mut r = Rng(99);
    for spec in specs {
        let p = Pipeline::parse(spec).unwrap();
        let src = if spec.contains("int8") || spec.contains("delta") {
            f32_bytes(&finite(v.clone()))
        } else {
            data.clone()
        };
        let b = if p.needs_base() {
            Some(&base[..])
        } else {
            None
        };
        let enc = p.encode(DType::F32, &shape, &src, b).unwrap();
        let mut out = vec![0u8; src.len()];
        // Truncations.
        for cut in [0, 3, 7, 8, 12, enc.len() / 2, enc.len() - 1] {
            assert!(
                p.decode(DType::F32, &shape, &enc[..cut], b, &mut out)
                    .is_err(),
                "{spec} cut {cut}"
            );
        }
        // Extra bytes.
        let mut longer = enc.clone();
        longer.push(0);
        assert!(
            p.decode(DType::F32, &shape, &longer, b, &mut out).is_err(),
            "{spec}"
        );
        // Absurd block size and block lengths.
        let mut bad = enc.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            p.decode(DType::F32, &shape, &bad, b, &mut out),
            Err(ref x) if x.kind() == crate::error::Kind::Integrity
        ));
        let table = 8 + 4 * Plan::new(&p, DType::F32, &shape, src.len())
            .unwrap()
            .nscales();
        let mut bad = enc.clone();
        bad[table..table + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            p.decode(DType::F32, &shape, &bad, b, &mut out),
            Err(ref x) if x.kind() == crate::error::Kind::Integrity
        ));
        if p.sparse.is_some() {
            let mut bad = enc.clone();
            bad[table + 4..table + 8].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(p.decode(DType::F32, &shape, &bad, b, &mut out).is_err());
        }
        // Random byte flips: an error or a full-size result, never a panic.
        for _ in 0..200 {
            let mut bad = enc.clone();
            let i = (r.next() as usize) % bad.len();
            bad[i] ^= 1 << (r.next() % 8);
            let _ = p.decode(DType::F32, &shape, &bad, b, &mut out);
        }
    }
}

/// Stored bytes of a coded tensor, written by hand as an attacker would.
fn framed(block: u32, scales: &[f32], table: &[(u32, Option<u32>)], bodies: &[&[u8]]) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&block.to_le_bytes());
    for s in scales {
        v.extend_from_slice(&s.to_le_bytes());
    }
    for (len, count) in table {
        v.extend_from_slice(&len.to_le_bytes());
        if let Some(c) = count {
            v.extend_from_slice(&c.to_le_bytes());
        }
    }
    for b in bodies {
        v.extend_from_slice(b);
    }
    v
}

#[test]
fn declared_sizes_must_be_backed_by_the_framing() {
    let check = |spec: &str, dtype: DType, shape: &[u64], stored: &[u8]| {
        let p = Pipeline::parse(spec).unwrap();
        let nbytes = crate::memory::nbytes(dtype, shape).unwrap();
        p.check_stored(dtype, shape, nbytes, stored)
    };
    let zeros = zstd::bulk::compress(&[0u8; 4096], 3).unwrap();
    // 2^40 float32s in one tiny block table: the table alone would need 16 MiB.
    let tiny = framed(1 << 18, &[], &[(zeros.len() as u32, None)], &[&zeros]);
    let err = check("zstd:3", DType::F32, &[1 << 40], &tiny).unwrap_err();
    assert!((err.kind() == crate::error::Kind::Integrity), "{err}");
    assert!(err.to_string().contains("cannot hold"), "{err}");
    // A block the table promises but a frame too short for its share (32768:1 at most).
    let table: Vec<(u32, Option<u32>)> = vec![(13, None); 64];
    let bodies: Vec<&[u8]> = vec![&zeros[..13]; 64];
    let many = framed(1 << 21, &[], &table, &bodies);
    let err = check("zstd:3", DType::F64, &[64 << 21], &many).unwrap_err();
    assert!(err.to_string().contains("32768"), "{err}");
    // A zstd frame that states another content size than the block needs.
    let one = framed(1024, &[], &[(zeros.len() as u32, None)], &[&zeros]);
    let err = check("zstd:3", DType::F32, &[512], &one).unwrap_err();
    assert!(err.to_string().contains("states 4096"), "{err}");
    check("zstd:3", DType::F32, &[1024], &one).unwrap();
    let ok = zstd::bulk::compress(&[0u8; 4096], 3).unwrap();
    check(
        "zstd:3",
        DType::U8,
        &[4096],
        &framed(4096, &[], &[(ok.len() as u32, None)], &[&ok]),
    )
    .unwrap();
    // LZ4: at most 255:1.
    let err = check(
        "lz4",
        DType::F32,
        &[1 << 20],
        &framed(1 << 20, &[], &[(100, None)], &[&[0; 100]]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("255"), "{err}");
    // Sparse: more kept entries than scalars, or than the block's bytes can index.
    let err = check(
        "topk:0.5",
        DType::F32,
        &[8],
        &framed(8, &[], &[(0, Some(9))], &[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("claims 9"), "{err}");
    let err = check(
        "topk:0.5",
        DType::F32,
        &[8],
        &framed(8, &[], &[(4, Some(4))], &[&[0; 4]]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("cannot decode"), "{err}");
    // int8 scales must be there and finite; floatzip planes must tile the block.
    let err = check("int8", DType::F32, &[4], &framed(4, &[], &[], &[])).unwrap_err();
    assert!(err.to_string().contains("cannot hold 1 scales"), "{err}");
    let err = check(
        "int8",
        DType::F32,
        &[4],
        &framed(4, &[f32::NAN], &[(4, None)], &[&[0; 4]]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");
    let mut planes = Vec::new();
    for _ in 0..4 {
        planes.extend_from_slice(&[0, 4, 0, 0, 0, 1, 2, 3, 4]);
    }
    let len = planes.len() as u32;
    check(
        "floatzip",
        DType::F32,
        &[4],
        &framed(4, &[], &[(len, None)], &[&planes]),
    )
    .unwrap();
    planes[1] = 5;
    assert!(check(
        "floatzip",
        DType::F32,
        &[4],
        &framed(4, &[], &[(len, None)], &[&planes])
    )
    .is_err());
    // Shapes whose scale table would overflow the address space are refused, not wrapped.
    let p = Pipeline::parse("int8:channel").unwrap();
    assert!(p
        .check_stored(
            DType::F16,
            &[1 << 61, 1],
            1 << 62,
            &framed(1, &[], &[], &[])
        )
        .is_err());
}

#[test]
fn densest_honest_encodings_pass_the_framing_check() {
    // All-zero tensors are what compress best; every pipeline's output must still meet
    // the expansion limits the decoder enforces.
    let n = 3 << 20;
    let zeros = vec![0u8; n * 4];
    for spec in [
        "zstd:3",
        "zstd:19",
        "zstd:-7",
        "lz4",
        "shuffle+zstd:3",
        "shuffle+lz4",
        "floatzip",
        "f16+zstd:3",
        "bf16+floatzip",
        "int8+zstd:3",
        "int8:channel+lz4",
        "topk:0.5+zstd:3",
        "threshold:0.1+lz4",
        "threshold:0.1",
        "topk:0.01+f16+floatzip",
        "delta+zstd:3",
        "delta+topk:0.01+int8+zstd:3",
        "xor+lz4",
    ] {
        let base = zeros.clone();
        round_trip(spec, DType::F32, &[3, (n / 3) as u64], &zeros, Some(&base));
    }
}

/// Single-thread speed of some pipelines on a raw little-endian float32 file:
/// `TW_WEIGHTS=w.f32 cargo test --release codec::tests::speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed_on_weights_file() {
    let Ok(path) = std::env::var("TW_WEIGHTS") else {
        return;
    };
    let data = std::fs::read(path).unwrap();
    let data = &data[..data.len() / 4 * 4];
    let shape = [(data.len() / 4) as u64];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // CPU time of the calling thread (the machine may be shared): schedstat's first field.
    let cpu = || -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse::<f64>().unwrap() / 1e9
    };
    let best = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = cpu();
                f();
                cpu() - t
            })
            .fold(f64::INFINITY, f64::min)
    };
    let specs = std::env::var("TW_SPECS").unwrap_or_else(|_| {
        "shuffle+zstd:1,shuffle+zstd:3,floatzip,f16,bf16,int8,int8:stochastic=1".into()
    });
    for spec in specs.split(',') {
        let p = Pipeline::parse(spec).unwrap();
        pool.install(|| {
            let mut enc = Vec::new();
            let te = best(&mut || enc = p.encode(DType::F32, &shape, data, None).unwrap());
            let mut out = vec![0u8; data.len()];
            let td = best(&mut || p.decode(DType::F32, &shape, &enc, None, &mut out).unwrap());
            let gb = data.len() as f64 / 1e9;
            println!(
                "{spec:16} ratio {:.4} encode {:.2} GB/s decode {:.2} GB/s",
                enc.len() as f64 / data.len() as f64,
                gb / te,
                gb / td
            );
        });
    }
}
