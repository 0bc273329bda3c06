//! Tests of the reassembler: order, duplicates, corruption, forgeries, bounds, expiry.

use super::*;
use crate::chunk::fixtures::{bad_chunks, chunks_of, container, reseal, Rng};
use crate::chunk::ChunkPlan;

fn reassembler(limits: Limits) -> Reassembler {
    Reassembler::new(limits).unwrap()
}

#[test]
fn round_trip_any_order_with_duplicates() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..60 {
        let len = match case % 4 {
            0 => rng.below(10) as usize,
            1 => rng.below(1000) as usize,
            _ => rng.below(20_000) as usize,
        };
        let payload = rng.bytes(len);
        let max_bytes = CHUNK_HEADER_LEN as u64 + 1 + rng.below(3000);
        let chunks = chunks_of(&payload, max_bytes, case as u8);
        assert!(chunks.iter().all(|c| c.len() as u64 <= max_bytes));
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        order.extend((0..chunks.len()).filter(|_| rng.below(4) == 0));
        rng.shuffle(&mut order);
        let mut r = reassembler(Limits::default());
        let mut done = None;
        for &i in &order {
            if let Some(p) = r.add(&chunks[i], 1.0).unwrap() {
                assert!(done.is_none(), "returned twice");
                done = Some(p);
            }
        }
        assert_eq!(done.as_deref(), Some(&payload[..]), "case {case}");
        assert_eq!(r.pending_bytes(), 0);
        assert!(r.pending().is_empty());
    }
}

#[test]
fn interleaved_payloads() {
    let mut rng = Rng(7);
    let payloads: Vec<Vec<u8>> = (0..8).map(|i| rng.bytes(1000 + 777 * i)).collect();
    let mut all: Vec<(usize, Vec<u8>)> = payloads
        .iter()
        .enumerate()
        .flat_map(|(i, p)| chunks_of(p, 200, i as u8).into_iter().map(move |c| (i, c)))
        .collect();
    rng.shuffle(&mut all);
    let mut r = reassembler(Limits::default());
    let mut got = vec![None; payloads.len()];
    for (i, c) in &all {
        if let Some(p) = r.add(c, 0.5).unwrap() {
            got[*i] = Some(p);
        }
    }
    for (g, p) in got.iter().zip(&payloads) {
        assert_eq!(g.as_ref(), Some(p));
    }
    assert_eq!(r.stats().completed, payloads.len() as u64);
}

#[test]
fn large_chunks_use_the_parallel_checksum() {
    let payload = Rng(5).bytes(5 << 20);
    let chunks = chunks_of(&payload, 2 << 20, 6);
    let mut r = reassembler(Limits::default());
    let mut bad = chunks[1].clone();
    bad[CHUNK_HEADER_LEN + (1 << 20) + 3] ^= 4;
    assert!(r.add(&chunks[2], 0.0).unwrap().is_none());
    assert!(matches!(r.add(&bad, 0.0), Err(ref x) if x.kind() == crate::error::Kind::Integrity));
    assert!(r.add(&chunks[1], 0.0).unwrap().is_none());
    assert!(matches!(r.add(&bad, 0.0), Err(ref x) if x.kind() == crate::error::Kind::Integrity));
    assert_eq!(r.add(&chunks[0], 0.0).unwrap(), Some(payload));
}

#[test]
fn header_errors() {
    let chunks = chunks_of(&[5u8; 1000], 300, 3);
    let mut r = reassembler(Limits::default());
    for (bytes, integrity, text) in bad_chunks(&chunks[1]) {
        let e = r.add(&bytes, 0.0).unwrap_err();
        assert_eq!(
            (e.kind() == crate::error::Kind::Integrity),
            integrity,
            "{e}"
        );
        assert!(e.to_string().contains(text), "{e:?} lacks {text:?}");
    }
    assert_eq!(r.stats().rejected, 10);
    assert!(r.pending().is_empty());
}

