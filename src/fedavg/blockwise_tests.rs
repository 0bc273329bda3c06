//! Coded updates surveyed and added one codec block at a time (`Source::for_each_block`):
//! bit for bit what decoding each tensor whole gives, and still transactional.

use super::stream::Verdict;
use super::tests::forge_hashes;
use super::*;
use crate::format::{parse, prepare, EncodeOptions, Layout, TensorInput, TensorView};

/// Elements of the large tensor: three codec blocks of 1 MiB of float32 (the last short).
const BIG: usize = 700_000;
const SMALL: usize = 1000;

fn values(seed: u32, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            scale * ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        })
        .collect()
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The round of the two tensors, against `base`.
fn round(base: &[Vec<u8>; 2]) -> Round {
    let spec = |name: &str, n: usize| TensorSpec {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![n as u64],
    };
    Round::new(
        vec![spec("big", BIG), spec("small", SMALL)],
        Some(base_id(base)),
    )
    .unwrap()
}

fn base_id(base: &[Vec<u8>; 2]) -> [u8; 32] {
    let shapes = [[BIG as u64], [SMALL as u64]];
    let views: Vec<TensorView<'_>> = ["big", "small"]
        .iter()
        .enumerate()
        .map(|(i, name)| TensorView {
            name,
            dtype: DType::F32,
            shape: &shapes[i],
            data: &base[i],
        })
        .collect();
    crate::format::tensors_id(&views)
}

/// A payload of the two tensors coded with `codec` (deltas against `base`).
fn encoded(t: &[Vec<u8>; 2], codec: &str, base: &[Vec<u8>; 2]) -> Vec<u8> {
    let shapes = [[BIG as u64], [SMALL as u64]];
    let delta = codec.starts_with("delta");
    let inputs: Vec<TensorInput<'_>> = ["big", "small"]
        .iter()
        .enumerate()
        .map(|(i, name)| TensorInput {
            tensor: TensorView {
                name,
                dtype: DType::F32,
                shape: &shapes[i],
                data: &t[i],
            },
            codec,
            base: delta.then_some(&base[i][..]),
        })
        .collect();
    let id = crate::format::hex32(&base_id(base));
    let opts = EncodeOptions {
        base_id: delta.then_some(&id[..]),
        ..Default::default()
    };
    let p = prepare(&inputs, &opts).unwrap();
    let mut out = vec![0u8; p.total_len()];
    p.write_into(&mut out).unwrap();
    out
}

fn model(seed: u32) -> [Vec<u8>; 2] {
    [
        bytes(&values(seed, BIG, 2.0)),
        bytes(&values(seed + 1, SMALL, 2.0)),
    ]
}

fn contribution<'a>(r: &Round, source: Source<'a>, id: usize, weight: f64) -> Contribution<'a> {
    let index = r.check(&source, Kind::Model, None).unwrap();
    Contribution {
        id,
        source,
        kind: Kind::Model,
        weight,
        index,
    }
}

/// The sums' bytes, as a partial aggregate holds them (without its ids: tensors given
/// in memory have no content id).
fn sums(acc: &Accumulator) -> Vec<Vec<u8>> {
    let w = acc.partial(&Extras::default()).unwrap();
    let p = w.prepare("raw", None).unwrap();
    let mut out = vec![0u8; p.total_len()];
    p.write_into(&mut out).unwrap();
    let l = parse(&out).unwrap();
    (0..2).map(|j| l.stored(&out, j).to_vec()).collect()
}

fn verdict(v: Verdict) -> (u64, u64) {
    match v {
        Verdict::Added { norm, scale } => (norm.to_bits(), scale.to_bits()),
        Verdict::Refused(why) => panic!("refused: {why}"),
    }
}

#[test]
fn coded_tensors_are_read_block_by_block() {
    let base = model(1);
    let blob = encoded(&model(2), "int8", &base);
    let layout = parse(&blob).unwrap();
    let source = Source::Payload {
        buf: &blob,
        layout: &layout,
    };
    let (mut starts, mut scratch) = (Vec::new(), Vec::new());
    let blockwise = source
        .for_each_block(0, &mut scratch, None, true, kernels::BLOCK, |at, x| {
            starts.push((at, x.len()))
        })
        .unwrap();
    assert!(blockwise);
    assert_eq!(
        starts,
        [
            (0, 1 << 20),
            (262_144, 1 << 20),
            (524_288, 4 * (BIG - 524_288))
        ]
    );
    assert_eq!(
        scratch.len(),
        1 << 20,
        "one block of scratch, not the tensor"
    );
}

