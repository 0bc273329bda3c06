//! `format::parse` of arbitrary bytes; on success `Layout::verify` and a decode of
//! every tensor within the caps (`tensorwire_fuzz::exercise_layout`). Each input is
//! tried as it is, then resealed (header hash and data length recomputed), then with
//! every tensor checksum recomputed too, so mutations reach the JSON header and the
//! codecs behind the BLAKE3 checks.
//!
//! The body is `tensorwire_fuzz::targets::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tensorwire_fuzz::targets::parse(data));