#[test]
fn corrupt_chunk_rejected_others_kept() {
    let a = chunks_of(&[1u8; 5000], 1000, 1);
    let b = chunks_of(&[2u8; 5000], 1000, 2);
    let mut r = reassembler(Limits::default());
    for c in &a[1..] {
        assert!(r.add(c, 0.0).unwrap().is_none());
    }
    for c in &b[1..] {
        assert!(r.add(c, 0.0).unwrap().is_none());
    }
    // A bit flip in the body of a new chunk, and in an already received one.
    for c in [&a[0], &b[2]] {
        let mut bad = c.clone();
        bad[CHUNK_HEADER_LEN + 10] ^= 0x40;
        let e = r.add(&bad, 0.0).unwrap_err();
        assert!((e.kind() == crate::error::Kind::Integrity), "{e}");
    }
    assert_eq!(r.pending().len(), 2);
    assert_eq!(r.add(&a[0], 0.0).unwrap(), Some(vec![1u8; 5000]));
    assert_eq!(r.add(&b[0], 0.0).unwrap(), Some(vec![2u8; 5000]));
}

#[test]
fn forged_bodies_are_held_and_the_one_that_verifies_wins() {
    let payload = Rng(3).bytes(4000);
    let chunks = chunks_of(&payload, 1000, 4);
    let forge = |i: usize, flip: u8| {
        let mut f = chunks[i].clone();
        f[CHUNK_HEADER_LEN] ^= flip;
        reseal(&mut f);
        f
    };
    for verify in [true, false] {
        let limits = Limits {
            verify,
            ..Limits::default()
        };
        // After the real one, or before it: either way the real payload comes out.
        for forged_first in [false, true] {
            let mut r = reassembler(limits);
            let order: Vec<Vec<u8>> = if forged_first {
                std::iter::once(forge(2, 0xff))
                    .chain(chunks.iter().cloned())
                    .collect()
            } else {
                chunks[..3]
                    .iter()
                    .cloned()
                    .chain([forge(2, 0xff)])
                    .chain(chunks[3..].iter().cloned())
                    .collect()
            };
            let mut done = None;
            for c in &order {
                done = done.or(r.add(c, 0.0).unwrap());
            }
            assert_eq!(
                done.as_deref(),
                Some(&payload[..]),
                "forged first: {forged_first}"
            );
            assert_eq!(r.stats().conflicts, 1);
            assert_eq!(r.pending_bytes(), 0);
        }
    }
    // Several forged indices, each before its real chunk.
    let mut r = reassembler(Limits::default());
    for i in [0, 1, 3] {
        assert_eq!(r.add(&forge(i, 0x55), 0.0).unwrap(), None);
    }
    let mut done = None;
    for c in &chunks {
        done = done.or(r.add(c, 0.0).unwrap());
    }
    assert_eq!(done.as_deref(), Some(&payload[..]));
    // Beyond MAX_ALTERNATES bodies, a conflicting chunk is refused.
    let mut r = reassembler(Limits::default());
    r.add(&chunks[2], 0.0).unwrap();
    for k in 1..=MAX_ALTERNATES as u8 {
        assert_eq!(r.add(&forge(2, k), 0.0).unwrap(), None);
    }
    let e = r.add(&forge(2, 0x80), 0.0).unwrap_err();
    assert!(e.to_string().contains("differs"), "{e}");
    // Only forged bodies for an index: the payload completes, fails, and is dropped.
    let other = chunks_of(b"another payload, pending", 100, 5);
    let mut r = reassembler(Limits::default());
    r.add(&other[0], 0.0).unwrap();
    r.add(&forge(2, 0xff), 0.0).unwrap();
    let mut err = None;
    for (i, c) in chunks.iter().enumerate() {
        if i != 2 {
            if let Err(e) = r.add(c, 0.0) {
                err = Some(e);
            }
        }
    }
    let e = err.expect("verification fails");
    assert!((e.kind() == crate::error::Kind::Integrity), "{e}");
    assert!(e.to_string().contains("digest"), "{e}");
    assert_eq!(r.stats().failed, 1);
    assert_eq!(r.pending().len(), 1, "the other payload is still pending");
    let mut done = None;
    for c in &other[1..] {
        done = done.or(r.add(c, 0.0).unwrap());
    }
    assert_eq!(done.as_deref(), Some(&b"another payload, pending"[..]));
}

