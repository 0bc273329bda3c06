//! Tests of the aggregation core: means, robust methods, refusals, transactional adds.

use super::stream::Verdict;
use super::*;
use crate::format::{parse, prepare, EncodeOptions, Layout, TensorInput, TensorView};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn payload_with(tensors: &[(&str, Vec<f32>)], codec: &str, metadata: Option<&str>) -> Vec<u8> {
    let bytes: Vec<(Vec<u8>, Vec<u64>)> = tensors
        .iter()
        .map(|(_, v)| (f32_bytes(v), vec![v.len() as u64]))
        .collect();
    let inputs: Vec<TensorInput<'_>> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, _), (data, shape))| TensorInput {
            tensor: TensorView {
                name,
                dtype: DType::F32,
                shape,
                data,
            },
            codec,
            base: None,
        })
        .collect();
    let opts = EncodeOptions {
        metadata,
        ..Default::default()
    };
    let p = prepare(&inputs, &opts).unwrap();
    let mut out = vec![0u8; p.total_len()];
    p.write_into(&mut out).unwrap();
    out
}

fn payload(tensors: &[(&str, Vec<f32>)], codec: &str) -> Vec<u8> {
    payload_with(tensors, codec, None)
}

fn round(names: &[(&str, usize)], base_id: Option<[u8; 32]>) -> Round {
    let specs = names
        .iter()
        .map(|(n, len)| TensorSpec {
            name: n.to_string(),
            dtype: DType::F32,
            shape: vec![*len as u64],
        })
        .collect();
    Round::new(specs, base_id).unwrap()
}

fn opts() -> Options {
    Options {
        verify: true,
        ..Options::default()
    }
}

/// Contributions of payloads against `r` (weights 1), numbered from 0.
fn contributions<'a>(r: &Round, parsed: &'a [(Vec<u8>, Layout)]) -> Vec<Contribution<'a>> {
    parsed
        .iter()
        .enumerate()
        .map(|(id, (buf, layout))| {
            let source = Source::Payload { buf, layout };
            let index = r.check(&source, Kind::Model, None).unwrap();
            Contribution {
                id,
                source,
                kind: Kind::Model,
                weight: 1.0,
                index,
            }
        })
        .collect()
}

fn parsed(blobs: Vec<Vec<u8>>) -> Vec<(Vec<u8>, Layout)> {
    blobs
        .into_iter()
        .map(|b| {
            let l = parse(&b).unwrap();
            (b, l)
        })
        .collect()
}

