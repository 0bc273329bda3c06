//! Decoding into the caller's memory all or nothing: every refusal, found before or
//! while decoding, leaves every output as it was.

use super::super::read::parse;
use super::super::write::{prepare, EncodeOptions, TensorInput};
use super::super::TensorView;
use crate::dtype::DType;

fn encode(inputs: &[TensorInput<'_>]) -> Vec<u8> {
    let prepared = prepare(inputs, &EncodeOptions::default()).unwrap();
    let mut out = vec![0u8; prepared.total_len()];
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

fn floats(n: usize, k: f32) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32 * k).to_le_bytes()).collect()
}

#[test]
fn every_tensor_lands_in_its_output() {
    let (a, b, c) = (floats(1000, 0.5), floats(300, 0.25), floats(5, 2.0));
    let blob = encode(&[
        input("a", &[1000], &a, "raw"),
        input("b", &[300], &b, "shuffle+zstd"),
        input("c", &[5], &c, "lz4"),
    ]);
    let layout = parse(&blob).unwrap();
    let (mut oa, mut ob, mut oc) = (vec![1u8; a.len()], vec![1u8; b.len()], vec![1u8; c.len()]);
    let jobs = vec![
        (0, &mut oa[..], None, None),
        (1, &mut ob[..], None, None),
        (2, &mut oc[..], None, None),
    ];
    layout.decode_all_or_nothing(&blob, jobs, true).unwrap();
    assert_eq!((oa, ob, oc), (a, b, c));
}

#[test]
fn a_refusal_writes_no_output() {
    let (a, b) = (floats(1000, 0.5), floats(300, 0.25));
    let base = floats(300, 0.0);
    let blob = encode(&[
        input("a", &[1000], &a, "raw"),
        TensorInput {
            base: Some(&base),
            ..input("b", &[300], &b, "delta+zstd")
        },
    ]);
    let layout = parse(&blob).unwrap();
    let untouched = |oa: &[u8], ob: &[u8]| oa.iter().chain(ob).all(|&x| x == 7);
    // the delta's base is missing: found while decoding, after the raw tensor passed
    let (mut oa, mut ob) = (vec![7u8; a.len()], vec![7u8; b.len()]);
    let jobs = vec![(0, &mut oa[..], None, None), (1, &mut ob[..], None, None)];
    let err = layout.decode_all_or_nothing(&blob, jobs, true).unwrap_err();
    assert_eq!(err.tensor(), Some("b"));
    assert!(untouched(&oa, &ob));
    // an output of the wrong size
    let mut short = vec![7u8; b.len() - 4];
    let jobs = vec![
        (0, &mut oa[..], None, None),
        (1, &mut short[..], None, None),
    ];
    assert_eq!(
        layout
            .decode_all_or_nothing(&blob, jobs, true)
            .unwrap_err()
            .tensor(),
        Some("b")
    );
    assert!(untouched(&oa, &short));
    // a corrupt byte in the coded tensor, seen by its checksum
    let mut bad = blob.clone();
    let at = layout.entries[1].start + 10;
    bad[at] ^= 1;
    let jobs = vec![(0, &mut oa[..], None, None), (1, &mut ob[..], None, None)];
    let err = layout.decode_all_or_nothing(&bad, jobs, true).unwrap_err();
    assert_eq!(err.tensor(), Some("b"));
    assert!(untouched(&oa, &ob));
}