#[test]
fn blockwise_adds_equal_whole_decoded_adds_bit_for_bit() {
    let base = model(1);
    let r = round(&base);
    let base_refs: Vec<&[u8]> = base.iter().map(|b| &b[..]).collect();
    for codec in [
        "int8",
        "shuffle+zstd",
        "f16+zstd",
        "delta+topk:0.01+f16+zstd",
        "delta+int8",
    ] {
        for clip_norm in [None, Some(50.0)] {
            let o = Options {
                clip_norm,
                verify: true,
                ..Options::default()
            };
            let mut fused = Accumulator::new(r.clone(), o).unwrap();
            let mut whole = Accumulator::new(r.clone(), o).unwrap();
            for u in 0..3u32 {
                let local = model(10 + 2 * u);
                let blob = encoded(&local, codec, &base);
                let layout: Layout = parse(&blob).unwrap();
                let weight = 1.0 + u as f64;
                // What the whole-tensor path decodes: each tensor into memory, added in place.
                let decoded: Vec<Vec<u8>> = (0..2)
                    .map(|j| {
                        let mut out = vec![0u8; layout.entries[j].nbytes];
                        let b = base_of(&r, Some(&base_refs), j);
                        layout.decode_into(&blob, j, &mut out, b, true).unwrap();
                        out
                    })
                    .collect();
                let views: Vec<TensorView<'_>> = r
                    .tensors()
                    .iter()
                    .zip(&decoded)
                    .map(|(s, d)| TensorView {
                        name: &s.name,
                        dtype: s.dtype,
                        shape: &s.shape,
                        data: d,
                    })
                    .collect();
                let payload = Source::Payload {
                    buf: &blob,
                    layout: &layout,
                };
                let a = fused.add(&contribution(&r, payload, 0, weight), Some(&base_refs));
                let b = whole.add(
                    &contribution(&r, Source::Tensors(&views), 0, weight),
                    Some(&base_refs),
                );
                assert_eq!(
                    verdict(a.unwrap()),
                    verdict(b.unwrap()),
                    "{codec} {clip_norm:?}: norm and scale"
                );
            }
            assert!(
                sums(&fused) == sums(&whole),
                "{codec} {clip_norm:?}: the sums"
            );
        }
    }
}

#[test]
fn a_bad_late_block_leaves_the_sums_bit_identical() {
    let base = model(1);
    let r = round(&base);
    let base_refs: Vec<&[u8]> = base.iter().map(|b| &b[..]).collect();
    let honest = encoded(&model(3), "shuffle+zstd", &base);
    // A NaN in the last block of the large tensor: refused once the survey gets there.
    let mut nan = values(4, BIG, 2.0);
    nan[650_000] = f32::NAN;
    let nan = encoded(&[bytes(&nan), model(4)[1].clone()], "shuffle+zstd", &base);
    // Garbage for codec data at the end of the last block, its checksums forged to match.
    let mut corrupt = encoded(&model(5), "zstd", &base);
    let e = parse(&corrupt).unwrap().entries[0].clone();
    corrupt[e.start + e.length - 2000..e.start + e.length].fill(0xAB);
    let corrupt = forge_hashes(&corrupt);
    for verify in [true, false] {
        let o = Options {
            verify,
            ..Options::default()
        };
        let mut acc = Accumulator::new(r.clone(), o).unwrap();
        let l = parse(&honest).unwrap();
        let ok = acc.add(
            &contribution(
                &r,
                Source::Payload {
                    buf: &honest,
                    layout: &l,
                },
                0,
                1.0,
            ),
            Some(&base_refs),
        );
        assert!(matches!(ok, Ok(Verdict::Added { .. })));
        let before = sums(&acc);
        for (what, evil) in [("NaN", &nan), ("corrupt", &corrupt)] {
            let l = parse(evil).unwrap();
            let source = Source::Payload {
                buf: evil,
                layout: &l,
            };
            let got = acc.add(&contribution(&r, source, 1, 1.0), Some(&base_refs));
            assert!(
                matches!(got, Err(_) | Ok(Verdict::Refused(_))),
                "{what}: {got:?}"
            );
            if what == "NaN" {
                let Ok(Verdict::Refused(why)) = got else {
                    panic!("{got:?}")
                };
                assert!(why.contains("element 650000"), "{why}");
            }
            assert!(
                sums(&acc) == before,
                "{what}, verify={verify}: the sums changed"
            );
            assert_eq!(acc.count(), 1);
        }
    }
}