fn run(r: &Round, ups: &[Contribution<'_>], o: &Options, skip: bool) -> (Outcome, Vec<Vec<f32>>) {
    let mut outs: Vec<Vec<u8>> = r.tensors().iter().map(|s| vec![0u8; s.nbytes()]).collect();
    let outcome = aggregate(
        r,
        None,
        ups,
        outs.iter_mut().map(|o| &mut o[..]).collect(),
        o,
        skip,
    )
    .unwrap();
    (outcome, outs.iter().map(|o| f32_of(o)).collect())
}

#[test]
fn weighted_average_of_payloads_any_codec() {
    let blobs = parsed(vec![
        payload(&[("w", vec![1.0, 2.0, 3.0]), ("b", vec![10.0])], "raw"),
        payload(
            &[("b", vec![20.0]), ("w", vec![3.0, 4.0, 5.0])],
            "shuffle+zstd",
        ),
    ]);
    let r = round(&[("w", 3), ("b", 1)], None);
    let mut ups = contributions(&r, &blobs);
    ups[1].weight = 3.0;
    let (outcome, out) = run(&r, &ups, &opts(), false);
    assert!(outcome.computed && outcome.refused.is_empty());
    assert_eq!(out, vec![vec![2.5, 3.5, 4.5], vec![17.5]]);
}

#[test]
fn mismatches_are_explained() {
    let a = payload(&[("w", vec![1.0, 2.0])], "raw");
    let la = parse(&a).unwrap();
    let r = round(&[("w", 3), ("b", 1)], None);
    let source = Source::Payload {
        buf: &a,
        layout: &la,
    };
    let why = r.check(&source, Kind::Model, None).unwrap_err();
    assert!(why.contains("tensor \"w\" is float32[2]"), "{why}");
    assert!(why.contains("missing tensor \"b\""), "{why}");
    let why = r
        .check(&source, Kind::Difference([1; 32]), Some(Kind::Model))
        .unwrap_err();
    assert!(why.contains("cannot be averaged together"), "{why}");
    let rb = round(&[("w", 2)], Some([7; 32]));
    let why = rb
        .check(&source, Kind::Difference([1; 32]), None)
        .unwrap_err();
    assert!(why.contains("the round's base is"), "{why}");
}

#[test]
fn base_differences_clipping_and_integers() {
    let base = f32_bytes(&[1.0, 1.0]);
    let r = round(&[("w", 2)], Some([7; 32]));
    let model = f32_bytes(&[4.0, 5.0]); // d = (3, 4), norm 5
    let diff = f32_bytes(&[0.0, 1.0]); // d = (0, 1), norm 1
    let view = |data| TensorView {
        name: "w",
        dtype: DType::F32,
        shape: &[2],
        data,
    };
    let (mv, dv) = ([view(&model)], [view(&diff)]);
    let ups = vec![
        Contribution {
            id: 0,
            source: Source::Tensors(&mv),
            kind: Kind::Model,
            weight: 1.0,
            index: vec![0],
        },
        Contribution {
            id: 1,
            source: Source::Tensors(&dv),
            kind: Kind::Difference([7; 32]),
            weight: 1.0,
            index: vec![0],
        },
    ];
    let mut out = vec![0u8; 8];
    let o = Options {
        clip_norm: Some(2.5),
        ..opts()
    };
    let rep = aggregate(&r, Some(&[&base]), &ups, vec![&mut out], &o, false).unwrap();
    assert_eq!(rep.norms, vec![5.0, 1.0]);
    assert_eq!(rep.scales, vec![0.5, 1.0]);
    // base + ((1.5, 2) + (0, 1)) / 2
    assert_eq!(f32_of(&out), vec![1.75, 2.5]);

    // Streaming gives the same, and integers round half to even.
    let mut acc = Accumulator::new(r.clone(), o).unwrap();
    for u in &ups {
        assert!(matches!(
            acc.add(u, Some(&[&base])).unwrap(),
            Verdict::Added { .. }
        ));
    }
    let mut out2 = vec![0u8; 8];
    acc.finish_into(Some(&[&base]), vec![&mut out2]).unwrap();
    assert_eq!(out, out2);

    let ri = Round::new(
        vec![TensorSpec {
            name: "n".into(),
            dtype: DType::I64,
            shape: vec![2],
        }],
        None,
    )
    .unwrap();
    let x: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let y: Vec<u8> = [2i64, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let iview = |data| TensorView {
        name: "n",
        dtype: DType::I64,
        shape: &[2],
        data,
    };
    let (xs, ys) = ([iview(&x)], [iview(&y)]);
    let ups: Vec<Contribution<'_>> = [&xs, &ys]
        .iter()
        .enumerate()
        .map(|(id, v)| Contribution {
            id,
            source: Source::Tensors(*v),
            kind: Kind::Model,
            weight: 1.0,
            index: vec![0],
        })
        .collect();
    let mut out = vec![0u8; 16];
    aggregate(&ri, None, &ups, vec![&mut out], &opts(), false).unwrap();
    let got: Vec<i64> = out
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, vec![2, 4]); // 1.5 -> 2, 3.5 -> 4
}

/// The sums' bytes after adding `blobs` to a fresh accumulator, and each verdict.
fn sums_after(
    r: &Round,
    o: Options,
    blobs: &[(Vec<u8>, Layout)],
) -> (Vec<Vec<u8>>, Vec<Result<Verdict>>) {
    let mut acc = Accumulator::new(r.clone(), o).unwrap();
    let verdicts = contributions(r, blobs)
        .iter()
        .map(|c| acc.add(c, None))
        .collect();
    let mut outs: Vec<Vec<u8>> = r.tensors().iter().map(|s| vec![0u8; s.nbytes()]).collect();
    if acc.count() > 0 {
        acc.finish_into(None, outs.iter_mut().map(|o| &mut o[..]).collect())
            .unwrap();
    }
    (outs, verdicts)
}

#[test]
fn a_refused_or_bad_update_leaves_the_sums_bit_identical() {
    let r = round(&[("a", 3), ("w", 4)], None);
    let honest: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let v = i as f32 * 0.1 + 0.3;
            payload(&[("a", vec![v, 1.0 / 3.0, -v]), ("w", vec![v; 4])], "zstd")
        })
        .collect();
    // inf in one tensor, corrupt zstd (with a valid checksum) in the other: an attacker's.
    let mut bad = payload(
        &[("a", vec![f32::INFINITY, 0.0, 0.0]), ("w", vec![9.0; 4])],
        "zstd",
    );
    let lb = parse(&bad).unwrap();
    let w = lb.entries[1].clone();
    let mut stored = bad[w.start..w.start + w.length].to_vec();
    let last = stored.len() - 2;
    stored[last] ^= 0x55;
    bad[w.start..w.start + w.length].copy_from_slice(&stored);
    let forged = forge_hashes(&bad);
    // 1e38 in every tensor: finite, but it would erase the honest updates in float32.
    let huge = payload(&[("a", vec![1e38; 3]), ("w", vec![1e38; 4])], "raw");
    let nan = payload(
        &[("a", vec![0.0, f32::NAN, 0.0]), ("w", vec![0.0; 4])],
        "raw",
    );
    for (evil, o) in [
        (forged.clone(), opts()),
        (forged, Options::default()),
        (nan.clone(), opts()),
        (
            nan,
            Options {
                clip_norm: Some(1.0),
                ..opts()
            },
        ),
        (
            huge.clone(),
            Options {
                max_norm: Some(100.0),
                ..opts()
            },
        ),
    ] {
        let (clean, _) = sums_after(&r, o, &parsed(honest.clone()));
        for at in 0..=3 {
            let mut blobs = honest.clone();
            blobs.insert(at, evil.clone());
            let (sums, verdicts) = sums_after(&r, o, &parsed(blobs));
            let rejected = &verdicts[at];
            assert!(
                matches!(rejected, Err(_) | Ok(Verdict::Refused(_))),
                "{rejected:?}"
            );
            assert!(sums == clean, "the sums changed (update at {at})");
        }
    }
}

