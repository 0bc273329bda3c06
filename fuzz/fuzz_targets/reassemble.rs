//! One `Reassembler` (small limits, 5 s timeout) fed a sequence of chunks read from the
//! input, with an increasing clock. Byte 0: bit 0 `WhenFull::Refuse` (else evict), bit 1
//! verify, bits 2-3 max_pending_bytes (16 MiB, 4 KiB, 1 KiB, 300 B), bit 4
//! max_payload_bytes 16 MiB (else 64 KiB). Then operations (`tensorwire_fuzz::reasm_op`):
//! arbitrary chunk bytes (as they are, or with their CRC recomputed), valid chunks of
//! built-in payloads (a container, plain bytes, an empty payload) cut by `ChunkPlan` at
//! several sizes, mutated copies of them, all of a payload's chunks, and clock jumps. A
//! returned payload must pass `verify_payload` against its chunks' kind and digest, and
//! the pending bytes must stay within `max_pending_bytes`.
//!
//! The body is `tensorwire_fuzz::targets::reassemble`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tensorwire_fuzz::targets::reassemble(data));
