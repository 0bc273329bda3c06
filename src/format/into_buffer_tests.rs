//! Encoding into the caller's memory: exact sizes for raw tensors under every option,
//! bounds for every codec (on values that compress and on values that do not), reused
//! buffers, and buffers too small, written nowhere past the payload.

use super::*;
use crate::dtype::DType;
use crate::format::write::Encrypt;
use crate::format::{parse_with, TensorView};
use crate::trust::{Signing, Verifier};

fn input<'a>(name: &'a str, shape: &'a [u64], data: &'a [u8], codec: &'a str) -> TensorInput<'a> {
    TensorInput {
        tensor: TensorView {
            name,
            dtype: DType::F32,
            shape,
            data,
        },
        codec,
        base: None,
    }
}

/// Smooth values (they compress) and pseudo-random bits (they do not).
fn floats(n: usize, noisy: bool) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .flat_map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = if noisy {
                f32::from_bits(x as u32 & 0xBF7F_FFFF)
            } else {
                (i as f32 * 0.01).sin()
            };
            v.to_le_bytes()
        })
        .collect()
}

const CODECS: [&str; 16] = [
    "zstd",
    "zstd:19",
    "lz4",
    "shuffle",
    "shuffle+zstd:3",
    "shuffle+lz4",
    "floatzip",
    "f16",
    "bf16+zstd",
    "f16+floatzip",
    "int8",
    "int8:channel+zstd",
    "topk:0.01",
    "threshold:0.5+f16+zstd",
    "topk:0.9+shuffle+lz4",
    "auto",
];

#[test]
fn raw_sizes_are_exact_under_every_option() {
    let (a, b) = (floats(1000, false), floats(3, true));
    let inputs = [
        input("a", &[10, 100], &a, "raw"),
        input("b", &[3], &b, "raw"),
    ];
    let key = [7u8; 32];
    let sk = [9u8; 32];
    let both = Signing::new(Some(&key), Some(&sk));
    let signed = Signing::new(None, Some(&sk));
    let structure = r#"{"dict":[["x",{"list":[0,1]}]]}"#;
    let options = [
        EncodeOptions::default(),
        EncodeOptions {
            metadata: Some(r#"{"round":3,"who":"\u00e9"}"#),
            ..Default::default()
        },
        EncodeOptions {
            base_id: Some(&"ab".repeat(32)),
            ..Default::default()
        },
        EncodeOptions {
            auth: Some(&signed),
            ..Default::default()
        },
        EncodeOptions {
            auth: Some(&both),
            encrypt: Encrypt::Tensors,
            ..Default::default()
        },
        EncodeOptions {
            auth: Some(&both),
            encrypt: Encrypt::All,
            metadata: Some("[1,2]"),
            ..Default::default()
        },
    ];
    let mut buffer = vec![0u8; 1 << 16];
    for opts in options.iter().chain([&EncodeOptions {
        structure: Some(structure),
        ..Default::default()
    }]) {
        let size = encoded_size(&inputs, opts).unwrap();
        assert!(size.exact);
        buffer.fill(0xAA);
        let n = encode_into(&inputs, opts, &mut buffer).unwrap();
        assert_eq!(size.bytes, n, "{opts:?}");
        let mut accepting = Verifier::default();
        if opts.auth.is_some_and(|a| a.key.is_some()) {
            accepting.add_key(&key);
        }
        let layout = parse_with(&buffer[..n], &accepting).unwrap();
        layout.verify(&buffer[..n], None).unwrap();
    }
}

#[test]
fn coded_sizes_bound_what_is_written() {
    for noisy in [false, true] {
        // more than one block, and a short last one
        let a = floats((1 << 18) + 1000, noisy);
        let b = floats(7, noisy);
        let shape_a = [a.len() as u64 / 4];
        let mut buffer = vec![0u8; 4 << 20];
        for codec in CODECS {
            let inputs = [input("a", &shape_a, &a, codec), input("b", &[7], &b, codec)];
            let opts = EncodeOptions::default();
            let size = encoded_size(&inputs, &opts).unwrap();
            let n = encode_into(&inputs, &opts, &mut buffer).unwrap();
            assert!(
                size.bytes >= n,
                "{codec} noisy={noisy}: bound {} < {n}",
                size.bytes
            );
            if codec != "auto" {
                assert!(!size.exact, "{codec}");
            }
            let layout = crate::format::parse(&buffer[..n]).unwrap();
            layout.verify(&buffer[..n], None).unwrap();
        }
    }
}

#[test]
fn a_reused_buffer_holds_each_payload_in_turn() {
    let mut buffer = vec![0x55u8; 1 << 16];
    for round in 0..3u8 {
        let a: Vec<u8> = floats(2000, false).iter().map(|b| b ^ round).collect();
        let inputs = [input("a", &[2000], &a, "raw")];
        let n = encode_into(&inputs, &EncodeOptions::default(), &mut buffer).unwrap();
        let layout = crate::format::parse(&buffer[..n]).unwrap();
        let mut out = vec![0u8; a.len()];
        layout
            .decode_into(&buffer[..n], 0, &mut out, None, true)
            .unwrap();
        assert_eq!(out, a);
    }
}

#[test]
fn too_small_a_buffer_is_refused_and_written_nowhere() {
    let a = floats(1000, true);
    for codec in ["raw", "zstd"] {
        let inputs = [input("a", &[1000], &a, codec)];
        let opts = EncodeOptions::default();
        let mut whole = vec![0u8; 1 << 16];
        let need = encode_into(&inputs, &opts, &mut whole).unwrap();
        for short in [0, 1, need / 2, need - 1] {
            let mut guarded = vec![0xEEu8; need + 64];
            let err = encode_into(&inputs, &opts, &mut guarded[..short]).unwrap_err();
            assert!(matches!(err, Error::BufferTooSmall { .. }), "{err}");
            assert_eq!(err.buffer_sizes(), Some((need as u64, short as u64)));
            assert_eq!(err.kind(), crate::error::Kind::Input);
            assert!(guarded.iter().all(|&b| b == 0xEE), "{codec}: written");
        }
        // a larger buffer: only the payload's bytes are written
        let mut guarded = vec![0xEEu8; need + 64];
        assert_eq!(encode_into(&inputs, &opts, &mut guarded).unwrap(), need);
        assert!(guarded[need..].iter().all(|&b| b == 0xEE));
    }
}

#[test]
fn bad_inputs_are_refused_by_both() {
    let a = floats(10, false);
    let inputs = [input("a", &[11], &a, "raw")];
    let opts = EncodeOptions::default();
    assert!(encoded_size(&inputs, &opts).is_err());
    let inputs = [input("a", &[10], &a, "nope")];
    assert_eq!(
        encoded_size(&inputs, &opts).unwrap_err().tensor(),
        Some("a")
    );
    let inputs = [input("a", &[10], &a, "delta+zstd")];
    assert!(
        encoded_size(&inputs, &opts).is_ok(),
        "the base is not needed to size it"
    );
}
