//! `Pipeline::parse(spec)?.decode(dtype, shape, stored, base, out)` on arbitrary stored
//! bytes. The first bytes pick the spec (every stage, see `tensorwire_fuzz::SPECS`, or
//! an inline spec string), the dtype and a small shape (decoded size at most 4 MiB);
//! see `tensorwire_fuzz::CodecInput`. Any `Err` is fine; a panic, abort, overflow,
//! hang or unbounded allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorwire::codec::Pipeline;
use tensorwire_fuzz::{capped_nbytes, codec_base, CodecInput};

fuzz_target!(|data: &[u8]| {
    let Some(input) = CodecInput::parse(data) else {
        return;
    };
    let Ok(pipeline) = Pipeline::parse(&input.spec) else {
        return;
    };
    // What the header would store must parse back to the same pipeline.
    let canonical = pipeline.to_string();
    let again = Pipeline::parse(&canonical).expect("a pipeline's canonical spec parses");
    assert_eq!(
        again, pipeline,
        "canonical spec {canonical:?} does not round-trip"
    );
    let nbytes = capped_nbytes(input.dtype, &input.shape).expect("bounded by CodecInput");
    let mut out = vec![0u8; nbytes];
    let base = codec_base(input.base_mode, nbytes);
    let _ = pipeline.decode(
        input.dtype,
        &input.shape,
        input.stored,
        base.as_deref(),
        &mut out,
    );
    let _ = pipeline.is_lossless();
    let _ = pipeline.check(input.dtype);
});
