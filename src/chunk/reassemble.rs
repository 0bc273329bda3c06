//! Putting chunks back together: [`Reassembler`].
//!
//! It accepts chunks (see [`super::framing`]) in any order, duplicated and interleaved
//! with the chunks of other payloads; writes each body once into a buffer allocated for
//! its payload when the payload's first chunk arrives; bounds the memory it holds (a
//! limit per payload, a limit on all partial payloads — charged what they really cost —
//! with eviction or refusal, a timeout for idle ones); refuses corrupt or inconsistent
//! chunks without touching anything else; and verifies a payload before returning it.
//!
//! Without keys anyone who sees a payload id can send chunks under it. So a payload is
//! identified by its id *and* its geometry, kind and digest: chunks announcing another
//! geometry form another payload (at most [`MAX_VARIANTS`] per id), and cannot turn the
//! legitimate chunks away. A chunk whose body differs from the one already received for
//! its index (a valid CRC proves nothing) is kept beside it (at most [`MAX_ALTERNATES`]
//! per payload); when the payload completes, the combination that verifies is the one
//! returned. So a forged chunk costs a legitimate payload nothing as long as its own
//! chunks all arrive, within those bounds.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::framing::{
    check_crc, copy_and_crc, crc_error, id_hex, ChunkHeader, Geometry, PayloadId, PayloadKind,
    CHUNK_HEADER_LEN, CRC_AT,
};
use crate::error::{Error, Result};

/// Bytes of bookkeeping charged per pending payload beyond its buffer and bitmap: its
/// entries in the pending table, the activity index and the per-id count, and the
/// allocator's overhead on those. Measured: see `tests/test_chunk.py`, which checks the
/// process's memory against what is charged for a million small pending payloads.
pub const PENDING_OVERHEAD: u64 = 1152;
/// Bytes of bookkeeping charged per alternative chunk body held, beyond the body.
pub const ALTERNATE_OVERHEAD: u64 = 96;
/// How many finished payloads are remembered (to drop their late duplicates).
pub const RECENT_IDS: usize = 65_536;
/// Most payloads pending under one payload id (with different geometries or digests);
/// a new one evicts the least recently active.
pub const MAX_VARIANTS: usize = 4;
/// Most alternative chunk bodies held for one pending payload.
pub const MAX_ALTERNATES: usize = 4;

/// What one payload buffer of `len` bytes really costs: CPython's bytes object header
/// and the allocator's rounding (16-byte classes below 512 bytes, 4 KiB pages from
/// 128 KiB, when the allocator maps them).
pub fn buffer_cost(len: u64) -> u64 {
    let object = len + 33 + 16;
    if object >= 128 << 10 {
        object.div_ceil(4096) * 4096
    } else {
        object.div_ceil(16) * 16
    }
}

/// Memory a reassembled payload is written into. [`Reassembler`] asks for one buffer of
/// the payload's length when the payload's first chunk arrives, writes every chunk's
/// body into it once, and hands it back when the payload is complete. The bindings use
/// a Python `bytes` object, so the finished payload is returned without a copy.
pub trait PayloadBuffer {
    /// The buffer's bytes.
    fn bytes(&self) -> &[u8];
    /// The buffer's bytes, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl PayloadBuffer for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// What [`Reassembler`] does when a new payload does not fit under `max_pending_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop the least recently active pending payloads until it fits (as the Linux IP
    /// fragment reassembly does). A flood cannot block new payloads, but can push out
    /// slow ones.
    EvictOldest,
    /// Refuse the new payload's chunk with an error. What is pending is never dropped
    /// early, but a flood blocks new payloads until it times out.
    Refuse,
}