#[test]
fn other_geometries_under_one_id_are_kept_apart() {
    let real = chunks_of(&[1u8; 3000], 1000, 9);
    let forged: Vec<Vec<Vec<u8>>> = (0..6u64)
        .map(|k| chunks_of(&vec![2 + k as u8; 4000 + 100 * k as usize], 1000, 9))
        .collect();
    let mut r = reassembler(Limits::default());
    // A forger's first chunks of other geometries, before and between the real ones.
    for f in &forged[..4] {
        assert_eq!(r.add(&f[1], 0.0).unwrap(), None);
    }
    let mut done = None;
    for (t, x) in real.iter().enumerate() {
        done = done.or(r.add(x, 1.0 + t as f64).unwrap());
        r.add(&forged[4 + t % 2][0], 1.5 + t as f64).unwrap();
    }
    assert_eq!(done, Some(vec![1u8; 3000]));
    assert!(r.pending().len() <= MAX_VARIANTS);
    // The other geometries are their own payloads, and complete as such.
    let mut done = None;
    for x in &forged[5] {
        done = done.or(r.add(x, 9.0).unwrap());
    }
    assert_eq!(done, Some(vec![7u8; 4500]));
}

#[test]
fn a_forged_body_in_a_streamed_container_costs_nothing() {
    // Streamed chunks carry no digest: a forger can match their geometry exactly.
    let (blob, _) = container(21);
    let layout = crate::format::parse(&blob).unwrap();
    let mut chunks = chunks_of(&blob, 300, 8);
    for c in &mut chunks {
        c[52..84].fill(0); // as encode_chunks sends them
        reseal(c);
    }
    // A forged body for tensor 3's first chunk, with a valid CRC.
    let target = layout.entries[3].start / 212;
    let mut forged = chunks[target].clone();
    forged[CHUNK_HEADER_LEN + 5] ^= 1;
    reseal(&mut forged);
    for verify in [true, false] {
        let mut r = reassembler(Limits {
            verify,
            ..Limits::default()
        });
        r.add(&forged, 0.0).unwrap();
        let mut done = None;
        for c in &chunks {
            done = done.or(r.add(c, 0.0).unwrap());
        }
        assert_eq!(done.as_deref(), Some(&blob[..]));
    }
}

#[test]
fn missing_chunk_expires() {
    let chunks = chunks_of(&[7u8; 3000], 1000, 1);
    let mut r = reassembler(Limits {
        timeout: 10.0,
        ..Limits::default()
    });
    r.add(&chunks[0], 100.0).unwrap();
    r.add(&chunks[1], 105.0).unwrap();
    assert!(
        r.evict_expired(114.0).is_empty(),
        "activity at 105 keeps it"
    );
    assert_eq!(r.pending().len(), 1);
    assert_eq!(r.pending()[0].received, 2);
    assert_eq!(r.evict_expired(115.5), vec![[1u8; 16]]);
    assert!(r.pending().is_empty());
    assert_eq!(r.pending_bytes(), 0);
    assert_eq!(r.stats().expired, 1);
    // Expiry also happens lazily on add.
    r.add(&chunks[0], 200.0).unwrap();
    let other = chunks_of(&[1u8; 300], 100, 2);
    r.add(&other[0], 300.0).unwrap();
    assert_eq!(r.pending().len(), 1);
    assert_eq!(r.pending()[0].payload_id, [2u8; 16]);
}

#[test]
fn late_duplicates_of_finished_payloads_are_ignored() {
    let chunks = chunks_of(&[7u8; 3000], 1000, 1);
    let mut r = reassembler(Limits::default());
    let mut done = 0;
    for c in chunks.iter().chain(&chunks) {
        done += r.add(c, 0.0).unwrap().is_some() as usize;
    }
    assert_eq!(done, 1);
    assert!(r.pending().is_empty());
    assert_eq!(r.stats().duplicates, chunks.len() as u64);
}

