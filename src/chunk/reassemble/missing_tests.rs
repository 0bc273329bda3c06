//! Tests of [`Reassembler::missing`]: the right indices, the idle range, the bounds.

use std::ops::RangeInclusive;

use super::*;
use crate::chunk::fixtures::{chunks_of, Rng};

fn reassembler(limits: Limits) -> Reassembler {
    Reassembler::new(limits).unwrap()
}

#[test]
fn reports_exactly_the_chunks_not_received_and_resending_them_completes() {
    let mut rng = Rng(0x5eed);
    for case in 0..40u8 {
        let len = 1 + rng.below(40_000) as usize;
        let payload = rng.bytes(len);
        let max_bytes = 89 + rng.below(600);
        let chunks = chunks_of(&payload, max_bytes, case);
        let n = chunks.len() as u32;
        let mut r = reassembler(Limits::default());
        let first = rng.below(n as u64) as usize;
        let mut held = vec![false; chunks.len()];
        let mut done = r.add(&chunks[first], 1.0).unwrap();
        held[first] = true;
        for (i, c) in chunks.iter().enumerate() {
            if !held[i] && rng.below(3) != 0 && held.iter().filter(|h| !**h).count() > 1 {
                assert!(done.is_none());
                done = r.add(c, 1.0).unwrap();
                held[i] = true;
            }
        }
        if n == 1 {
            assert_eq!(done.as_deref(), Some(&payload[..]));
            continue;
        }
        assert!(done.is_none());
        let want: Vec<u32> = (0..n).filter(|&i| !held[i as usize]).collect();
        let report = r.missing(3.0, 0.0..=f64::INFINITY, usize::MAX).unwrap();
        assert_eq!(report.len(), 1, "case {case}");
        let m = &report[0];
        assert_eq!((m.payload_id, m.count), ([case; 16], n));
        assert_eq!(m.received as usize, chunks.len() - want.len());
        assert_eq!(m.indices, want, "case {case}");
        assert!((m.idle - 2.0).abs() < 1e-6, "{}", m.idle);
        // A limit gives the lowest ones.
        let few = r.missing(3.0, 0.0..=10.0, 3).unwrap();
        assert_eq!(few[0].indices, want[..want.len().min(3)]);
        // Resending what was reported completes the payload, and it is no longer reported.
        let mut got = None;
        for &i in &want {
            got = r.add(&chunks[i as usize], 4.0).unwrap().or(got);
        }
        assert_eq!(got.as_deref(), Some(&payload[..]));
        assert!(r.missing(5.0, 0.0..=f64::INFINITY, 10).unwrap().is_empty());
    }
}

#[test]
fn bitmap_word_boundaries() {
    for count in [2u32, 63, 64, 65, 127, 128, 129, 1000] {
        let payload = vec![7u8; count as usize];
        let chunks = chunks_of(&payload, 89, 1);
        assert_eq!(chunks.len() as u32, count);
        let mut r = reassembler(Limits::default());
        // Received: every index but the first and the last two of each word, and the last.
        let absent = |i: u32| i == 0 || i % 64 >= 62 || i == count - 1;
        for i in (0..count).filter(|&i| !absent(i)) {
            assert!(r.add(&chunks[i as usize], 0.0).unwrap().is_none());
        }
        if r.pending().is_empty() {
            continue; // every chunk is one that is left out: nothing was started
        }
        let m = &r.missing(0.0, 0.0..=0.0, usize::MAX).unwrap()[0];
        let want: Vec<u32> = (0..count).filter(|&i| absent(i)).collect();
        assert_eq!(m.indices, want, "count {count}");
        assert_eq!(m.received + want.len() as u32, count);
        assert!(r.missing(0.0, 0.0..=0.0, 0).unwrap()[0].indices.is_empty());
    }
}

#[test]
fn the_idle_range_selects_payloads_by_their_last_new_chunk() {
    let mut r = reassembler(Limits {
        timeout: 10.0,
        ..Limits::default()
    });
    let payloads: Vec<Vec<Vec<u8>>> = (0..4).map(|i| chunks_of(&[i; 500], 200, i)).collect();
    // Payload i's last new chunk at time i (payload 0 twice: a duplicate is no activity).
    for (i, chunks) in payloads.iter().enumerate() {
        r.add(&chunks[0], i as f64).unwrap();
    }
    r.add(&payloads[0][0], 3.0).unwrap();
    let ids = |now: f64, idle: RangeInclusive<f64>| -> Vec<u8> {
        let report = r.missing(now, idle, 8).unwrap();
        report.iter().map(|m| m.payload_id[0]).collect()
    };
    assert_eq!(ids(3.0, 0.0..=f64::INFINITY), [0, 1, 2, 3]);
    assert_eq!(ids(3.0, 1.0..=2.0), [1, 2]);
    assert_eq!(ids(3.0, 1.5..=1.5), Vec::<u8>::new());
    assert_eq!(ids(3.0, 3.0..=3.0), [0]);
    assert_eq!(ids(3.0, 4.0..=9.0), Vec::<u8>::new());
    assert_eq!(ids(0.5, 1.0..=2.0), Vec::<u8>::new()); // nothing can be idle that long yet
                                                       // Past the timeout a payload is expired (the next add drops it), so not reported,
                                                       // even before it is dropped.
    assert_eq!(ids(10.0, 0.0..=f64::INFINITY), [0, 1, 2, 3]); // exactly the timeout: kept
    assert_eq!(ids(10.5, 0.0..=f64::INFINITY), [1, 2, 3]);
    assert_eq!(ids(12.5, 0.0..=f64::INFINITY), [3]);
    assert_eq!(r.pending().len(), 4);
    // Progress moves a payload to the end.
    r.add(&payloads[1][1], 4.0).unwrap();
    let report = r.missing(4.0, 0.0..=f64::INFINITY, 8).unwrap();
    let last = report.last().unwrap();
    assert_eq!((last.payload_id[0], last.received, last.idle), (1, 2, 0.0));
    assert_eq!(last.indices, [2, 3, 4]);
}

#[test]
fn bad_arguments_are_refused() {
    let r = reassembler(Limits::default());
    for now in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(r.missing(now, 0.0..=1.0, 1).is_err());
    }
    for (low, high) in [(f64::NAN, 1.0), (0.0, f64::NAN), (-1.0, 1.0), (2.0, 1.0)] {
        let e = r.missing(1.0, low..=high, 1).unwrap_err();
        assert!(e.to_string().contains("idle"), "{e}");
    }
}

#[test]
fn each_geometry_under_one_id_is_reported_on_its_own() {
    let genuine = chunks_of(&[1u8; 1000], 300, 9);
    let forged = chunks_of(&[2u8; 5000], 300, 9);
    let mut r = reassembler(Limits::default());
    r.add(&genuine[1], 0.0).unwrap();
    r.add(&forged[3], 1.0).unwrap();
    let report = r.missing(1.0, 0.0..=f64::INFINITY, 100).unwrap();
    let counts: Vec<(u32, usize)> = report.iter().map(|m| (m.count, m.indices.len())).collect();
    assert_eq!(
        counts,
        [(genuine.len() as u32, 4), (forged.len() as u32, 23)]
    );
    assert_eq!(report[0].indices, [0, 2, 3, 4]);
    assert!(report.iter().all(|m| m.payload_id == [9; 16]));
}
