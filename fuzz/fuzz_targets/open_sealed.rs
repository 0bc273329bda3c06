//! Sealed streams under a fixed key: arbitrary bytes opened as one are refused, a
//! plaintext seals and opens back, and one change to its sealed stream (a flipped byte,
//! a cut, a dropped or swapped block, another tensor index) is refused.
//!
//! The body is `tensorwire_fuzz::targets::open_sealed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tensorwire_fuzz::targets::open_sealed(data));
