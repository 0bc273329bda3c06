//! Encode arbitrary values with every pipeline, decode them back: what encodes must
//! decode, lossless pipelines must give back every bit, nothing may panic.
//!
//! The body is `tensorwire_fuzz::targets::codec_roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tensorwire_fuzz::targets::codec_roundtrip(data));
