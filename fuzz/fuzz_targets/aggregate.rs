//! Federated averaging of an arbitrary payload. Byte 0 is flags
//! (`tensorwire_fuzz::AggFlags`: verify, clipping, float64, difference/model, base,
//! weights); the rest is a payload. When it parses (as is, or resealed so that mutated
//! bytes get past the header hash and the tensor checksums), a `Round` is built from its
//! own entries (averageable dtypes only, at most 16 MiB in all), then
//! `Accumulator::new` + `check` + `add` (twice) + `finish_into`, and `aggregate` over
//! two copies of the update.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorwire::container;
use tensorwire_fuzz::{exercise_aggregate, reseal_header, reseal_tensors, AggFlags};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    let flags = AggFlags(flags);
    if let Ok(layout) = container::parse(payload) {
        exercise_aggregate(flags, payload, &layout);
        return;
    }
    let mut sealed = payload.to_vec();
    if !reseal_header(&mut sealed) {
        return;
    }
    if let Some((fixed, layout)) = reseal_tensors(&sealed) {
        exercise_aggregate(flags, &fixed, &layout);
    }
});
