//! Federated averaging of an arbitrary payload. Byte 0 is flags
//! (`tensorwire_fuzz::AggFlags`: verify, clipping, float64, difference/model, base,
//! weights); the rest is a payload. When it parses (as is, or resealed so that mutated
//! bytes get past the header hash and the tensor checksums), a `Round` is built from its
//! own entries (averageable dtypes only, at most 16 MiB in all), then
//! `Accumulator::new` + `check` + `add` (twice) + `finish_into`, and `aggregate` over
//! two copies of the update.
//!
//! The body is `tensorwire_fuzz::targets::aggregate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tensorwire_fuzz::targets::aggregate(data));
