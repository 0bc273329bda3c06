//! Reading tests: round trips, streaming and in-memory writes alike, every flipped byte
//! and truncation, bad inputs, nesting limits.

use super::*;
use crate::format::preamble::ALIGN;
use crate::format::write::{prepare, EncodeOptions, TensorInput};
use crate::format::TensorView;

fn encode(inputs: &[TensorInput<'_>], opts: &EncodeOptions<'_>) -> Vec<u8> {
    let prepared = prepare(inputs, opts).unwrap();
    let mut out = vec![0xAAu8; prepared.total_len()]; // garbage: every byte must be written
    prepared.write_into(&mut out).unwrap();
    out
}

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

fn floats(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect()
}

#[test]
fn round_trip_raw_and_coded() {
    let (a, b) = (floats(1000), floats(3));
    let inputs = [
        input("a", &[10, 100], &a, "raw"),
        input("b", &[3], &b, "shuffle+zstd"),
    ];
    let blob = encode(
        &inputs,
        &EncodeOptions {
            metadata: Some("{\"k\":1}"),
            ..Default::default()
        },
    );
    let layout = parse(&blob).unwrap();
    layout.verify(&blob, None).unwrap();
    assert_eq!(layout.entries.len(), 2);
    assert_eq!(layout.metadata.as_deref(), Some("{\"k\":1}"));
    assert_eq!(layout.stored(&blob, 0), &a[..]);
    assert_eq!(layout.entries[0].start % ALIGN, 0);
    assert_eq!(layout.entries[1].start % ALIGN, 0);
    let mut out = vec![0u8; b.len()];
    layout.decode_into(&blob, 1, &mut out, None, true).unwrap();
    assert_eq!(out, b);
}

#[test]
fn write_to_matches_write_into() {
    let a = floats(77);
    let inputs = [input("a", &[77], &a, "raw"), input("z", &[0], &[], "lz4")];
    let blob = encode(&inputs, &EncodeOptions::default());
    let mut file = std::io::Cursor::new(Vec::new());
    prepare(&inputs, &EncodeOptions::default())
        .unwrap()
        .write_to(&mut file)
        .unwrap();
    assert_eq!(file.into_inner(), blob);
}

#[test]
fn every_flipped_byte_and_truncation_is_an_error() {
    let a = floats(20);
    let inputs = [
        input("a", &[20], &a, "raw"),
        input("b", &[5], &a[..20], "zstd"),
    ];
    let blob = encode(&inputs, &EncodeOptions::default());
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x40;
        let result = parse(&bad).and_then(|l| l.verify(&bad, None));
        assert!(result.is_err(), "flip at {i} went unnoticed");
    }
    for n in 0..blob.len() {
        assert!(
            parse(&blob[..n]).is_err(),
            "truncation to {n} went unnoticed"
        );
    }
}

#[test]
fn bad_inputs_are_refused() {
    let a = floats(4);
    let short = input("a", &[5], &a, "raw");
    assert!(matches!(
        prepare(&[short], &EncodeOptions::default()),
        Err(ref x) if x.kind() == crate::error::Kind::Input
    ));
    let dup = [input("a", &[4], &a, "raw"), input("a", &[4], &a, "raw")];
    assert!(matches!(
        prepare(&dup, &EncodeOptions::default()),
        Err(ref x) if x.kind() == crate::error::Kind::Input
    ));
    let bad_codec = input("a", &[4], &a, "gzip");
    match prepare(&[bad_codec], &EncodeOptions::default()) {
        Err(e) if e.kind() == crate::error::Kind::Codec => {
            assert_eq!(e.tensor(), Some("a"));
            assert!(
                e.to_string().contains("\"a\"") && e.to_string().contains("gzip"),
                "{e}"
            );
        }
        other => panic!("{:?}", other.map(|p| p.total_len())),
    }
    let opts = EncodeOptions {
        structure: Some("{\"list\":[1]}"),
        ..Default::default()
    };
    assert!(prepare(&[input("a", &[4], &a, "raw")], &opts).is_err());
}

#[test]
fn decode_with_wrong_output_size_is_refused() {
    let a = floats(4);
    let blob = encode(&[input("a", &[4], &a, "raw")], &EncodeOptions::default());
    let layout = parse(&blob).unwrap();
    let mut out = vec![0u8; 3];
    assert!(layout.decode_into(&blob, 0, &mut out, None, true).is_err());
}

#[test]
fn legal_nesting_round_trips_and_deeper_is_refused() {
    let a = floats(1);
    let mut structure = "0".to_string();
    for _ in 0..64 {
        structure = format!(r#"{{"dict":[["k",{structure}]]}}"#);
    }
    let meta = "[".repeat(128) + &"]".repeat(128);
    let opts = EncodeOptions {
        structure: Some(&structure),
        metadata: Some(&meta),
        ..Default::default()
    };
    let blob = encode(&[input("k", &[1], &a, "raw")], &opts);
    let layout = parse(&blob).unwrap();
    assert_eq!(layout.structure.as_deref(), Some(structure.as_str()));
    let deeper = format!("[{meta}]");
    let opts = EncodeOptions {
        metadata: Some(&deeper),
        ..Default::default()
    };
    assert!(matches!(
        prepare(&[input("k", &[1], &a, "raw")], &opts),
        Err(ref x) if x.kind() == crate::error::Kind::Input
    ));
}

#[test]
fn verifying_in_parts_covers_what_one_call_covers() {
    let a = floats(20);
    let inputs = [
        input("a", &[5], &a[..20], "zstd"),
        input("b", &[20], &a, "raw"),
    ];
    let blob = encode(&inputs, &EncodeOptions::default());
    let entries = parse(&blob).unwrap().entries;
    let padding = entries[0].start + entries[0].length; // a zero byte between the tensors
    assert!(padding < entries[1].start);
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x40;
        let Ok(layout) = parse(&bad) else { continue };
        let whole = layout.verify(&bad, None).is_err();
        let parts = layout.verify_padded(&bad, Some(&[0]), true).is_err()
            || layout.verify_padded(&bad, Some(&[1]), false).is_err();
        assert_eq!(whole, parts, "flip at {i}");
        if i == padding {
            assert!(whole && layout.verify(&bad, Some(&[0, 1])).is_ok());
            assert!(layout.verify_padded(&bad, Some(&[]), true).is_err());
        }
    }
}
