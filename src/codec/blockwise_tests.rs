//! Blockwise quantizer tests: spelling, the documented error bounds on random and
//! adversarial data, refusals, pinned bytes, pipelines around them, hostile stored bytes.

use super::*;
use crate::codec::{Pipeline, MAGIC};
use crate::error::Kind;

/// xorshift64*: deterministic test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Roughly normal, mean 0, standard deviation about 0.58.
    fn normal(&mut self) -> f64 {
        (0..4)
            .map(|_| (self.next() >> 11) as f64 / (1u64 << 53) as f64)
            .sum::<f64>()
            - 2.0
    }
}

fn bytes_of<T: Float>(v: &[f64]) -> Vec<u8> {
    let mut out = vec![0u8; v.len() * T::SIZE];
    for (x, o) in v.iter().zip(out.chunks_exact_mut(T::SIZE)) {
        T::from_f64(*x).write(o);
    }
    out
}

fn values_of<T: Float>(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(T::SIZE)
        .map(|c| T::read(c).to_f64())
        .collect()
}

/// The largest gap between neighbours of the NF4 table.
fn nf4_gap() -> f64 {
    NF4.windows(2)
        .map(|w| w[1] as f64 - w[0] as f64)
        .fold(0.0, f64::max)
}

/// The documented bound on |decoded − x| for `code` in a block whose largest magnitude
/// is `absmax`, before the final rounding to the scalar dtype: `gap/2 · scale`.
fn bound(code: Code, absmax: f64) -> f64 {
    let slack = 1.0 + 2f64.powi(-22); // the scale is the smallest float32 above absmax/levels
    slack
        * match code {
            Code::Int8 => absmax / 254.0,
            Code::Int4 => absmax / 14.0,
            Code::Nf4 => nf4_gap() / 2.0 * absmax,
        }
}

/// Encode `v` as `T` with `spec`, decode, and check every element against the bound of
/// its block (of `block` values) plus half an ulp of `T` at the decoded value.
fn check_bounds<T: Float>(spec: &str, code: Code, block: usize, v: &[f64]) {
    let data = bytes_of::<T>(v);
    let x = values_of::<T>(&data);
    let p = Pipeline::parse(spec).unwrap();
    let shape = [x.len() as u64];
    let enc = p.encode(T::DTYPE, &shape, &data, None).unwrap();
    let mut out = vec![0xAAu8; data.len()];
    p.decode(T::DTYPE, &shape, &enc, None, &mut out).unwrap();
    let got = values_of::<T>(&out);
    let eps = match T::SIZE {
        2 if T::DTYPE == DType::BF16 => 2f64.powi(-8),
        2 => 2f64.powi(-11),
        4 => 2f64.powi(-24),
        _ => 2f64.powi(-53),
    };
    for (b, (xs, gs)) in x.chunks(block).zip(got.chunks(block)).enumerate() {
        let absmax = xs.iter().fold(0f64, |m, x| m.max(x.abs()));
        let limit = bound(code, absmax);
        for (j, (x, g)) in xs.iter().zip(gs).enumerate() {
            let err = (g - x).abs();
            assert!(
                err <= limit + eps * g.abs() + f64::MIN_POSITIVE,
                "{spec} {}: block {b} value {j}: {x} decoded as {g}, error {err} > {limit}",
                T::DTYPE
            );
        }
        if absmax == 0.0 {
            assert!(
                gs.iter().all(|g| *g == 0.0),
                "{spec}: a zero block stays zero"
            );
        }
    }
}

const CODES: [(Code, &str); 3] = [
    (Code::Int8, "int8"),
    (Code::Int4, "int4"),
    (Code::Nf4, "nf4"),
];

#[test]
fn specs_parse_and_spell_canonically() {
    for (typed, canonical) in [
        ("int8:block=64", "int8:block=64"),
        ("int4", "int4:block=64"),
        ("int4:block=16", "int4:block=16"),
        ("nf4", "nf4:block=64"),
        ("nf4:block=4096", "nf4:block=4096"),
        (
            "delta+topk:0.1+int4:block=128+zstd",
            "delta+topk:0.1+int4:block=128+zstd:3",
        ),
        ("nf4+lz4", "nf4:block=64+lz4"),
    ] {
        assert_eq!(Pipeline::parse(typed).unwrap().to_string(), canonical);
    }
    for bad in [
        "int8:block=63",
        "int8:block=8",
        "int8:block=8192",
        "int8:block=0",
        "int8:block=",
        "int8:block=64:channel",
        "int8:channel:block=64",
        "int8:block=64:stochastic=1",
        "int4:64",
        "int4:block=64:block=64",
        "nf4:block=-64",
        "nf4:channel",
        "int4+shuffle",
        "nf4:block=64+floatzip",
        "xor+int4",
    ] {
        let e = Pipeline::parse(bad).unwrap_err();
        assert_eq!(e.kind(), Kind::Codec, "{bad}");
    }
    let e = Pipeline::parse("int4+shuffle+zstd")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no layout stage can follow"), "{e}");
    let e = Pipeline::parse("int4:block=48").unwrap_err().to_string();
    assert!(e.contains("power of two in 16..=4096"), "{e}");
    let p = Pipeline::parse("int4").unwrap();
    assert!(!p.is_lossless());
    let e = p.check(DType::I32).unwrap_err().to_string();
    assert!(e.contains("float16, bfloat16, float32 or float64"), "{e}");
}

