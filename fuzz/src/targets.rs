//! The bodies of the fuzz targets, as plain functions: `fuzz_targets/*.rs` call them
//! under libFuzzer, and `tests/replay.rs` runs them (stable toolchain, no sanitizer)
//! over the seed corpora and the saved crash inputs in `regressions/`.

use std::sync::OnceLock;

use tensorwire::chunk::PayloadKind;
use tensorwire::chunk::{verify_payload, Limits, Reassembler, WhenFull};
use tensorwire::codec::Pipeline;
use tensorwire::format;

use crate::{
    capped_nbytes, codec_base, exercise_aggregate, exercise_layout, reasm_op as op, reseal_chunk,
    reseal_header, reseal_tensors, AggFlags, ChunkCache, CodecInput,
};

/// A target's body: one input, no result (a bug panics or aborts).
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/run.sh` and `fuzz/regressions/<name>/` name them.
pub const ALL: [(&str, Target); 6] = [
    ("parse", parse),
    ("codec_decode", codec_decode),
    ("codec_roundtrip", codec_roundtrip),
    ("reassemble", reassemble),
    ("aggregate", aggregate),
    ("open_sealed", open_sealed),
];

/// `format::parse` of arbitrary bytes; on success `Layout::verify` and a decode of
/// every tensor within the caps (`tensorwire_fuzz::exercise_layout`). Each input is
/// tried as it is, then resealed (header hash and data length recomputed), then with
/// every tensor checksum recomputed too, so mutations reach the JSON header and the
/// codecs behind the BLAKE3 checks.
pub fn parse(data: &[u8]) {
    // The keyed and signed paths (FORMAT.md section 10): a reader holding a fixed key
    // and trusting one signer must refuse or accept without panicking.
    let mut verifier = tensorwire::trust::Verifier::default();
    verifier.add_key(&[7; 32]);
    verifier.trust(tensorwire::trust::public_key(&[9; 32]));
    if let Ok(layout) = format::parse_with(data, &verifier) {
        exercise_layout(data, &layout);
    }
    if let Ok(layout) = format::parse(data) {
        exercise_layout(data, &layout);
        return;
    }
    let mut sealed = data.to_vec();
    if !reseal_header(&mut sealed) {
        return;
    }
    if let Ok(layout) = format::parse(&sealed) {
        exercise_layout(&sealed, &layout);
        if let Some((fixed, layout)) = reseal_tensors(&sealed) {
            exercise_layout(&fixed, &layout);
        }
    }
}

/// `Pipeline::parse(spec)?.decode(dtype, shape, stored, base, out)` on arbitrary stored
/// bytes. The first bytes pick the spec (every stage, see `tensorwire_fuzz::SPECS`, or
/// an inline spec string), the dtype and a small shape (decoded size at most 4 MiB);
/// see `tensorwire_fuzz::CodecInput`. Any `Err` is fine; a panic, abort, overflow,
/// hang or unbounded allocation is a bug.
pub fn codec_decode(data: &[u8]) {
    let Some(input) = CodecInput::parse(data) else {
        return;
    };
    let Ok(pipeline) = Pipeline::parse(&input.spec) else {
        return;
    };
    // What the header would store must parse back to the same pipeline.
    let canonical = pipeline.to_string();
    let again = Pipeline::parse(&canonical).expect("a pipeline's canonical spec parses");
    assert_eq!(
        again, pipeline,
        "canonical spec {canonical:?} does not round-trip"
    );
    let nbytes = capped_nbytes(input.dtype, &input.shape).expect("bounded by CodecInput");
    let mut out = vec![0u8; nbytes];
    let base = codec_base(input.base_mode, nbytes);
    let _ = pipeline.decode(
        input.dtype,
        &input.shape,
        input.stored,
        base.as_deref(),
        &mut out,
    );
    let _ = pipeline.is_lossless();
    let _ = pipeline.check(input.dtype);
}

/// Federated averaging of an arbitrary payload. Byte 0 is flags
/// (`tensorwire_fuzz::AggFlags`: verify, clipping, float64, difference/model, base,
/// weights); the rest is a payload. When it parses (as is, or resealed so that mutated
/// bytes get past the header hash and the tensor checksums), a `Round` is built from its
/// own entries (averageable dtypes only, at most 16 MiB in all), then
/// `Accumulator::new` + `check` + `add` (twice) + `finish_into`, and `aggregate` over
/// two copies of the update.
pub fn aggregate(data: &[u8]) {
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    let flags = AggFlags(flags);
    if let Ok(layout) = format::parse(payload) {
        exercise_aggregate(flags, payload, &layout);
        return;
    }
    let mut sealed = payload.to_vec();
    if !reseal_header(&mut sealed) {
        return;
    }
    if let Some((fixed, layout)) = reseal_tensors(&sealed) {
        exercise_aggregate(flags, &fixed, &layout);
    }
}

/// One `Reassembler` (small limits, 5 s timeout) fed a sequence of chunks read from the
/// input, with an increasing clock. Byte 0: bit 0 `WhenFull::Refuse` (else evict), bit 1
/// verify, bits 2-3 max_pending_bytes (16 MiB, 4 KiB, 1 KiB, 300 B), bit 4
/// max_payload_bytes 16 MiB (else 64 KiB). Then operations (`tensorwire_fuzz::reasm_op`):
/// arbitrary chunk bytes (as they are, or with their CRC recomputed), valid chunks of
/// built-in payloads (a container, plain bytes, an empty payload) cut by `ChunkPlan` at
/// several sizes, mutated copies of them, all of a payload's chunks, and clock jumps. A
/// returned payload must pass `verify_payload` against its chunks' kind and digest, and
/// the pending bytes must stay within `max_pending_bytes`.
pub fn reassemble(data: &[u8]) {
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
}

fn cache() -> &'static ChunkCache {
    static C: OnceLock<ChunkCache> = OnceLock::new();
    C.get_or_init(ChunkCache::new)
}

const MAX_OPS: usize = 256;

fn digest_of(chunk: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(&chunk[52..84]);
    d
}

/// Largest tensor `codec_roundtrip` encodes (64 KiB).
pub const ROUNDTRIP_MAX_BYTES: usize = 64 << 10;

/// Encode arbitrary values with a pipeline, then decode them: what a server does with
/// values that came from clients (an aggregate re-encoded for the next round, with any
/// NaN, infinity, subnormal or -0.0 in it). Byte 0 picks the spec from
/// [`crate::SPECS`] (`auto` included), byte 1 the dtype, byte 2 bits 0-1 the rank and
/// bit 2 whether the base is zeros or comes from the input too; then one byte per
/// dimension (decoded size at most 64 KiB); the rest, repeated as needed, are the
/// tensor's bytes (and then the base's). An encoding error is fine (a value the codec
/// refuses); but what encodes must decode, a lossless pipeline must give back every
/// bit, and nothing may panic.
pub fn codec_roundtrip(data: &[u8]) {
    let [sel, d, flags, rest @ ..] = data else {
        return;
    };
    let spec = crate::SPECS[*sel as usize % crate::SPECS.len()];
    let dtype = tensorwire::DType::ALL[*d as usize % tensorwire::DType::ALL.len()];
    let rank = (flags & 3) as usize;
    if rest.len() < rank {
        return;
    }
    let (dims, values) = rest.split_at(rank);
    let shape: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    let Some(nbytes) = capped_nbytes(dtype, &shape) else {
        return;
    };
    if nbytes > ROUNDTRIP_MAX_BYTES {
        return;
    }
    let fill = |skip: usize| -> Vec<u8> {
        if values.is_empty() {
            return vec![0; nbytes];
        }
        values
            .iter()
            .cycle()
            .skip(skip)
            .take(nbytes)
            .copied()
            .collect()
    };
    let tensor = fill(0);
    let Ok(pipeline) = Pipeline::parse(spec) else {
        return;
    };
    let base = pipeline.needs_base().then(|| {
        if flags & 4 != 0 {
            fill(nbytes % values.len().max(1) + 1)
        } else {
            vec![0; nbytes]
        }
    });
    let Ok(resolved) = pipeline.resolve(dtype, &tensor) else {
        return;
    };
    let Ok(stored) = pipeline.encode(dtype, &shape, &tensor, base.as_deref()) else {
        return;
    };
    let mut out = vec![0u8; nbytes];
    if let Err(e) = resolved.decode(dtype, &shape, &stored, base.as_deref(), &mut out) {
        panic!("{resolved} ({spec}) encoded a {dtype}{shape:?} tensor it cannot decode: {e}");
    }
    if resolved.is_lossless() {
        assert!(
            out == tensor,
            "{resolved} is lossless but did not give back the {dtype}{shape:?} tensor's bits"
        );
    }
}

/// Sealed streams (`tensorwire::trust::seal`) under a fixed key. Byte 0: bits 0-2 pick
/// the plaintext's length (the input's rest as it is, or stretched across one or two
/// block boundaries), bits 3-4 the change made, bits 5-7 the tensor index; bytes 1-4
/// where the change is made. Three things must hold: the whole input opened as a sealed
/// stream is refused (a forgery would be a 2^-128 event); the plaintext seals and opens
/// back to itself; and the sealed stream with one change (a byte flipped, a cut, a block
/// dropped, two blocks swapped, or opened as another tensor) is refused.
pub fn open_sealed(data: &[u8]) {
    use tensorwire::trust::seal::{open_into, plain_len, seal_into, sealed_len, BLOCK, TAG};
    const KEY: [u8; 32] = [0x5e; 32];
    const NONCE: [u8; 16] = [0xc3; 16];
    let opens = |tensor: u32, sealed: &[u8]| match plain_len(sealed.len()) {
        Ok(n) => open_into(&KEY, &NONCE, tensor, sealed, &mut vec![0u8; n]).is_ok(),
        Err(_) => false,
    };
    if !data.is_empty() {
        assert!(!opens(0, data), "arbitrary bytes opened as a sealed stream");
    }
    let [flags, a, b, c, d, rest @ ..] = data else {
        return;
    };
    let at = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
    let len = match flags & 7 {
        5 => BLOCK - 1 + rest.len() % 3,
        6 => BLOCK + rest.len(),
        7 => 2 * BLOCK + rest.len() % 17,
        _ => rest.len(),
    };
    let plain: Vec<u8> = match rest {
        [] => vec![0; len],
        _ => rest.iter().cycle().take(len).copied().collect(),
    };
    let tensor = u32::from(flags >> 5);
    let mut sealed = vec![0u8; sealed_len(len).expect("a small plaintext")];
    seal_into(&KEY, &NONCE, tensor, &plain, &mut sealed).expect("a plaintext seals");
    let mut back = vec![0u8; len];
    open_into(&KEY, &NONCE, tensor, &sealed, &mut back).expect("a sealed stream opens");
    assert!(back == plain, "a sealed stream opened to other bytes");
    if sealed.is_empty() {
        return;
    }
    let block = BLOCK + TAG;
    let blocks: Vec<&[u8]> = sealed.chunks(block).collect();
    let n = blocks.len();
    let (changed, as_tensor) = match (flags >> 3) & 3 {
        0 => {
            let mut s = sealed.clone();
            let i = at % s.len();
            s[i] ^= (at >> 24) as u8 | 1;
            (s, tensor)
        }
        // A cut to nothing is an empty stream: its length is the header's to vouch for.
        1 => (sealed[..1 + at % (sealed.len() - 1)].to_vec(), tensor),
        2 if n > 1 => {
            let mut kept = blocks.clone();
            kept.remove(at % n);
            (kept.concat(), tensor)
        }
        3 if n > 1 => {
            // Block i and the last block trade places (the length stays the same).
            let i = at % (n - 1);
            let mut order = blocks.clone();
            order.swap(i, n - 1);
            (order.concat(), tensor)
        }
        _ => (sealed.clone(), tensor.wrapping_add(1 + (at as u32 % 7))),
    };
    assert!(
        !opens(as_tensor, &changed),
        "a changed sealed stream opened (flags {flags:#04x}, at {at})"
    );
}
