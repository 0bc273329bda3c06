//! `container::parse` of arbitrary bytes; on success `Layout::verify` and a decode of
//! every tensor within the caps (`tensorwire_fuzz::exercise_layout`). Each input is
//! tried as it is, then resealed (header hash and data length recomputed), then with
//! every tensor checksum recomputed too, so mutations reach the JSON header and the
//! codecs behind the BLAKE3 checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorwire::container;
use tensorwire_fuzz::{exercise_layout, reseal_header, reseal_tensors};

fuzz_target!(|data: &[u8]| {
    if let Ok(layout) = container::parse(data) {
        exercise_layout(data, &layout);
        return;
    }
    let mut sealed = data.to_vec();
    if !reseal_header(&mut sealed) {
        return;
    }
    if let Ok(layout) = container::parse(&sealed) {
        exercise_layout(&sealed, &layout);
        if let Some((fixed, layout)) = reseal_tensors(&sealed) {
            exercise_layout(&fixed, &layout);
        }
    }
});