/// Recompute every tensor hash and the header hash of `blob`, as an attacker would.
pub(super) fn forge_hashes(blob: &[u8]) -> Vec<u8> {
    let l = parse_unverified(blob);
    let header_len = u64::from_le_bytes(blob[16..24].try_into().unwrap()) as usize;
    let mut text = String::from_utf8(blob[64..64 + header_len].to_vec()).unwrap();
    for e in &l {
        let h = crate::format::hex32(blake3::hash(&blob[e.0..e.0 + e.1]).as_bytes());
        text = text.replacen(&e.2, &h, 1);
    }
    let mut out = blob.to_vec();
    out[64..64 + header_len].copy_from_slice(text.as_bytes());
    let mut h = blake3::Hasher::new();
    h.update(&out[..32]);
    h.update(&out[64..64 + header_len]);
    out[32..64].copy_from_slice(h.finalize().as_bytes());
    out
}

/// (start, length, stored hash hex) of every tensor, from the header alone.
fn parse_unverified(blob: &[u8]) -> Vec<(usize, usize, String)> {
    let header_len = u64::from_le_bytes(blob[16..24].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&blob[64..64 + header_len]).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                64 + header_len + t["offset"].as_u64().unwrap() as usize,
                t["length"].as_u64().unwrap() as usize,
                t["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn non_finite_updates_and_overflow_are_refused() {
    let r = round(&[("w", 2)], None);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for o in [
            opts(),
            Options {
                scratch_out: true,
                ..opts()
            },
            Options {
                clip_norm: Some(1.0),
                ..opts()
            },
        ] {
            let blobs = parsed(vec![
                payload(&[("w", vec![1.0, 2.0])], "raw"),
                payload(&[("w", vec![bad, 0.0])], "shuffle+zstd"),
            ]);
            let ups = contributions(&r, &blobs);
            let (outcome, out) = run(&r, &ups, &o, true);
            assert_eq!(outcome.refused.len(), 1, "{bad}");
            assert!(
                outcome.refused[0].1.contains("element 0"),
                "{:?}",
                outcome.refused
            );
            let norm = 5f32.sqrt();
            let expected = match o.clip_norm {
                Some(_) => vec![1.0 / norm, 2.0 / norm],
                None => vec![1.0, 2.0],
            };
            assert_eq!(out[0], expected);
            let (outcome, _) = run(&r, &ups, &o, false);
            assert!(!outcome.computed);
        }
    }
    // Two finite 1e38s would overflow float32 sums (the limit keeps half the range as
    // headroom for rounding): the second is refused; float64 sums take both, and 3e38s.
    let blobs = parsed(vec![
        payload(&[("w", vec![1e38, 1.0])], "raw"),
        payload(&[("w", vec![1e38, 1.0])], "zstd"),
        payload(&[("w", vec![3e38, 1.0])], "lz4"),
    ]);
    let ups = contributions(&r, &blobs);
    let (outcome, out) = run(&r, &ups, &opts(), true);
    let ids: Vec<usize> = outcome.refused.iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![1, 2], "{outcome:?}");
    assert!(
        outcome
            .refused
            .iter()
            .all(|(_, why)| why.contains("overflow")),
        "{outcome:?}"
    );
    assert_eq!(out[0], vec![1e38, 1.0]);
    let o64 = Options {
        precision: Precision::Float64,
        ..opts()
    };
    let (outcome, out) = run(&r, &ups, &o64, false);
    assert!(outcome.refused.is_empty());
    assert_eq!(out[0], vec![(5e38f64 / 3.0) as f32, 1.0]);
    // max_norm refuses, clip_norm scales.
    let blobs = parsed(vec![
        payload(&[("w", vec![3.0, 4.0])], "raw"),
        payload(&[("w", vec![0.0, 1.0])], "raw"),
    ]);
    let ups = contributions(&r, &blobs);
    let o = Options {
        max_norm: Some(2.0),
        ..opts()
    };
    let (outcome, out) = run(&r, &ups, &o, true);
    assert_eq!(outcome.refused.len(), 1);
    assert!(outcome.refused[0].1.contains("max_norm"), "{outcome:?}");
    assert_eq!(out[0], vec![0.0, 1.0]);
}

