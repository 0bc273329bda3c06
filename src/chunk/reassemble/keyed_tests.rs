//! Tests of a reassembler with keys: forged, foreign, altered and untagged chunks are
//! dropped before anything is touched; tagged chunks keep every other property.

use super::*;
use crate::chunk::fixtures::{chunks_of, container, reseal, tagged_chunks_of, Rng};
use crate::chunk::{ChunkPlan, ChunkStream, TAG_LEN};
use crate::error::Kind;

const KEY: u8 = 0x4b;

fn keyed(limits: Limits) -> Reassembler {
    Reassembler::with_keys(limits, &[[KEY; 32]]).unwrap()
}

/// Feeds `chunks` to `r`, every one accepted; the payload they complete.
fn feed(r: &mut Reassembler, chunks: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut done = None;
    for c in chunks {
        if let Some(p) = r.add(c, 1.0).unwrap() {
            assert!(done.is_none(), "returned twice");
            done = Some(p);
        }
    }
    done
}

/// What `r` holds: pending payloads, bytes charged, counters but `dropped`.
fn held(r: &Reassembler) -> (Vec<PendingInfo>, u64, Stats) {
    let stats = Stats {
        dropped: 0,
        ..r.stats()
    };
    (r.pending(), r.pending_bytes(), stats)
}

/// Adds `chunk` to `r`, which must drop it with an error of `kind` and change nothing.
fn dropped(r: &mut Reassembler, chunk: &[u8], kind: Kind) -> Error {
    let before = held(r);
    let n = r.stats().dropped;
    let e = r
        .add_with(chunk, 1.0, |_| panic!("a dropped chunk allocates nothing"))
        .unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    assert_eq!(r.stats().dropped, n + 1);
    assert_eq!(held(r), before, "a dropped chunk changed the reassembler");
    e
}

#[test]
fn tagged_chunks_keep_within_max_bytes_and_reassemble_in_any_order() {
    let mut rng = Rng(0x7a6);
    for case in 0..40u8 {
        let len = rng.below(20_000) as usize;
        let payload = rng.bytes(len);
        let max_bytes = (CHUNK_HEADER_LEN + TAG_LEN) as u64 + 1 + rng.below(3000);
        let chunks = tagged_chunks_of(&payload, max_bytes, case, KEY);
        assert!(chunks.iter().all(|c| c.len() as u64 <= max_bytes));
        assert!(chunks.iter().all(|c| c[6] == 1 && c[7] == 0));
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        order.extend((0..chunks.len()).filter(|_| rng.below(3) == 0));
        rng.shuffle(&mut order);
        let shuffled: Vec<Vec<u8>> = order.iter().map(|&i| chunks[i].clone()).collect();
        // With the key, and without one (accepted on the CRC, the tag skipped).
        let mut r = keyed(Limits::default());
        assert_eq!(feed(&mut r, &shuffled).as_deref(), Some(&payload[..]));
        assert_eq!((r.stats().dropped, r.pending_bytes()), (0, 0));
        let mut r = Reassembler::new(Limits::default()).unwrap();
        assert_eq!(feed(&mut r, &shuffled).as_deref(), Some(&payload[..]));
    }
    // The smallest chunk holds one byte of body.
    let min = (CHUNK_HEADER_LEN + TAG_LEN) as u64;
    let e = ChunkPlan::new(b"abc", min, None, Some(&[KEY; 32])).unwrap_err();
    assert!(e.to_string().contains("16-byte tag"), "{e}");
    assert_eq!(tagged_chunks_of(b"abc", min + 1, 1, KEY).len(), 3);
}

#[test]
fn untagged_output_is_unchanged() {
    let payload = Rng(9).bytes(3000);
    let chunks = chunks_of(&payload, 1000, 3);
    assert!(chunks.iter().all(|c| c[6] == 0));
    let tagged = tagged_chunks_of(&payload, 1000 + TAG_LEN as u64, 3, KEY);
    assert_eq!(chunks.len(), tagged.len());
    for (c, t) in chunks.iter().zip(&tagged) {
        // Same cut; only the flag, the CRC (it covers the flag) and the tag differ.
        assert_eq!(c[..6], t[..6]);
        assert_eq!(c[7..84], t[7..84]);
        assert_eq!(
            c[CHUNK_HEADER_LEN..],
            t[CHUNK_HEADER_LEN..t.len() - TAG_LEN]
        );
    }
}

