//! What partial payloads still lack: [`Reassembler::missing`], for a receiver that asks
//! its sender to resend the chunks a lossy transport lost.

use std::ops::RangeInclusive;

use super::{nanos, Pending, Reassembler};
use crate::chunk::framing::PayloadId;
use crate::error::{Error, Result};

/// A partial payload and the chunks it still lacks, as [`Reassembler::missing`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Missing {
    /// The payload's id.
    pub payload_id: PayloadId,
    /// Chunks received so far.
    pub received: u32,
    /// Chunks in all.
    pub count: u32,
    /// Seconds since the payload's last new chunk.
    pub idle: f64,
    /// Indices of chunks not received yet, ascending: the lowest ones, at most the
    /// `limit` asked for.
    pub indices: Vec<u32>,
}

impl<B> Pending<B> {
    /// The lowest `limit` indices below `count` not received yet, ascending. Reads the
    /// bitmap a word at a time and stops at `limit`: at most `count / 64` words.
    fn missing_indices(&self, count: u32, limit: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(limit.min((count - self.n_received) as usize));
        for (k, &word) in self.received.iter().enumerate() {
            let base = k as u64 * 64;
            let valid = (u64::from(count) - base).min(64);
            let mut absent = !word
                & if valid == 64 {
                    u64::MAX
                } else {
                    (1 << valid) - 1
                };
            while absent != 0 {
                if out.len() == limit {
                    return out;
                }
                out.push((base + u64::from(absent.trailing_zeros())) as u32);
                absent &= absent - 1;
            }
        }
        out
    }
}

impl<B> Reassembler<B> {
    /// The partial payloads whose last new chunk came `idle` seconds before `now` (both
    /// bounds included; payloads past the timeout, which the next [`Reassembler::add_with`]
    /// drops, are left out), least recently active first, each with the lowest `limit` of
    /// its missing chunk indices. The cost is the payloads in the range (found in the
    /// activity index, not by a scan of all) and, for each, its bitmap up to the
    /// `limit`-th missing index: never more than what is held for them.
    pub fn missing(
        &self,
        now: f64,
        idle: RangeInclusive<f64>,
        limit: usize,
    ) -> Result<Vec<Missing>> {
        let (&low, &high) = (idle.start(), idle.end());
        if !now.is_finite() || now < 0.0 {
            return Err(Error::input(format!(
                "now must be finite non-negative seconds, got {now}"
            )));
        }
        if low.is_nan() || high.is_nan() || low < 0.0 || low > high {
            return Err(Error::input(format!(
                "idle must be a range of non-negative seconds, got {low}..={high}"
            )));
        }
        // Last activity between now - high and now - low.
        let newest = now - low;
        if newest < 0.0 {
            return Ok(Vec::new());
        }
        let oldest = nanos(now - high);
        // What `evict_expired` would drop: activity at or before now - timeout, when positive.
        let cutoff = now - self.limits.timeout;
        let live = if cutoff > 0.0 {
            nanos(cutoff).saturating_add(1)
        } else {
            0
        };
        let from = (oldest.max(live), 0);
        let to = (nanos(newest), u64::MAX);
        if from > to {
            return Ok(Vec::new());
        }
        let found = self.lru.range(from..=to).map(|(&(at, _), key)| {
            let p = &self.pending[key];
            Missing {
                payload_id: key.id,
                received: p.n_received,
                count: key.geometry.count,
                idle: (now - at as f64 / 1e9).max(0.0),
                indices: p.missing_indices(key.geometry.count, limit),
            }
        });
        Ok(found.collect())
    }
}
