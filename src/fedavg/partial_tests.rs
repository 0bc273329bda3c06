//! Tests of partial aggregates: written and read back, merged exactly, refused whole.

use serde_json::{json, Value};

use super::partial::{IDS_NAME, NONCES_NAME, SIGNERS_NAME};
use super::*;
use crate::format::{parse, prepare, EncodeOptions, Layout, TensorInput, TensorView};

/// One tensor of a payload being made: name, dtype, shape, bytes, codec.
#[derive(Clone)]
struct Part {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    data: Vec<u8>,
    codec: &'static str,
}

fn build(parts: &[Part], metadata: Option<&str>) -> Vec<u8> {
    let inputs: Vec<TensorInput<'_>> = parts
        .iter()
        .map(|p| TensorInput {
            tensor: TensorView {
                name: &p.name,
                dtype: p.dtype,
                shape: &p.shape,
                data: &p.data,
            },
            codec: p.codec,
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

fn f32_part(name: &str, v: &[f32]) -> Part {
    Part {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![v.len() as u64],
        data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        codec: "raw",
    }
}

/// An update of two tensors, `a[3]` and `w[4]`, on a grid of 2^-8 (sums stay exact).
fn update(i: usize) -> Vec<u8> {
    let v = |k: usize| (((i * 7 + k * 13) % 41) as f32 - 18.0) / 256.0;
    let a: Vec<f32> = (0..3).map(v).collect();
    let w: Vec<f32> = (3..7).map(v).collect();
    build(&[f32_part("a", &a), f32_part("w", &w)], None)
}

fn round_aw(base: Option<[u8; 32]>) -> Round {
    let spec = |n: &str, len: u64| TensorSpec {
        name: n.into(),
        dtype: DType::F32,
        shape: vec![len],
    };
    Round::new(vec![spec("a", 3), spec("w", 4)], base).unwrap()
}

fn options(precision: Precision) -> Options {
    Options {
        verify: true,
        precision,
        ..Options::default()
    }
}

/// Add `blobs` (weights 1, 2, 3, ...) to `acc`.
fn add_all(acc: &mut Accumulator, blobs: &[Vec<u8>]) {
    for (i, b) in blobs.iter().enumerate() {
        let layout = parse(b).unwrap();
        let source = Source::Payload {
            buf: b,
            layout: &layout,
        };
        let index = acc.check(&source, Kind::Model).unwrap();
        let c = Contribution {
            id: i,
            source,
            kind: Kind::Model,
            weight: (i + 1) as f64,
            index,
        };
        assert!(matches!(
            acc.add(&c, None).unwrap(),
            stream::Verdict::Added { .. }
        ));
    }
}

fn partial_of(acc: &Accumulator, extras: &Extras<'_>) -> Vec<u8> {
    let w = acc.partial(extras).unwrap();
    let p = w.prepare("raw", None).unwrap();
    let mut out = vec![0u8; p.total_len()];
    p.write_into(&mut out).unwrap();
    out
}

fn read(buf: &[u8]) -> (Layout, std::result::Result<Partial, String>) {
    let layout = parse(buf).unwrap();
    let p = Partial::read(buf, &layout).unwrap();
    (layout, p)
}

/// Merge the partial in `buf`: its reason when refused (or unreadable).
fn merge(acc: &mut Accumulator, buf: &[u8]) -> Result<std::result::Result<(), String>> {
    let layout = parse(buf)?;
    let p = match Partial::read(buf, &layout)? {
        Ok(p) => p,
        Err(why) => return Ok(Err(why)),
    };
    acc.merge(&p, buf, &layout)
}

/// What an accumulator holds, bit for bit: its partial aggregate's bytes.
fn state(acc: &Accumulator) -> Vec<u8> {
    partial_of(acc, &Extras::default())
}

fn mean(acc: &Accumulator) -> Vec<Vec<u8>> {
    let mut outs: Vec<Vec<u8>> = acc
        .round()
        .tensors()
        .iter()
        .map(|s| vec![0u8; s.nbytes()])
        .collect();
    acc.finish_into(None, outs.iter_mut().map(|o| &mut o[..]).collect())
        .unwrap();
    outs
}

#[test]
fn merged_partials_equal_one_accumulator_over_all_the_updates() {
    let blobs: Vec<Vec<u8>> = (0..7).map(update).collect();
    for precision in [Precision::Auto, Precision::Float64] {
        let mut one = Accumulator::new(round_aw(None), options(precision)).unwrap();
        add_all(&mut one, &blobs);
        for cut in [
            vec![0, 7],
            vec![0, 3, 7],
            vec![0, 1, 2, 7],
            vec![0, 2, 4, 6, 7],
        ] {
            let mut top = Accumulator::new(round_aw(None), options(precision)).unwrap();
            for w in cut.windows(2) {
                let mut edge = Accumulator::new(round_aw(None), options(precision)).unwrap();
                // Weights as in `one`: the edge numbers its updates from 0.
                for (k, b) in blobs[w[0]..w[1]].iter().enumerate() {
                    let layout = parse(b).unwrap();
                    let source = Source::Payload {
                        buf: b,
                        layout: &layout,
                    };
                    let index = edge.check(&source, Kind::Model).unwrap();
                    let c = Contribution {
                        id: k,
                        source,
                        kind: Kind::Model,
                        weight: (w[0] + k + 1) as f64,
                        index,
                    };
                    edge.add(&c, None).unwrap();
                }
                merge(&mut top, &partial_of(&edge, &Extras::default()))
                    .unwrap()
                    .unwrap();
            }
            assert_eq!((top.count(), top.total_weight()), (7, 28.0));
            assert!(mean(&top) == mean(&one), "{precision:?} {cut:?}");
            assert!(state(&top) == state(&one), "{precision:?} {cut:?}");
        }
    }
}

#[test]
fn a_partial_says_what_it_holds() {
    let blobs: Vec<Vec<u8>> = (0..3).map(update).collect();
    let mut acc = Accumulator::new(round_aw(Some([7; 32])), options(Precision::Float64)).unwrap();
    let (mut o, r) = (options(Precision::Float64), round_aw(None));
    o.clip_norm = Some(10.0);
    let mut plain = Accumulator::new(r, o).unwrap();
    add_all(&mut plain, &blobs);
    let signers = [[3u8; 32], [1u8; 32]];
    let nonces = [[9u8; 16]];
    let extras = Extras {
        round: Some(4),
        signers: &signers,
        nonces: &nonces,
        structure: Some(r#"{"dict": [["a", 0], ["w", {"list": [1]}]]}"#),
    };
    let buf = partial_of(&plain, &extras);
    let (_, p) = read(&buf);
    let p = p.unwrap();
    assert_eq!((p.number, p.count, p.total_weight), (Some(4), 3, 6.0));
    assert_eq!(
        (p.precision, p.clip_norm, p.kind),
        (Precision::Float64, Some(10.0), Some(Kind::Model))
    );
    assert_eq!(p.signers, vec![[1u8; 32], [3u8; 32]], "sorted");
    assert_eq!((p.nonces.len(), p.content_ids.len()), (1, 3));
    assert!(p.structure.is_some() && p.round.base_id().is_none());
    assert!(p.bounds.iter().all(|&b| b > 0.0 && b < 10.0));
    // The same accumulator writes the same bytes.
    assert!(partial_of(&plain, &extras) == buf);
    // An accumulator with no updates: zero sums, no kind, and it merges as nothing.
    let (_, empty) = read(&state(&acc));
    let empty = empty.unwrap();
    assert_eq!(
        (empty.count, empty.kind, empty.round.base_id()),
        (0, None, Some(&[7; 32]))
    );
    let before = state(&acc);
    merge(
        &mut acc,
        &state(&Accumulator::new(round_aw(Some([7; 32])), options(Precision::Float64)).unwrap()),
    )
    .unwrap()
    .unwrap();
    assert!(state(&acc) == before);
    // A structure that does not fit the round is not written.
    let bad = Extras {
        structure: Some("[0]"),
        ..Extras::default()
    };
    assert!(plain.partial(&bad).is_err());
    // Nor are lossy sums.
    assert!(plain
        .partial(&Extras::default())
        .unwrap()
        .prepare("f16", None)
        .is_err());
    // A partial is not an update, and an update is not a partial.
    let meta = parse(&buf).unwrap().metadata.unwrap();
    assert!(UpdateRecord::from_metadata(&meta)
        .unwrap_err()
        .contains("partial aggregate"));
    let upd = build(
        &[f32_part("a", &[0.0; 3])],
        Some(r#"{"tensorwire.update": {"round": 1}}"#),
    );
    assert!(read(&upd).1.unwrap_err().contains("client update"));
    assert!(read(&update(0)).1.unwrap_err().contains("no metadata"));
}

#[test]
fn refused_partials_leave_the_sums_bit_identical() {
    let blobs: Vec<Vec<u8>> = (0..6).map(update).collect();
    let fresh = |o: Options| Accumulator::new(round_aw(None), o).unwrap();
    let mut acc = fresh(options(Precision::Auto));
    add_all(&mut acc, &blobs[..3]);
    let before = state(&acc);
    // The same update counted by another server.
    let mut dup = fresh(options(Precision::Auto));
    add_all(&mut dup, &blobs[2..5]);
    // Another precision, another clip norm, another base.
    let mut f64s = fresh(options(Precision::Float64));
    add_all(&mut f64s, &blobs[4..]);
    let mut clipped = fresh(Options {
        clip_norm: Some(1.0),
        ..options(Precision::Auto)
    });
    add_all(&mut clipped, &blobs[4..]);
    let based = Accumulator::new(round_aw(Some([1; 32])), options(Precision::Auto)).unwrap();
    // Another template.
    let spec = |n: &str, len: u64| TensorSpec {
        name: n.into(),
        dtype: DType::F32,
        shape: vec![len],
    };
    let other = Accumulator::new(
        Round::new(vec![spec("a", 3), spec("w", 5)], None).unwrap(),
        options(Precision::Auto),
    )
    .unwrap();
    for (buf, why) in [
        (state(&dup), "already counted"),
        (state(&f64s), "precision"),
        (state(&clipped), "clip_norm"),
        (state(&based), "base"),
        (state(&other), "tensor \"w\" is float32[5]"),
    ] {
        let got = merge(&mut acc, &buf).unwrap().unwrap_err();
        assert!(got.contains(why), "{why}: {got}");
        assert!(state(&acc) == before, "{why}");
    }
    // The same partial twice: its ids are counted after the first merge.
    let mut two = fresh(options(Precision::Auto));
    add_all(&mut two, &blobs[4..]);
    let p = state(&two);
    merge(&mut acc, &p).unwrap().unwrap();
    let after = state(&acc);
    assert!(merge(&mut acc, &p)
        .unwrap()
        .unwrap_err()
        .contains("already counted"));
    assert!(state(&acc) == after);
}

/// A partial's parts and record, to be altered and rebuilt, as an attacker would.
fn parts_of(buf: &[u8]) -> (Vec<Part>, Value) {
    let layout = parse(buf).unwrap();
    let parts = layout
        .entries
        .iter()
        .enumerate()
        .map(|(j, e)| Part {
            name: e.name.clone(),
            dtype: e.dtype,
            shape: e.shape.clone(),
            data: layout.stored(buf, j).to_vec(),
            codec: "raw",
        })
        .collect();
    let meta: Value = serde_json::from_str(layout.metadata.as_deref().unwrap()).unwrap();
    (parts, meta[PARTIAL_KEY].clone())
}

fn rebuilt(parts: &[Part], record: &Value) -> Vec<u8> {
    build(parts, Some(&json!({ PARTIAL_KEY: record }).to_string()))
}

#[test]
fn forged_partials_are_refused_whole() {
    let blobs: Vec<Vec<u8>> = (0..4).map(update).collect();
    let mut acc = Accumulator::new(round_aw(None), options(Precision::Auto)).unwrap();
    add_all(&mut acc, &blobs[..2]);
    let before = state(&acc);
    let mut edge = Accumulator::new(round_aw(None), options(Precision::Auto)).unwrap();
    add_all(&mut edge, &blobs[2..]);
    let nonces = [[5u8; 16]];
    let good = partial_of(
        &edge,
        &Extras {
            nonces: &nonces,
            ..Extras::default()
        },
    );
    let (parts, record) = parts_of(&good);
    type Forge = Box<dyn Fn(&mut Vec<Part>, &mut Value)>;
    let forgeries: Vec<(&str, Forge)> = vec![
        ("version", Box::new(|_, r| r["version"] = json!(2))),
        (
            "above 2^53",
            Box::new(|_, r| r["count"] = json!(1u64 << 60)),
        ),
        ("not valid", Box::new(|_, r| r["count"] = json!(1e6))),
        ("not valid", Box::new(|_, r| r["count"] = json!(-1))),
        (
            "total weight",
            Box::new(|_, r| r["total_weight"] = json!(-1.0)),
        ),
        (
            "total weight",
            Box::new(|_, r| r["total_weight"] = json!(1e300)),
        ),
        (
            "not valid",
            Box::new(|_, r| r["total_weight"] = Value::Null),
        ),
        ("bound", Box::new(|_, r| r["bounds"][0] = json!(1e39))),
        (
            "above the bound",
            Box::new(|_, r| r["bounds"][0] = json!(1e-3)),
        ),
        ("dtypes", Box::new(|_, r| r["dtypes"] = json!(["float32"]))),
        (
            "keeps float64",
            Box::new(|_, r| r["dtypes"][0] = json!("int32")),
        ),
        (
            "unknown dtype",
            Box::new(|_, r| r["dtypes"][0] = json!("float128")),
        ),
        (
            "cannot be averaged",
            Box::new(|_, r| r["dtypes"][0] = json!("bool")),
        ),
        (
            "accumulate",
            Box::new(|_, r| r["accumulate"] = json!("float16")),
        ),
        ("clip norm", Box::new(|_, r| r["clip_norm"] = json!(-1.0))),
        ("says they hold", Box::new(|_, r| r["kind"] = Value::Null)),
        ("\"kind\"", Box::new(|_, r| r["kind"] = json!("difference"))),
        ("hex", Box::new(|_, r| r["base"] = json!("xyz"))),
        (
            "structure",
            Box::new(|_, r| r["structure"] = json!("[0, 0]")),
        ),
        ("counted", Box::new(|_, r| r["count"] = json!(1))),
        (
            "twice",
            Box::new(|p, _| {
                let ids = p.iter_mut().find(|p| p.name == IDS_NAME).unwrap();
                let first = ids.data[..32].to_vec();
                ids.data[32..].copy_from_slice(&first);
            }),
        ),
        (
            "not stored raw",
            Box::new(|p, _| p.iter_mut().find(|p| p.name == NONCES_NAME).unwrap().codec = "zstd"),
        ),
        (
            "uint8[k, 32]",
            Box::new(|p, _| {
                let s = p.iter_mut().find(|p| p.name == SIGNERS_NAME).unwrap();
                s.shape = vec![0, 16];
            }),
        ),
        (
            "three id tensors",
            Box::new(|p, _| {
                p.pop();
            }),
        ),
        (
            "must be finite",
            Box::new(|p, _| p[1].data[4..8].copy_from_slice(&f32::NAN.to_le_bytes())),
        ),
    ];
    for (why, forge) in forgeries {
        let (mut p, mut r) = (parts.clone(), record.clone());
        forge(&mut p, &mut r);
        let got = merge(&mut acc, &rebuilt(&p, &r)).unwrap().expect_err(why);
        assert!(got.contains(why), "{why}: {got}");
        assert!(state(&acc) == before, "{why}");
    }
    // The same bytes, honestly rebuilt, merge (the forgeries above differ in one thing).
    merge(&mut acc, &rebuilt(&parts, &record)).unwrap().unwrap();
    assert_eq!(acc.count(), 4);
    // Sums that are finite and within their bounds, but would overflow once added.
    let huge = |id: u8| {
        let (mut p, mut r) = (parts.clone(), record.clone());
        p[0].data[..4].copy_from_slice(&1e38f32.to_le_bytes());
        r["bounds"][0] = json!(1e38);
        p.iter_mut()
            .find(|p| p.name == IDS_NAME)
            .unwrap()
            .data
            .fill(id);
        p.iter_mut().find(|p| p.name == IDS_NAME).unwrap().shape = vec![1, 32];
        p.iter_mut()
            .find(|p| p.name == IDS_NAME)
            .unwrap()
            .data
            .truncate(32);
        p.iter_mut()
            .find(|p| p.name == NONCES_NAME)
            .unwrap()
            .data
            .fill(id);
        rebuilt(&p, &r)
    };
    let mut top = Accumulator::new(round_aw(None), options(Precision::Auto)).unwrap();
    merge(&mut top, &huge(1)).unwrap().unwrap();
    let before = state(&top);
    let got = merge(&mut top, &huge(2)).unwrap().unwrap_err();
    assert!(got.contains("overflow"), "{got}");
    assert!(state(&top) == before);
}

#[test]
fn corrupt_partials_are_errors_and_change_nothing() {
    let mut acc = Accumulator::new(round_aw(None), options(Precision::Auto)).unwrap();
    add_all(&mut acc, &[update(0)]);
    let before = state(&acc);
    let mut edge = Accumulator::new(round_aw(None), options(Precision::Auto)).unwrap();
    add_all(&mut edge, &[update(1), update(2)]);
    let good = partial_of(&edge, &Extras::default());
    let layout = parse(&good).unwrap();
    let at = |j: usize| layout.entries[j].start;
    // A byte of a sum, of a content id, and of the padding: the checksums catch them.
    for pos in [at(0) + 1, at(2) + 5, at(0) + 13] {
        let mut bad = good.clone();
        bad[pos] ^= 0x40;
        assert!(merge(&mut acc, &bad).is_err(), "byte {pos}");
        assert!(state(&acc) == before);
    }
    // Every byte of the header: parse, read or merge refuses it, and nothing changes.
    for pos in 0..at(0) {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        assert!(!matches!(merge(&mut acc, &bad), Ok(Ok(()))), "byte {pos}");
    }
    assert!(state(&acc) == before);
}

#[test]
fn numbers_read_back_bit_for_bit() {
    // The record's numbers are compared and added exactly: serde_json must parse the
    // shortest round-trip form it writes back to the same bits (its float_roundtrip).
    let mut acc = Accumulator::new(round_aw(None), options(Precision::Auto)).unwrap();
    add_all(&mut acc, &[update(0), update(1)]);
    let (parts, record) = parts_of(&state(&acc));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = (x >> 11) as f64 / (1u64 << 53) as f64 * 1e6;
        let mut r = record.clone();
        r["total_weight"] = json!(v);
        let (_, p) = read(&rebuilt(&parts, &r));
        assert_eq!(p.unwrap().total_weight.to_bits(), v.to_bits(), "{v:?}");
    }
}