#[test]
fn pending_bound_under_a_flood() {
    let limit = 50_000;
    for when_full in [WhenFull::EvictOldest, WhenFull::Refuse] {
        let mut r = reassembler(Limits {
            max_pending_bytes: limit,
            when_full,
            ..Limits::default()
        });
        let mut refused = 0;
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let payload = vec![i as u8; 3000];
            let plan = ChunkPlan::new(&payload, 1000, Some(id), None).unwrap();
            let first = plan.to_vecs(&payload).swap_remove(0);
            match r.add(&first, i as f64 * 1e-3) {
                Ok(None) => {}
                Ok(Some(_)) => panic!("cannot be complete"),
                Err(e) => {
                    assert!(e.to_string().contains("no room"), "{e}");
                    refused += 1;
                }
            }
            assert!(r.pending_bytes() <= limit);
        }
        let held = r.pending().len();
        assert!(held > 10 && held < 20, "{held}");
        match when_full {
            WhenFull::EvictOldest => {
                assert_eq!(refused, 0);
                assert_eq!(r.stats().evicted, 1000 - held as u64);
                // The newest survive.
                assert_eq!(
                    r.pending().last().unwrap().payload_id[..4],
                    999u32.to_le_bytes()
                );
            }
            WhenFull::Refuse => {
                assert_eq!(refused, 1000 - held);
                assert_eq!(r.pending()[0].payload_id[..4], 0u32.to_le_bytes());
            }
        }
    }
}

#[test]
fn payload_limit() {
    let chunks = chunks_of(&[0u8; 5000], 1000, 1);
    let mut r = reassembler(Limits {
        max_payload_bytes: 4999,
        ..Limits::default()
    });
    let e = r.add(&chunks[0], 0.0).unwrap_err();
    assert!(e.to_string().contains("max_payload_bytes"), "{e}");
    // A forged huge total is refused before anything is allocated.
    let mut forged = chunks[4].clone();
    forged[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    forged[32..40].copy_from_slice(&((u32::MAX as u64 - 1) * 912 + 1).to_le_bytes());
    forged[40..48].copy_from_slice(&((u32::MAX as u64 - 1) * 912).to_le_bytes());
    forged[48..52].copy_from_slice(&1u32.to_le_bytes());
    forged.truncate(CHUNK_HEADER_LEN + 1);
    forged[24..28].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    reseal(&mut forged);
    let e = r
        .add_with(&forged, 0.0, |_| panic!("must not allocate"))
        .unwrap_err();
    assert!(e.to_string().contains("max_payload_bytes"), "{e}");
}

#[test]
fn bad_clock_and_timeout() {
    let mut r = reassembler(Limits::default());
    assert!(r.add(b"x", f64::NAN).is_err());
    assert!(Reassembler::<Vec<u8>>::new(Limits {
        timeout: 0.0,
        ..Limits::default()
    })
    .is_err());
}

#[test]
fn containers_are_verified_by_their_own_checksums() {
    let (payload, _) = container(11);
    let plan = ChunkPlan::new(&payload, 500, None, None).unwrap();
    assert_eq!(plan.kind, PayloadKind::Container);
    let mut chunks = plan.to_vecs(&payload);
    let mut r = reassembler(Limits::default());
    let mut done = None;
    for c in chunks.iter().rev() {
        done = done.or(r.add(c, 0.0).unwrap());
    }
    assert_eq!(done.as_deref(), Some(&payload[..]));
    // A forged byte in the data section fails the tensor's checksum...
    let last = chunks.len() - 1;
    chunks[last][CHUNK_HEADER_LEN] ^= 1;
    reseal(&mut chunks[last]);
    let mut r = reassembler(Limits::default());
    let results: Vec<_> = chunks.iter().map(|c| r.add(c, 0.0)).collect();
    let e = results.into_iter().last().unwrap().unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    // ...which verify=false leaves to decode, while the header is still checked.
    let mut r = reassembler(Limits {
        verify: false,
        ..Limits::default()
    });
    let mut done = None;
    for c in &chunks {
        done = done.or(r.add(c, 0.0).unwrap());
    }
    assert!(done.is_some());
    chunks[0][CHUNK_HEADER_LEN + 70] ^= 1;
    reseal(&mut chunks[0]);
    let mut r = reassembler(Limits {
        verify: false,
        ..Limits::default()
    });
    let results: Vec<_> = chunks.iter().map(|c| r.add(c, 0.0)).collect();
    let e = results.into_iter().last().unwrap().unwrap_err();
    assert!(e.to_string().contains("header checksum"), "{e}");
}