/// The limits of a [`Reassembler`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes charged for pending payloads: their buffers (their full length, from
    /// the first chunk on, as allocated), bitmaps of received chunks, alternative chunk
    /// bodies and [`PENDING_OVERHEAD`] each.
    pub max_pending_bytes: u64,
    /// Largest payload accepted.
    pub max_payload_bytes: u64,
    /// Seconds without a new chunk after which a partial payload is dropped.
    pub timeout: f64,
    /// What happens when a new payload does not fit.
    pub when_full: WhenFull,
    /// Verify finished payloads fully (blake3 of the whole payload, or every checksum
    /// of a container). Without it, chunk CRCs are checked, a container's header is
    /// parsed and its content id compared, but tensor bytes are left to `decode`
    /// (unless alternative chunk bodies have to be decided between).
    pub verify: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_bytes: 4 << 30,
            max_payload_bytes: 4 << 30,
            timeout: 60.0,
            when_full: WhenFull::EvictOldest,
            verify: true,
        }
    }
}

/// Counters of what a [`Reassembler`] has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payloads completed and verified.
    pub completed: u64,
    /// Chunks ignored as duplicates (of a pending or recently finished payload).
    pub duplicates: u64,
    /// Chunks refused with an error.
    pub rejected: u64,
    /// Partial payloads dropped after the timeout.
    pub expired: u64,
    /// Partial payloads dropped to make room (`WhenFull::EvictOldest`).
    pub evicted: u64,
    /// Payloads that were complete but failed verification.
    pub failed: u64,
    /// Chunks whose body differed from the one already received for their index, kept
    /// beside it until the payload completes.
    pub conflicts: u64,
}

/// What identifies a payload: its id and everything its chunks must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    id: PayloadId,
    kind: PayloadKind,
    geometry: Geometry,
    digest: [u8; 32],
}

/// One partial payload.
struct Pending<B> {
    buf: B,
    received: Vec<u64>,
    n_received: u32,
    /// Bodies that differ from the one received for their index: (index, body).
    alternates: Vec<(u32, Vec<u8>)>,
    charge: u64,
    /// Key in the LRU index: (time of the last new chunk in ns, sequence number).
    lru: (u64, u64),
}

impl<B> Pending<B> {
    fn has(&self, i: u32) -> bool {
        self.received[i as usize / 64] & (1 << (i % 64)) != 0
    }
    fn mark(&mut self, i: u32) {
        self.received[i as usize / 64] |= 1 << (i % 64);
        self.n_received += 1;
    }
}

/// A partial payload, as [`Reassembler::pending`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInfo {
    /// The payload's id.
    pub payload_id: PayloadId,
    /// Chunks received so far.
    pub received: u32,
    /// Chunks in all.
    pub count: u32,
    /// Length of the payload.
    pub total: u64,
}

fn nanos(seconds: f64) -> u64 {
    // `as` saturates: negative -> 0, huge -> u64::MAX.
    (seconds * 1e9) as u64
}

/// Puts chunks back together; see the module documentation.
///
/// Times (`now`) are seconds on any monotonic clock the caller keeps using.
pub struct Reassembler<B = Vec<u8>> {
    limits: Limits,
    pending: HashMap<Key, Pending<B>>,
    lru: BTreeMap<(u64, u64), Key>,
    /// The pending payloads of each id.
    variants: HashMap<PayloadId, Vec<Key>>,
    pending_bytes: u64,
    seq: u64,
    recent: HashMap<Key, u64>,
    recent_order: VecDeque<(u64, Key)>,
    stats: Stats,
}

