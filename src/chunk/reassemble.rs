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
//!
//! With keys ([`Reassembler::with_keys`]) a chunk's tag is checked first, before
//! anything else is looked at or changed: a chunk that is malformed, untagged, tagged
//! with another key or altered is refused, counted in [`Stats::dropped`] and charged
//! nothing, so a forger who knows a payload id can no longer interfere with it at all.
//! The same keys read a finished tensorwire payload that is itself authenticated (its
//! keyed header hash); without keys such a payload is returned after its chunks'
//! checks, for a reader with the key to verify ([`super::verify`]). With trusted
//! signers ([`Reassembler::with_trust`]) only payloads signed by one of them complete.
//! [`Reassembler::missing`] names the chunks a stalled payload still lacks, for a
//! receiver that asks its sender to resend them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::auth::{authenticate, PieceKey};
use super::framing::{
    check_crc, crc_error, id_hex, ChunkHeader, Geometry, PayloadId, PayloadKind, CHUNK_HEADER_LEN,
    CRC_AT,
};
use super::verify::PayloadChecks;
use crate::error::{Error, Kind, Limit, Result};
use crate::memory::copy_and_crc;
use crate::trust::PublicKey;

mod limits;
mod missing;
mod settle;

pub use limits::{
    buffer_cost, Limits, Stats, WhenFull, ALTERNATE_OVERHEAD, MAX_ALTERNATES, MAX_VARIANTS,
    PENDING_OVERHEAD, RECENT_IDS,
};
pub use missing::Missing;

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
    /// When not empty, only chunks tagged with one of these are accepted.
    keys: Vec<PieceKey>,
    /// What a finished tensorwire payload is read with: the same keys, trusted signers.
    checks: PayloadChecks,
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
            keys: Vec::new(),
            checks: PayloadChecks::default(),
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

    /// A reassembler with these limits that accepts only chunks authenticated with one
    /// of `keys` (see the module documentation).
    pub fn with_keys(limits: Limits, keys: &[crate::trust::Key]) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::input("no keys given: pass at least one"));
        }
        Reassembler::with_trust(limits, keys, None)
    }

    /// A reassembler with these limits that accepts only chunks authenticated with one
    /// of `keys` (none: any chunk, on its CRC) and reads authenticated payloads with
    /// them; with `trusted`, only payloads signed by one of those signers complete (an
    /// empty list: none).
    pub fn with_trust(
        limits: Limits,
        keys: &[crate::trust::Key],
        trusted: Option<&[PublicKey]>,
    ) -> Result<Self> {
        let mut r = Reassembler::new(limits)?;
        r.keys = keys.iter().map(PieceKey::new).collect();
        r.checks = PayloadChecks::new(keys, trusted);
        Ok(r)
    }

    /// The keys chunks must be tagged with (none: any chunk is accepted on its CRC).
    pub fn keys(&self) -> &[PieceKey] {
        &self.keys
    }

    /// The signers a finished payload must be signed by, when only some are accepted.
    pub fn trusted(&self) -> Option<&[PublicKey]> {
        self.checks.trusted()
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
    /// different body received for its index. With keys, a chunk that is not
    /// authenticated with one of them is refused first (an authentication failure, or
    /// the format or integrity failure that made it unreadable), counted as dropped,
    /// and changes nothing else. A corrupt or inconsistent chunk is refused
    /// with an integrity or format failure and changes nothing else: other
    /// payloads, and the rest of its own, stay pending. A payload that completes but
    /// fails verification (with every combination of the bodies held) is dropped with
    /// an integrity failure.
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
        if !self.keys.is_empty() {
            let checked =
                ChunkHeader::parse(chunk).and_then(|h| authenticate(&self.keys, chunk, &h));
            if let Err(e) = checked {
                self.stats.dropped += 1;
                return Err(e);
            }
        }
        self.evict_expired(now);
        let result = self.add_checked(chunk, now, alloc);
        if let Err(e) = &result {
            if matches!(e.kind(), Kind::Format | Kind::Integrity) {
                self.stats.rejected += 1;
            }
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
        let body = h.body(chunk);
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
                    "differs from the copy already received (forged, or a payload id used \
                     twice), and {} other bodies are held for this payload already",
                    p.alternates.len()
                ))
                .in_chunk(h.at()));
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
            return Err(Error::limit(
                Kind::Format,
                Limit::PayloadBytes,
                total,
                self.limits.max_payload_bytes,
            )
            .in_chunk(h.at()));
        }
        let len = usize::try_from(total)
            .map_err(|_| Error::format("payload too large").in_chunk(h.at()))?;
        let body = h.body(chunk);
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
                "a payload of {total} bytes cannot fit under max_pending_bytes={}",
                self.limits.max_pending_bytes
            ))
            .in_chunk(h.at()));
        }
        while self.pending_bytes + charge > self.limits.max_pending_bytes {
            match self.limits.when_full {
                WhenFull::Refuse => {
                    return Err(Error::format(format!(
                        "no room for a payload of {total} bytes, {} of max_pending_bytes={} \
                         are held by {} partial payloads",
                        self.pending_bytes,
                        self.limits.max_pending_bytes,
                        self.pending.len()
                    ))
                    .in_chunk(h.at()));
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
        let checked = settle::settle(
            &mut buf,
            &key,
            &alternates,
            self.limits.verify,
            &self.checks,
        );
        match checked {
            Ok(()) => {
                self.stats.completed += 1;
                Ok(buf)
            }
            Err(e) => {
                self.stats.failed += 1;
                let kind = match e.kind() {
                    Kind::Authentication => Kind::Authentication,
                    _ => Kind::Integrity,
                };
                let what = match kind {
                    Kind::Authentication => "is refused",
                    _ => "is not intact",
                };
                Err(Error::failed(
                    kind,
                    format!(
                        "payload {} was reassembled but {what}: {e}",
                        id_hex(&key.id)
                    ),
                ))
            }
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

#[cfg(test)]
mod keyed_tests;
#[cfg(test)]
mod missing_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trust_tests;