#[test]
fn random_data_within_documented_bounds() {
    let mut r = Rng(7);
    // Odd lengths: a partial last block and (int4, nf4) a padding nibble.
    let v: Vec<f64> = (0..10_001).map(|_| r.normal() * 0.05).collect();
    for (code, name) in CODES {
        for block in [16usize, 64, 4096] {
            let spec = format!("{name}:block={block}");
            check_bounds::<f32>(&spec, code, block, &v);
            check_bounds::<f32>(&format!("{spec}+zstd"), code, block, &v);
        }
        let spec = format!("{name}:block=64");
        check_bounds::<f64>(&spec, code, 64, &v);
        check_bounds::<half::f16>(&spec, code, 64, &v);
        check_bounds::<half::bf16>(&spec, code, 64, &v);
        check_bounds::<f32>(&spec, code, 64, &v[..1]);
        check_bounds::<f32>(&spec, code, 64, &v[..65]);
        check_bounds::<f32>(&spec, code, 64, &[]);
    }
}

#[test]
fn adversarial_blocks_within_bounds() {
    let mut r = Rng(11);
    let mut v: Vec<f64> = (0..64 * 8).map(|_| r.normal() * 1e-3).collect();
    v[..64].fill(0.0); // an all-zero block
    v[64..128].iter_mut().for_each(|x| *x = -*x * 0.0); // all -0.0
    v[130] = 3.0e38; // one huge outlier: only its own block loses precision
    v[200] = -1e-40; // a subnormal alone in a block of zeros
    v[192..256].iter_mut().for_each(|x| *x = 0.0);
    v[200] = -1e-40;
    v[256..320].fill(0.25); // a constant block: nf4 decodes it exactly (scale 0.25, code 15)
    v[320..384]
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i as f64 - 32.0) * 1e30);
    for (code, name) in CODES {
        let spec = format!("{name}:block=64");
        check_bounds::<f32>(&spec, code, 64, &v);
        let p = Pipeline::parse(&spec).unwrap();
        let data = bytes_of::<f32>(&v);
        let enc = p
            .encode(DType::F32, &[v.len() as u64], &data, None)
            .unwrap();
        let mut out = vec![0u8; data.len()];
        p.decode(DType::F32, &[v.len() as u64], &enc, None, &mut out)
            .unwrap();
        let got = values_of::<f32>(&out);
        if code == Code::Nf4 {
            assert_eq!(
                &got[256..320],
                &v[256..320],
                "{spec}: a constant block is exact"
            );
        }
        // The outlier's neighbours in other blocks keep their own precision.
        let small = bound(code, v[384..448].iter().fold(0f64, |m, x| m.max(x.abs())));
        for i in 384..448 {
            assert!((got[i] - v[i]).abs() <= small + 1e-12, "{spec} {i}");
        }
    }
}

#[test]
fn non_finite_input_is_refused_naming_the_element() {
    for (_, name) in CODES {
        for (bad, shown) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "inf"),
            (f32::NEG_INFINITY, "-inf"),
        ] {
            let mut v = vec![0.5f32; 300];
            v[137] = bad;
            let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let p = Pipeline::parse(&format!("{name}:block=64")).unwrap();
            let e = p.encode(DType::F32, &[300], &data, None).unwrap_err();
            assert_eq!(e.kind(), Kind::Codec);
            let msg = e.to_string();
            assert!(msg.contains("element 137") && msg.contains(shown), "{msg}");
            // Behind a sparse stage, the element is still the tensor-wide index.
            let p = Pipeline::parse(&format!("topk:0.5+{name}:block=16")).unwrap();
            let msg = p
                .encode(DType::F32, &[300], &data, None)
                .unwrap_err()
                .to_string();
            assert!(msg.contains("element 137"), "{msg}");
        }
    }
}