#[test]
fn a_forgery_under_a_legitimate_payload_id_costs_it_nothing() {
    let payload = Rng(3).bytes(4000);
    let chunks = tagged_chunks_of(&payload, 1000, 4, KEY);
    // A forger who saw the payload id: other bodies, other geometries, other digests,
    // valid CRCs, tags made with another key or copied from a real chunk.
    let mut forgeries = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let mut f = c.clone();
        f[CHUNK_HEADER_LEN] ^= 0xff;
        reseal(&mut f);
        forgeries.push(f);
        let mut f = c.clone();
        f[52 + i] ^= 1; // the digest
        reseal(&mut f);
        forgeries.push(f);
    }
    forgeries.extend(tagged_chunks_of(&Rng(4).bytes(9000), 700, 4, 0x99));
    forgeries.extend(tagged_chunks_of(&Rng(5).bytes(4000), 1000, 4, 0x98));
    forgeries.extend(chunks_of(&Rng(6).bytes(4000), 984, 4));
    forgeries.extend(chunks_of(&[0u8; 100_000], 1 << 20, 4));
    for verify in [true, false] {
        let mut r = keyed(Limits {
            verify,
            max_pending_bytes: 8000,
            when_full: WhenFull::Refuse,
            ..Limits::default()
        });
        // The forgeries before, between and after the real chunks.
        for f in &forgeries {
            dropped(&mut r, f, Kind::Authentication);
        }
        let mut done = None;
        for (i, c) in chunks.iter().enumerate() {
            for f in forgeries.iter().skip(i).step_by(3) {
                dropped(&mut r, f, Kind::Authentication);
            }
            done = done.or(r.add(c, 1.0).unwrap());
        }
        assert_eq!(done.as_deref(), Some(&payload[..]));
        let s = r.stats();
        assert_eq!(
            (s.completed, s.conflicts, s.rejected, s.evicted),
            (1, 0, 0, 0)
        );
        assert!(s.dropped as usize > forgeries.len());
        assert_eq!(r.pending_bytes(), 0);
    }
}

#[test]
fn flipped_foreign_and_untagged_chunks_are_dropped() {
    let payload = Rng(8).bytes(5000);
    let chunks = tagged_chunks_of(&payload, 1200, 6, KEY);
    let mut r = keyed(Limits::default());
    r.add(&chunks[0], 1.0).unwrap();
    // A bit flipped anywhere in a tagged chunk: header, CRC, body or tag; with the
    // CRC recomputed or not.
    let c = &chunks[1];
    for at in (0..c.len()).step_by(7).chain([6, 84, c.len() - 1]) {
        for seal in [false, true] {
            let mut f = c.clone();
            f[at] ^= 0x10;
            let crc = CRC_AT..CHUNK_HEADER_LEN;
            if seal && f[..4] == c[..4] && !crc.contains(&at) && at < c.len() - TAG_LEN {
                reseal(&mut f);
            }
            let e = dropped(&mut r, &f, r_kind(&f));
            assert!(!e.to_string().is_empty());
        }
    }
    // Another key; no tag at all (the same chunk sent unkeyed); the tag cut off.
    let foreign = tagged_chunks_of(&payload, 1200, 6, KEY ^ 1);
    let e = dropped(&mut r, &foreign[1], Kind::Authentication);
    assert!(e.to_string().contains("matches none"), "{e}");
    let plain = chunks_of(&payload, 1200 - TAG_LEN as u64, 6);
    assert_eq!(
        plain[1][CHUNK_HEADER_LEN..],
        c[CHUNK_HEADER_LEN..c.len() - TAG_LEN]
    );
    let e = dropped(&mut r, &plain[1], Kind::Authentication);
    assert!(e.to_string().contains("not authenticated"), "{e}");
    let mut cut = c[..c.len() - TAG_LEN].to_vec();
    cut[6] = 0;
    reseal(&mut cut);
    dropped(&mut r, &cut, Kind::Authentication);
    dropped(&mut r, &c[..c.len() - 1], Kind::Integrity);
    dropped(&mut r, b"not a chunk", Kind::Format);
    // The real chunks still complete the payload, whatever came before.
    assert_eq!(feed(&mut r, &chunks[1..]).as_deref(), Some(&payload[..]));
    assert_eq!(r.stats().rejected, 0);
}