impl<B: PayloadBuffer> Reassembler<B> {
    /// A reassembler with these limits.
    pub fn new(limits: Limits) -> Result<Self> {
        if limits.timeout.is_nan() || limits.timeout <= 0.0 {
            return Err(Error::input(format!(
                "timeout must be positive seconds, got {}",
                limits.timeout
            )));
        }
        Ok(Reassembler {
            limits,
            pending: HashMap::new(),
            lru: BTreeMap::new(),
            variants: HashMap::new(),
            pending_bytes: 0,
            seq: 0,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes charged for pending payloads (see [`Limits::max_pending_bytes`]).
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// What has happened so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The partial payloads, least recently active first.
    pub fn pending(&self) -> Vec<PendingInfo> {
        self.lru
            .values()
            .map(|key| {
                let p = &self.pending[key];
                PendingInfo {
                    payload_id: key.id,
                    received: p.n_received,
                    count: key.geometry.count,
                    total: key.geometry.total,
                }
            })
            .collect()
    }

    fn drop_pending(&mut self, key: &Key) -> Option<Pending<B>> {
        let p = self.pending.remove(key)?;
        self.lru.remove(&p.lru);
        self.pending_bytes -= p.charge;
        if let Some(keys) = self.variants.get_mut(&key.id) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.variants.remove(&key.id);
            }
        }
        Some(p)
    }

    fn remember(&mut self, key: Key, now_ns: u64) {
        if self.recent.insert(key, now_ns).is_none() {
            self.recent_order.push_back((now_ns, key));
        }
        while self.recent_order.len() > RECENT_IDS {
            let (_, old) = self.recent_order.pop_front().expect("non-empty");
            self.recent.remove(&old);
        }
    }

    /// Drop partial payloads that received no new chunk for `timeout` seconds before
    /// `now`; returns their ids. Also forgets finished ids older than the timeout.
    pub fn evict_expired(&mut self, now: f64) -> Vec<PayloadId> {
        let cutoff = now - self.limits.timeout;
        if cutoff.is_nan() || cutoff <= 0.0 {
            return Vec::new();
        }
        let cutoff = nanos(cutoff);
        let mut gone = Vec::new();
        while let Some((&lru, &key)) = self.lru.first_key_value() {
            if lru.0 > cutoff {
                break;
            }
            self.drop_pending(&key);
            self.stats.expired += 1;
            gone.push(key.id);
        }
        while let Some(&(t, key)) = self.recent_order.front() {
            if t > cutoff {
                break;
            }
            self.recent_order.pop_front();
            if self.recent.get(&key) == Some(&t) {
                self.recent.remove(&key);
            }
        }
        gone
    }

    /// Add one chunk (`now`: seconds, see the type's documentation). Returns the whole
    /// payload, verified, when this chunk completes it; `None` when more chunks are
    /// needed, the chunk was a duplicate, or it was kept as an alternative to a
    /// different body received for its index. A corrupt or inconsistent chunk is refused
    /// with [`Error::Integrity`] or [`Error::Format`] and changes nothing else: other
    /// payloads, and the rest of its own, stay pending. A payload that completes but
    /// fails verification (with every combination of the bodies held) is dropped with
    /// [`Error::Integrity`].
    pub fn add_with(
        &mut self,
        chunk: &[u8],
        now: f64,
        alloc: impl FnOnce(usize) -> Result<B>,
    ) -> Result<Option<B>> {
        if !now.is_finite() || now < 0.0 {
            return Err(Error::input(format!(
                "now must be finite non-negative seconds, got {now}"
            )));
        }
        self.evict_expired(now);
        let result = self.add_checked(chunk, now, alloc);
        if let Err(Error::Format(_) | Error::Integrity(_)) = &result {
            self.stats.rejected += 1;
        }
        result
    }

    fn add_checked(
        &mut self,
        chunk: &[u8],
        now: f64,
        alloc: impl FnOnce(usize) -> Result<B>,
    ) -> Result<Option<B>> {
        let h = ChunkHeader::parse(chunk)?;
        let key = Key {
            id: h.payload_id,
            kind: h.kind,
            geometry: Geometry::of(&h)?,
            digest: h.digest,
        };
        let now_ns = nanos(now);
        if self.recent.contains_key(&key) {
            self.stats.duplicates += 1;
            return Ok(None);
        }
        let body = &chunk[CHUNK_HEADER_LEN..];
        let offset = h.offset as usize;
        let room = self.limits.max_pending_bytes - self.pending_bytes;
        let Some(p) = self.pending.get_mut(&key) else {
            return self.start(&h, key, chunk, now_ns, alloc);
        };
        if p.has(h.index) {
            check_crc(chunk, &h)?;
            let held = &p.buf.bytes()[offset..offset + body.len()];
            let known = held == body
                || p.alternates
                    .iter()
                    .any(|(i, b)| *i == h.index && b.as_slice() == body);
            if known {
                self.stats.duplicates += 1;
                return Ok(None);
            }
            let cost = body.len() as u64 + ALTERNATE_OVERHEAD;
            if p.alternates.len() >= MAX_ALTERNATES || cost > room {
                return Err(Error::integrity(format!(
                    "{}: differs from the copy already received (forged, or a payload id used \
                     twice), and {} other bodies are held for this payload already",
                    h.about(),
                    p.alternates.len()
                )));
            }
            p.alternates.push((h.index, body.to_vec()));
            p.charge += cost;
            self.pending_bytes += cost;
            self.stats.conflicts += 1;
            return Ok(None);
        }
        // Copy and checksum in one pass; on a mismatch the slot stays unreceived, so
        // its bytes are overwritten by the next copy of this chunk.
        let mut crc = crc32fast::Hasher::new();
        crc.update(&chunk[..CRC_AT]);
        copy_and_crc(
            body,
            &mut p.buf.bytes_mut()[offset..offset + body.len()],
            &mut crc,
        );
        let stored = u32::from_le_bytes(chunk[CRC_AT..CHUNK_HEADER_LEN].try_into().expect("4"));
        let computed = crc.finalize();
        if stored != computed {
            return Err(crc_error(&h, stored, computed));
        }
        p.mark(h.index);
        if p.n_received < key.geometry.count {
            self.seq += 1;
            let lru = (now_ns, self.seq);
            self.lru.remove(&p.lru);
            p.lru = lru;
            self.lru.insert(lru, key);
            return Ok(None);
        }
        let p = self.drop_pending(&key).expect("pending");
        self.finish(key, p.buf, p.alternates, now_ns).map(Some)
    }

    /// The first chunk of a payload not seen yet.
    fn start(
        &mut self,
        h: &ChunkHeader,
        key: Key,
        chunk: &[u8],
        now_ns: u64,
        alloc: impl FnOnce(usize) -> Result<B>,
    ) -> Result<Option<B>> {
        // Check the CRC before trusting the header's lengths for an allocation.
        check_crc(chunk, h)?;
        let total = key.geometry.total;
        if total > self.limits.max_payload_bytes {
            return Err(Error::format(format!(
                "{}: a payload of {total} bytes exceeds max_payload_bytes={}",
                h.about(),
                self.limits.max_payload_bytes
            )));
        }
        let len = usize::try_from(total)
            .map_err(|_| Error::format(format!("{}: payload too large", h.about())))?;
        let body = &chunk[CHUNK_HEADER_LEN..];
        if key.geometry.count == 1 {
            let mut buf = alloc(len)?;
            buf.bytes_mut().copy_from_slice(body);
            return self.finish(key, buf, Vec::new(), now_ns).map(Some);
        }
        // Other geometries under this id are other payloads; past the bound, the least
        // recently active of them makes room (a sender keeps its own payload active).
        if let Some(keys) = self
            .variants
            .get(&key.id)
            .filter(|k| k.len() >= MAX_VARIANTS)
        {
            let idle = *keys
                .iter()
                .min_by_key(|k| self.pending[k].lru)
                .expect("at least one");
            self.drop_pending(&idle);
            self.stats.evicted += 1;
        }
        let words = (key.geometry.count as usize).div_ceil(64);
        let charge = buffer_cost(total) + 8 * words as u64 + PENDING_OVERHEAD;
        if charge > self.limits.max_pending_bytes {
            return Err(Error::format(format!(
                "{}: a payload of {total} bytes cannot fit under max_pending_bytes={}",
                h.about(),
                self.limits.max_pending_bytes
            )));
        }
        while self.pending_bytes + charge > self.limits.max_pending_bytes {
            match self.limits.when_full {
                WhenFull::Refuse => {
                    return Err(Error::format(format!(
                        "{}: no room for a payload of {total} bytes, {} of max_pending_bytes={} \
                         are held by {} partial payloads",
                        h.about(),
                        self.pending_bytes,
                        self.limits.max_pending_bytes,
                        self.pending.len()
                    )));
                }
                WhenFull::EvictOldest => {
                    let (_, &oldest) = self.lru.first_key_value().expect("something is pending");
                    self.drop_pending(&oldest);
                    self.stats.evicted += 1;
                }
            }
        }
        let mut buf = alloc(len)?;
        let offset = h.offset as usize;
        buf.bytes_mut()[offset..offset + body.len()].copy_from_slice(body);
        self.seq += 1;
        let lru = (now_ns, self.seq);
        let mut p = Pending {
            buf,
            received: vec![0; words],
            n_received: 0,
            alternates: Vec::new(),
            charge,
            lru,
        };
        p.mark(h.index);
        self.pending_bytes += charge;
        self.lru.insert(lru, key);
        self.pending.insert(key, p);
        self.variants.entry(key.id).or_default().push(key);
        Ok(None)
    }

    /// Verify a complete payload (trying the alternative bodies held, if any); remember
    /// its key either way.
    fn finish(
        &mut self,
        key: Key,
        mut buf: B,
        alternates: Vec<(u32, Vec<u8>)>,
        now_ns: u64,
    ) -> Result<B> {
        self.remember(key, now_ns);
        match settle(&mut buf, &key, &alternates, self.limits.verify) {
            Ok(()) => {
                self.stats.completed += 1;
                Ok(buf)
            }
            Err(e) => {
                self.stats.failed += 1;
                Err(Error::integrity(format!(
                    "payload {} was reassembled but is not intact: {e}",
                    id_hex(&key.id)
                )))
            }
        }
    }
}

/// Verify the finished `buf`; when alternative bodies are held, find the combination
/// that verifies (at most `2^MAX_ALTERNATES` tries, each a full verification) and leave
/// it in `buf`.
fn settle<B: PayloadBuffer>(
    buf: &mut B,
    key: &Key,
    alternates: &[(u32, Vec<u8>)],
    full: bool,
) -> Result<()> {
    if alternates.is_empty() {
        return verify_payload(buf.bytes(), key.kind, &key.digest, full);
    }
    // Each index with alternatives has choices: what the buffer holds, then each
    // alternative; count through every combination.
    let mut indices: Vec<u32> = alternates.iter().map(|(i, _)| *i).collect();
    indices.sort_unstable();
    indices.dedup();
    let piece = key.geometry.piece as usize;
    let span = |i: u32| {
        let at = i as usize * piece;
        at..(at + piece).min(key.geometry.total as usize)
    };
    let first: Vec<Vec<u8>> = indices
        .iter()
        .map(|&i| buf.bytes()[span(i)].to_vec())
        .collect();
    let choices: Vec<Vec<&[u8]>> = indices
        .iter()
        .zip(&first)
        .map(|(&i, held)| {
            std::iter::once(held.as_slice())
                .chain(
                    alternates
                        .iter()
                        .filter(|(j, _)| *j == i)
                        .map(|(_, b)| b.as_slice()),
                )
                .collect()
        })
        .collect();
    let mut pick = vec![0usize; indices.len()];
    loop {
        for ((&i, c), &k) in indices.iter().zip(&choices).zip(&pick) {
            buf.bytes_mut()[span(i)].copy_from_slice(c[k]);
        }
        let e = match verify_payload(buf.bytes(), key.kind, &key.digest, true) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Next combination (mixed radix); the last one's error when none is left.
        let mut d = 0;
        loop {
            if d == pick.len() {
                return Err(e);
            }
            pick[d] += 1;
            if pick[d] < choices[d].len() {
                break;
            }
            pick[d] = 0;
            d += 1;
        }
    }
}

impl Reassembler<Vec<u8>> {
    /// [`Reassembler::add_with`], with payloads in new zeroed vectors.
    pub fn add(&mut self, chunk: &[u8], now: f64) -> Result<Option<Vec<u8>>> {
        self.add_with(chunk, now, |n| {
            crate::memory::try_zeroed(n, "a reassembled payload")
        })
    }
}

/// Check a reassembled payload against its chunks' digest (see [`PayloadKind`]).
pub fn verify_payload(
    payload: &[u8],
    kind: PayloadKind,
    digest: &[u8; 32],
    full: bool,
) -> Result<()> {
    match kind {
        PayloadKind::Bytes => {
            if !full {
                return Ok(());
            }
            if crate::memory::hash(payload) != *digest {
                return Err(Error::integrity(
                    "its blake3 does not match the digest in its chunks",
                ));
            }
            Ok(())
        }
        PayloadKind::Container => {
            let layout = crate::format::parse(payload)?;
            if *digest != [0; 32] && layout.content_id != *digest {
                return Err(Error::integrity(
                    "its content id does not match the digest in its chunks",
                ));
            }
            if full {
                layout.verify(payload, None)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkPlan;

    /// A small deterministic generator, so the tests need no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                v.swap(i, self.below(i as u64 + 1) as usize);
            }
        }
    }

    fn chunks_of(payload: &[u8], max_bytes: u64, id: u8) -> Vec<Vec<u8>> {
        ChunkPlan::new(payload, max_bytes, Some([id; 16]))
            .unwrap()
            .to_vecs(payload)
    }

    /// Recompute a chunk's CRC after tampering, as a forger would.
    fn reseal(chunk: &mut [u8]) {
        let mut h = crc32fast::Hasher::new();
        h.update(&chunk[..CRC_AT]);
        h.update(&chunk[CHUNK_HEADER_LEN..]);
        let crc = h.finalize().to_le_bytes();
        chunk[CRC_AT..CHUNK_HEADER_LEN].copy_from_slice(&crc);
    }

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
        // The parallel CRC is the plain CRC-32 of the spec.
        let mut h = crc32fast::Hasher::new();
        h.update(&chunks[0][..CRC_AT]);
        h.update(&chunks[0][CHUNK_HEADER_LEN..]);
        assert_eq!(
            h.finalize().to_le_bytes(),
            chunks[0][CRC_AT..CHUNK_HEADER_LEN]
        );
        let mut r = reassembler(Limits::default());
        let mut bad = chunks[1].clone();
        bad[CHUNK_HEADER_LEN + (1 << 20) + 3] ^= 4;
        assert!(r.add(&chunks[2], 0.0).unwrap().is_none());
        assert!(matches!(r.add(&bad, 0.0), Err(Error::Integrity(_))));
        assert!(r.add(&chunks[1], 0.0).unwrap().is_none());
        assert!(matches!(r.add(&bad, 0.0), Err(Error::Integrity(_))));
        assert_eq!(r.add(&chunks[0], 0.0).unwrap(), Some(payload));
    }

