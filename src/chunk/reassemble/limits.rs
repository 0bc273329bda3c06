//! The bounds of a [`super::Reassembler`], what it charges for the memory it holds, and
//! its counters.

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

/// What [`super::Reassembler`] does when a new payload does not fit under `max_pending_bytes`.
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

/// The limits of a [`super::Reassembler`].
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

/// Counters of what a [`super::Reassembler`] has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payloads completed and verified.
    pub completed: u64,
    /// Chunks ignored as duplicates (of a pending or recently finished payload).
    pub duplicates: u64,
    /// Chunks refused with an error (but not dropped, see `dropped`).
    pub rejected: u64,
    /// Chunks a reassembler with keys refused before looking further: unreadable,
    /// untagged, tagged with another key, or altered. They were charged nothing.
    pub dropped: u64,
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