#[test]
fn a_refused_round_leaves_the_callers_out_as_it_was() {
    let r = round(&[("w", 2)], None);
    let blobs = parsed(vec![
        payload(&[("w", vec![1.0, 2.0])], "raw"),
        payload(&[("w", vec![f32::NAN, 0.0])], "raw"),
    ]);
    let ups = contributions(&r, &blobs);
    let before = f32_bytes(&[7.0, 7.0]);
    for scratch_out in [false, true] {
        let mut out = before.clone();
        let o = Options {
            scratch_out,
            ..opts()
        };
        let outcome = aggregate(&r, None, &ups, vec![&mut out[..]], &o, false).unwrap();
        assert!(!outcome.computed && outcome.refused.len() == 1);
        // Scratch may be written (the one-pass mean); the caller's own `out` may not.
        assert_eq!(out == before, !scratch_out, "scratch_out={scratch_out}");
    }
}

#[test]
fn the_same_payload_twice_counts_once() {
    let h0 = payload(&[("w", vec![1.0])], "raw");
    let h1 = payload(&[("w", vec![1.5])], "raw");
    let r = round(&[("w", 1)], None);
    let blobs = parsed(vec![h0.clone(), h0.clone(), h1]);
    let ups = contributions(&r, &blobs);
    let (outcome, out) = run(&r, &ups, &opts(), true);
    assert_eq!(outcome.refused.len(), 1);
    assert_eq!(outcome.refused[0].0, 1);
    assert!(outcome.refused[0].1.contains("same payload as update 0"));
    assert_eq!(out[0], vec![1.25]);
    let (_, verdicts) = sums_after(&r, opts(), &blobs);
    assert!(
        matches!(verdicts[1], Ok(Verdict::Refused(_))),
        "{:?}",
        verdicts[1]
    );
}

/// Element-wise reference of a robust statistic over rows.
fn reference(rows: &[Vec<f32>], method: Method) -> Vec<f32> {
    (0..rows[0].len())
        .map(|i| {
            let mut col: Vec<f64> = rows.iter().map(|r| r[i] as f64).collect();
            col.sort_by(f64::total_cmp);
            let n = col.len();
            match method {
                Method::Median if n % 2 == 1 => col[n / 2] as f32,
                Method::Median => ((col[n / 2 - 1] + col[n / 2]) / 2.0) as f32,
                Method::TrimmedMean(b) => {
                    let k = (b * n as f64).floor() as usize;
                    (col[k..n - k].iter().sum::<f64>() / (n - 2 * k) as f64) as f32
                }
                Method::Mean => unreachable!(),
            }
        })
        .collect()
}