#[test]
fn stored_bytes_are_pinned() {
    // 3 float32 values in one block of 16: scale, then codes (int4/nf4: low nibble first).
    let data: Vec<u8> = [1.0f32, -0.5, 0.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let body = |spec: &str| {
        let enc = Pipeline::parse(spec)
            .unwrap()
            .encode(DType::F32, &[3], &data, None)
            .unwrap();
        assert_eq!(&enc[..4], &MAGIC);
        assert_eq!(u32::from_le_bytes(enc[4..8].try_into().unwrap()), 1 << 18);
        let len = u32::from_le_bytes(enc[8..12].try_into().unwrap()) as usize;
        assert_eq!(enc.len(), 12 + len);
        enc[12..].to_vec()
    };
    let scale = |max: f64, levels: f64| {
        absmax_scale(max, levels, "test")
            .unwrap()
            .to_le_bytes()
            .to_vec()
    };
    // int8: 1.0 → 127, −0.5 → −63 (just above −63.5, the scale rounding up), 0 → 0.
    assert_eq!(
        body("int8:block=16"),
        [scale(1.0, 127.0), vec![127, 0xC1, 0]].concat()
    );
    // int4: 1.0 → 7, −0.5 → −3 (0xD), 0 → 0; value 0 low, value 1 high, then 0 and a
    // zero padding nibble.
    assert_eq!(
        body("int4:block=16"),
        [scale(1.0, 7.0), vec![0xD7, 0x00]].concat()
    );
    // nf4: scale 1.0; 1.0 → code 15, −0.5 → code 2 (−0.5251), 0 → code 7.
    assert_eq!(
        body("nf4:block=16"),
        [1f32.to_le_bytes().to_vec(), vec![0x2F, 0x07]].concat()
    );
}

#[test]
fn hostile_stored_bytes_are_refused_without_panic() {
    let mut r = Rng(5);
    let n = 70_001usize;
    let v: Vec<f64> = (0..n).map(|_| r.normal() * 0.02).collect();
    let data = bytes_of::<f32>(&v);
    let base = bytes_of::<f32>(&v.iter().map(|x| x * 0.5).collect::<Vec<_>>());
    let shape = [n as u64];
    for spec in [
        "int8:block=64",
        "int4:block=64",
        "nf4:block=64",
        "int4:block=16+zstd",
        "nf4+lz4",
        "delta+topk:0.1+int4+zstd",
        "threshold:0.01+nf4:block=32",
    ] {
        let p = Pipeline::parse(spec).unwrap();
        let b = p.needs_base().then_some(&base[..]);
        let enc = p.encode(DType::F32, &shape, &data, b).unwrap();
        let mut out = vec![0u8; data.len()];
        p.decode(DType::F32, &shape, &enc, b, &mut out).unwrap();
        for cut in [0, 7, 8, 11, 12, 16, enc.len() / 2, enc.len() - 1] {
            let e = p
                .decode(DType::F32, &shape, &enc[..cut], b, &mut out)
                .unwrap_err();
            assert_eq!(e.kind(), Kind::Integrity, "{spec} cut {cut}: {e}");
        }
        let mut longer = enc.clone();
        longer.push(0);
        assert!(p.decode(DType::F32, &shape, &longer, b, &mut out).is_err());
        // A block size that is not a multiple of the values per scale.
        let mut bad = enc.clone();
        bad[4..8].copy_from_slice(&(1u32 << 18 | 8).to_le_bytes());
        let e = p.decode(DType::F32, &shape, &bad, b, &mut out).unwrap_err();
        assert_eq!(e.kind(), Kind::Integrity, "{spec}: {e}");
        for _ in 0..300 {
            let mut bad = enc.clone();
            let i = (r.next() as usize) % bad.len();
            bad[i] ^= 1 << (r.next() % 8);
            let _ = p.decode(DType::F32, &shape, &bad, b, &mut out);
        }
    }
    // Uncompressed dense blocks: a bad scale and a set padding nibble are named.
    let p = Pipeline::parse("int4:block=16").unwrap();
    let shape = [33u64];
    let data = bytes_of::<f32>(&v[..33]);
    let enc = p.encode(DType::F32, &shape, &data, None).unwrap();
    let mut out = vec![0u8; data.len()];
    let scales_at = 12;
    for s in [f32::NAN, f32::INFINITY, -1.0] {
        let mut bad = enc.clone();
        bad[scales_at + 4..scales_at + 8].copy_from_slice(&s.to_le_bytes());
        let e = p
            .decode(DType::F32, &shape, &bad, None, &mut out)
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Integrity);
        assert!(e.to_string().contains("scale 1"), "{e}");
    }
    let mut bad = enc.clone();
    *bad.last_mut().unwrap() |= 0x10;
    let e = p
        .decode(DType::F32, &shape, &bad, None, &mut out)
        .unwrap_err();
    assert!(e.to_string().contains("padding nibble"), "{e}");
}
