//! Chunking (`docs/FORMAT.md`, "Chunk framing"): cutting a payload into pieces that fit
//! a message broker's size limit, and putting the pieces back together.
//!
//! - [`framing`]: the 88-byte chunk header, its CRC and the geometry of a cut.
//! - [`auth`]: the tag of an authenticated chunk, made with a [`PieceKey`].
//! - [`split`]: [`ChunkPlan`] cuts a payload held in memory.
//! - [`stream`]: [`ChunkStream`] cuts a payload while it is being encoded.
//! - [`reassemble`]: [`Reassembler`] puts chunks back together, within bounds.
//! - [`verify`]: a finished payload checked against its chunks' digest, and as a
//!   container with the receiver's keys and trusted signers ([`PayloadChecks`]).

pub mod auth;
pub mod framing;
pub mod reassemble;
pub mod split;
pub mod stream;
pub mod verify;

#[cfg(test)]
mod fixtures;

pub use auth::{authenticate, PieceKey, TAG_LEN};
pub use framing::{
    check_crc, id_hex, random_id, ChunkHeader, Geometry, PayloadId, PayloadKind, CHUNK_HEADER_LEN,
    CHUNK_MAGIC, CHUNK_VERSION, FLAG_AUTHENTICATED, MAX_BODY_LEN, MAX_CHUNKS,
};
pub use reassemble::{
    buffer_cost, Limits, Missing, PayloadBuffer, PendingInfo, Reassembler, Stats, WhenFull,
    ALTERNATE_OVERHEAD, MAX_ALTERNATES, MAX_VARIANTS, PENDING_OVERHEAD, RECENT_IDS,
};
pub use split::ChunkPlan;
pub use stream::ChunkStream;
pub use verify::{verify_payload, verify_payload_with, PayloadChecks, Verified};