    #[test]
    fn empty_payload_is_one_chunk() {
        let chunks = chunks_of(b"", 100, 1);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), CHUNK_HEADER_LEN);
        let mut r = reassembler(Limits::default());
        assert_eq!(r.add(&chunks[0], 0.0).unwrap(), Some(vec![]));
    }

    #[test]
    fn max_bytes_too_small() {
        let e = ChunkPlan::new(b"abc", CHUNK_HEADER_LEN as u64, None).unwrap_err();
        assert!(matches!(e, Error::Input(_)));
        assert!(e.to_string().contains("too small"), "{e}");
        assert!(ChunkPlan::new(b"abc", CHUNK_HEADER_LEN as u64 + 1, None).is_ok());
    }

    #[test]
    fn header_errors() {
        let chunks = chunks_of(&[5u8; 1000], 300, 3);
        let c = &chunks[1];
        let mut r = reassembler(Limits::default());
        let expect = |r: &mut Reassembler, bytes: &[u8], integrity: bool, text: &str| {
            let e = r.add(bytes, 0.0).unwrap_err();
            assert_eq!(matches!(e, Error::Integrity(_)), integrity, "{e}");
            assert!(e.to_string().contains(text), "{e:?} lacks {text:?}");
        };
        expect(&mut r, b"hello", false, "magic");
        expect(&mut r, &c[..50], true, "truncated");
        expect(&mut r, &c[..c.len() - 1], true, "announces");
        let mut bad = c.clone();
        bad[4] = 2;
        expect(&mut r, &bad, false, "version");
        let mut bad = c.clone();
        bad[5] = 9;
        expect(&mut r, &bad, false, "kind");
        let mut bad = c.clone();
        bad[7] = 1;
        expect(&mut r, &bad, false, "reserved");
        let mut bad = c.clone();
        bad[CHUNK_HEADER_LEN + 3] ^= 1;
        expect(&mut r, &bad, true, "checksum mismatch");
        let mut bad = c.clone();
        bad[24..28].copy_from_slice(&9u32.to_le_bytes());
        reseal(&mut bad);
        expect(&mut r, &bad, false, "not below the chunk count");
        let mut bad = c.clone();
        bad[40..48].copy_from_slice(&5u64.to_le_bytes());
        reseal(&mut bad);
        expect(&mut r, &bad, false, "offset");
        let mut bad = c.clone();
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        reseal(&mut bad);
        expect(&mut r, &bad, false, "do not make");
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
            assert!(matches!(e, Error::Integrity(_)), "{e}");
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
        assert!(matches!(e, Error::Integrity(_)), "{e}");
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
                let plan = ChunkPlan::new(&payload, 1000, Some(id)).unwrap();
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

    fn container(seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut rng = Rng(seed);
        let datas: Vec<Vec<u8>> = (0..5).map(|i| rng.bytes(4 * (100 + 37 * i))).collect();
        let shapes: Vec<Vec<u64>> = (0..5).map(|i| vec![100 + 37 * i as u64]).collect();
        let names: Vec<String> = (0..5).map(|i| format!("layer{i}.weight")).collect();
        let inputs: Vec<crate::TensorInput<'_>> = (0..5)
            .map(|i| crate::TensorInput {
                name: &names[i],
                dtype: crate::DType::F32,
                shape: &shapes[i],
                data: &datas[i],
                codec: if i == 2 { "zstd" } else { "raw" },
                base: None,
            })
            .collect();
        let prepared = crate::prepare(&inputs, &Default::default()).unwrap();
        let mut out = vec![0u8; prepared.total_len()];
        prepared.write_into(&mut out);
        (out, datas)
    }

    #[test]
    fn containers_are_verified_by_their_own_checksums() {
        let (payload, _) = container(11);
        let plan = ChunkPlan::new(&payload, 500, None).unwrap();
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

    #[test]
    fn streamed_chunks_reassemble_to_the_encoded_payload() {
        for max_bytes in [89u64, 100, 150, 300, 1000, 4096, 100_000] {
            let (payload, datas) = container(max_bytes);
            let shapes: Vec<Vec<u64>> = (0..5).map(|i| vec![100 + 37 * i as u64]).collect();
            let names: Vec<String> = (0..5).map(|i| format!("layer{i}.weight")).collect();
            let inputs: Vec<crate::TensorInput<'_>> = (0..5)
                .map(|i| crate::TensorInput {
                    name: &names[i],
                    dtype: crate::DType::F32,
                    shape: &shapes[i],
                    data: &datas[i],
                    codec: if i == 2 { "zstd" } else { "raw" },
                    base: None,
                })
                .collect();
            let prepared = crate::prepare(&inputs, &Default::default()).unwrap();
            let stream = crate::chunk::stream::ChunkStream::new(prepared, max_bytes, None).unwrap();
            assert_eq!(stream.total_len(), payload.len() as u64);
            let chunks: Vec<Vec<u8>> = stream.collect();
            assert!(chunks.iter().all(|c| c.len() as u64 <= max_bytes));
            let first = ChunkHeader::parse(&chunks[0]).unwrap();
            assert!(
                first.index > 0 || chunks.len() == 1,
                "data chunks come first"
            );
            let mut r = reassembler(Limits::default());
            let mut done = None;
            for c in &chunks {
                done = done.or(r.add(c, 0.0).unwrap());
            }
            assert_eq!(done.as_deref(), Some(&payload[..]), "max_bytes={max_bytes}");
        }
    }
}