#[test]
fn median_and_trimmed_mean_match_a_reference_across_codecs_and_blocks() {
    // Large enough for several windows and codec blocks, with the tail of each.
    let n = (1 << 20) / 4 * 3 + 777;
    let mut seed = 7u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let rows: Vec<Vec<f32>> = (0..7).map(|_| (0..n).map(|_| next()).collect()).collect();
    let codecs = [
        "raw",
        "shuffle+zstd",
        "lz4",
        "floatzip",
        "raw",
        "zstd",
        "shuffle+lz4",
    ];
    let blobs = parsed(
        rows.iter()
            .zip(codecs)
            .map(|(r, c)| payload(&[("w", r.clone()), ("s", vec![r[1] - 1.0, r[2]])], c))
            .collect(),
    );
    let r = round(&[("w", n), ("s", 2)], None);
    for m in [
        Method::Median,
        Method::TrimmedMean(0.2),
        Method::TrimmedMean(0.0),
    ] {
        for count in [7, 6] {
            let ups = contributions(&r, &blobs[..count]);
            let (outcome, out) = run(
                &r,
                &ups,
                &Options {
                    method: m,
                    ..opts()
                },
                false,
            );
            assert!(outcome.computed);
            let want = reference(&rows[..count], m);
            let wrong = out[0].iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "{m:?} of {count}: {wrong} elements differ");
            let second: Vec<Vec<f32>> = rows.iter().map(|r| vec![r[1] - 1.0, r[2]]).collect();
            assert_eq!(
                out[1],
                reference(&second[..count], m),
                "{m:?}: the second tensor"
            );
        }
    }
    // The weights do not count; a streaming aggregator does not do medians.
    assert!(Accumulator::new(
        r,
        Options {
            method: Method::Median,
            ..opts()
        }
    )
    .is_err());
}

#[test]
fn robust_methods_keep_many_small_coded_tensors_apart() {
    // Every tensor is one codec block (block 0): a worker must not take one tensor's
    // decoded block for another's.
    let names: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let rows: Vec<Vec<Vec<f32>>> = (0..5)
        .map(|u| {
            (0..40)
                .map(|t| (0..3).map(|e| (u * 7 + t * 3 + e) as f32 * 0.5).collect())
                .collect()
        })
        .collect();
    let blobs = parsed(
        rows.iter()
            .zip(["zstd", "lz4", "shuffle+zstd", "floatzip", "zstd"])
            .map(|(r, c)| {
                let ts: Vec<(&str, Vec<f32>)> = names
                    .iter()
                    .map(|n| n.as_str())
                    .zip(r.iter().cloned())
                    .collect();
                payload(&ts, c)
            })
            .collect(),
    );
    let specs: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 3)).collect();
    let r = round(&specs, None);
    let ups = contributions(&r, &blobs);
    let (_, out) = run(
        &r,
        &ups,
        &Options {
            method: Method::Median,
            ..opts()
        },
        false,
    );
    for (t, got) in out.iter().enumerate() {
        let col: Vec<Vec<f32>> = rows.iter().map(|r| r[t].clone()).collect();
        assert_eq!(got, &reference(&col, Method::Median), "tensor {t}");
    }
}

#[test]
fn update_records_carry_checked_weights() {
    let meta = r#"{"tensorwire.update": {"samples": 1e39}}"#;
    let blob = payload_with(&[("w", vec![1.0])], "raw", Some(meta));
    let l = parse(&blob).unwrap();
    let err = UpdateRecord::from_metadata(l.metadata.as_deref().unwrap()).unwrap_err();
    assert!(err.contains("2^53"), "{err}");
}

#[test]
fn bad_options_weights_and_dtypes_are_refused() {
    let r = Round::new(
        vec![TensorSpec {
            name: "m".into(),
            dtype: DType::Bool,
            shape: vec![1],
        }],
        None,
    );
    assert!(matches!(r, Err(ref x) if x.kind() == crate::error::Kind::Input));
    let r = round(&[("w", 1)], None);
    let mut out = vec![0u8; 4];
    let err = aggregate(&r, None, &[], vec![&mut out], &opts(), false).unwrap_err();
    assert!(err.to_string().contains("nothing to average"));
    for bad in [Some(-1.0), Some(f64::NAN), Some(f64::INFINITY)] {
        let o = Options {
            clip_norm: bad,
            ..opts()
        };
        assert!(Accumulator::new(r.clone(), o).is_err());
        let o = Options {
            max_norm: bad,
            ..opts()
        };
        assert!(Accumulator::new(r.clone(), o).is_err());
    }
    let blobs = parsed(vec![payload(&[("w", vec![1.0])], "raw")]);
    let mut ups = contributions(&r, &blobs);
    for w in [f64::NAN, -1.0, 1e39] {
        ups[0].weight = w;
        let err = aggregate(&r, None, &ups, vec![&mut out], &opts(), false).unwrap_err();
        assert!(err.to_string().starts_with("update 0: weight"), "{err}");
    }
    assert!(Method::parse("trimmed_mean:0.5").is_err());
    assert!(Method::parse("trimmed_mean:x").is_err());
    assert_eq!(
        Method::parse("trimmed_mean:0.1").unwrap(),
        Method::TrimmedMean(0.1)
    );
}
