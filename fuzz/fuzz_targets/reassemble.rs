//! One `Reassembler` (small limits, 5 s timeout) fed a sequence of chunks read from the
//! input, with an increasing clock. Byte 0: bit 0 `WhenFull::Refuse` (else evict), bit 1
//! verify, bits 2-3 max_pending_bytes (16 MiB, 4 KiB, 1 KiB, 300 B), bit 4
//! max_payload_bytes 16 MiB (else 64 KiB). Then operations (`tensorwire_fuzz::reasm_op`):
//! arbitrary chunk bytes (as they are, or with their CRC recomputed), valid chunks of
//! built-in payloads (a container, plain bytes, an empty payload) cut by `ChunkPlan` at
//! several sizes, mutated copies of them, all of a payload's chunks, and clock jumps. A
//! returned payload must pass `verify_payload` against its chunks' kind and digest, and
//! the pending bytes must stay within `max_pending_bytes`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tensorwire::chunk::PayloadKind;
use tensorwire::reassemble::{verify_payload, Limits, Reassembler, WhenFull};
use tensorwire_fuzz::{reasm_op as op, reseal_chunk, ChunkCache};

fn cache() -> &'static ChunkCache {
    static C: OnceLock<ChunkCache> = OnceLock::new();
    C.get_or_init(ChunkCache::new)
}

const MAX_OPS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_pending_bytes: [16 << 20, 4096, 1024, 300][(flags >> 2 & 3) as usize],
        // Mostly 64 KiB: zeroing 16 MiB buffers made the target ten times slower.
        max_payload_bytes: if flags & 16 != 0 { 16 << 20 } else { 64 << 10 },
        timeout: 5.0,
        when_full: if flags & 1 != 0 {
            WhenFull::Refuse
        } else {
            WhenFull::EvictOldest
        },
        verify: flags & 2 != 0,
    };
    let mut r = Reassembler::<Vec<u8>>::new(limits).expect("valid limits");
    let cache = cache();
    let mut now = 0.0f64;
    let take = |rest: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if rest.len() < n {
            return None;
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Some(a.to_vec())
    };
    for _ in 0..MAX_OPS {
        let Some(o) = take(&mut rest, 1) else { break };
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        match o[0] % 6 {
            op::RAW | op::RESEALED => {
                let Some(len) = take(&mut rest, 2) else { break };
                let len = u16::from_le_bytes([len[0], len[1]]) as usize;
                let len = len.min(rest.len());
                let mut c = take(&mut rest, len).expect("clamped");
                if o[0] % 6 == op::RESEALED {
                    reseal_chunk(&mut c);
                }
                chunks.push(c);
            }
            op::VALID | op::MUTATED => {
                let Some(sel) = take(&mut rest, 4) else { break };
                let (p, size) = (sel[0] as usize, sel[1] as usize);
                let mut c = cache.chunk(p, size, sel[2], sel[3] as usize);
                if o[0] % 6 == op::MUTATED {
                    let Some(m) = take(&mut rest, 3) else { break };
                    let pos = u16::from_le_bytes([m[0], m[1]]) as usize % c.len();
                    c[pos] ^= m[2].max(1);
                    reseal_chunk(&mut c);
                }
                chunks.push(c);
            }
            op::WAIT => {
                let Some(s) = take(&mut rest, 1) else { break };
                now += s[0] as f64 / 16.0;
                let _ = r.evict_expired(now);
            }
            _ => {
                let Some(sel) = take(&mut rest, 3) else { break };
                let (p, size) = (sel[0] as usize, sel[1] as usize);
                chunks = (0..cache.count(p, size))
                    .rev()
                    .map(|i| cache.chunk(p, size, sel[2], i))
                    .collect();
            }
        }
        for c in chunks {
            now += 0.001;
            if let Ok(Some(payload)) = r.add(&c, now) {
                // A payload handed back must be what its chunks' digest says (all of
                // them agree on it): re-check it independently of the reassembler.
                let kind = if c[5] == 0 {
                    PayloadKind::Bytes
                } else {
                    PayloadKind::Container
                };
                let ok = verify_payload(&payload, kind, &digest_of(&c), limits.verify).is_ok();
                assert!(ok, "a reassembled payload does not match its digest");
            }
        }
        let _ = r.pending();
        let _ = r.pending_bytes();
        assert!(
            r.pending_bytes() <= limits.max_pending_bytes,
            "pending over the limit"
        );
    }
    let _ = r.stats();
});

fn digest_of(chunk: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(&chunk[52..84]);
    d
}