/// The kind of failure a keyed reassembler reports for the altered chunk `f`.
fn r_kind(f: &[u8]) -> Kind {
    match ChunkHeader::parse(f) {
        Ok(_) => Kind::Authentication,
        Err(e) => e.kind(),
    }
}

#[test]
fn any_of_several_keys_is_accepted() {
    let mut r = Reassembler::with_keys(Limits::default(), &[[1; 32], [KEY; 32]]).unwrap();
    assert_eq!(r.keys().len(), 2);
    let a = tagged_chunks_of(&[1u8; 3000], 1000, 1, 1);
    let b = tagged_chunks_of(&[2u8; 3000], 1000, 2, KEY);
    assert_eq!(feed(&mut r, &a), Some(vec![1u8; 3000]));
    assert_eq!(feed(&mut r, &b), Some(vec![2u8; 3000]));
    dropped(
        &mut r,
        &tagged_chunks_of(&[3u8; 300], 1000, 3, 2)[0],
        Kind::Authentication,
    );
    let none = Reassembler::<Vec<u8>>::with_keys(Limits::default(), &[]);
    assert!(matches!(none, Err(ref e) if e.kind() == Kind::Input));
}

#[test]
fn duplicates_expiry_and_limits_still_apply_to_tagged_chunks() {
    let chunks = tagged_chunks_of(&[7u8; 3000], 1000, 1, KEY);
    let mut r = keyed(Limits {
        timeout: 10.0,
        max_payload_bytes: 2999,
        ..Limits::default()
    });
    let e = r.add(&chunks[0], 1.0).unwrap_err();
    assert!(e.to_string().contains("max_payload_bytes"), "{e}");
    assert_eq!((r.stats().rejected, r.stats().dropped), (1, 0));
    let mut r = keyed(Limits {
        timeout: 10.0,
        ..Limits::default()
    });
    r.add(&chunks[0], 1.0).unwrap();
    assert_eq!(r.add(&chunks[0], 1.0).unwrap(), None);
    assert_eq!(r.stats().duplicates, 1);
    assert_eq!(r.evict_expired(20.0), vec![[1u8; 16]]);
    assert_eq!(feed(&mut r, &chunks), Some(vec![7u8; 3000]));
    assert_eq!(feed(&mut r, &chunks), None, "late duplicates are ignored");
    // A dropped chunk, even a later one, does not run the lazy expiry: it touches nothing.
    let mut r = keyed(Limits {
        timeout: 10.0,
        ..Limits::default()
    });
    r.add(&chunks[0], 1.0).unwrap();
    let untagged = chunks_of(&[1u8; 300], 100, 2);
    let e = r
        .add_with(&untagged[0], 50.0, |_| unreachable!())
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Authentication);
    assert_eq!(r.pending().len(), 1, "not expired by a dropped chunk");
}

#[test]
fn streamed_tagged_chunks_reassemble_to_the_encoded_payload() {
    let key = Some(crate::chunk::PieceKey::new(&[KEY; 32]));
    for max_bytes in [105u64, 150, 300, 4096, 100_000] {
        let (payload, _) = container(max_bytes);
        let (chunks, _) = crate::chunk::fixtures::with_prepared(max_bytes, |prepared| {
            ChunkStream::new(prepared, max_bytes, None, key)
                .unwrap()
                .collect::<crate::error::Result<Vec<Vec<u8>>>>()
                .unwrap()
        });
        assert!(chunks
            .iter()
            .all(|c| c.len() as u64 <= max_bytes && c[6] == 1));
        let mut r = keyed(Limits::default());
        assert_eq!(feed(&mut r, &chunks).as_deref(), Some(&payload[..]));
        let mut r = Reassembler::with_keys(Limits::default(), &[[0; 32]]).unwrap();
        dropped(&mut r, &chunks[0], Kind::Authentication);
    }
}
