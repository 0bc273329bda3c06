//! `Pipeline::parse(spec)?.decode(dtype, shape, stored, base, out)` on arbitrary stored
//! bytes. The first bytes pick the spec (every stage, see `tensorwire_fuzz::SPECS`, or
//! an inline spec string), the dtype and a small shape (decoded size at most 4 MiB);
//! see `tensorwire_fuzz::CodecInput`. Any `Err` is fine; a panic, abort, overflow,
//! hang or unbounded allocation is a bug.
//!
//! The body is `tensorwire_fuzz::targets::codec_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tensorwire_fuzz::targets::codec_decode(data));
