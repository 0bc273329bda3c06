//! One small test per variant of [`Error`]: its message, its kind and the places it names.

use super::*;

fn io() -> Error {
    Error::Io {
        context: "cannot write /x".into(),
        source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
    }
}

#[test]
fn failed_keeps_its_kind_and_message() {
    for (e, kind) in [
        (Error::format("bad header"), Kind::Format),
        (Error::integrity("bad header"), Kind::Integrity),
        (Error::authentication("bad header"), Kind::Authentication),
        (Error::codec("bad header"), Kind::Codec),
        (Error::input("bad header"), Kind::Input),
    ] {
        assert_eq!(e.kind(), kind);
        assert_eq!(e.to_string(), "bad header");
        assert_eq!(
            (e.tensor(), e.update(), e.chunk(), e.block()),
            (None, None, None, None)
        );
        assert!(e.broken_limit().is_none());
    }
}

#[test]
fn limit_names_the_limit_and_both_numbers() {
    let e = Error::limit(Kind::Format, Limit::Tensors, 70_000, 65_536);
    assert_eq!(e.to_string(), "70000 tensors exceed the limit of 65536");
    assert_eq!(e.kind(), Kind::Format);
    assert_eq!(e.broken_limit(), Some((Limit::Tensors, 70_000, 65_536)));
    assert_eq!(Limit::Tensors.name(), "MAX_TENSORS");
    let e = Error::limit(Kind::Format, Limit::DecodedBytes, 10, 5);
    assert!(e
        .to_string()
        .starts_with("decoding needs 10 bytes, more than max_decoded_bytes=5"));
    assert_eq!(Limit::DecodedBytes.name(), "max_decoded_bytes");
    let e = Error::limit(Kind::Input, Limit::NameLen, 70_000, 65_535).in_tensor("w");
    assert_eq!(e.kind(), Kind::Input);
    assert_eq!(e.broken_limit(), Some((Limit::NameLen, 70_000, 65_535)));
    assert!(e
        .to_string()
        .ends_with("tensor name of 70000 bytes exceeds the limit of 65535"));
}

#[test]
fn checksum_is_an_integrity_failure() {
    let e = Error::checksum(Checked::TensorBytes).in_tensor("w");
    assert_eq!(e.kind(), Kind::Integrity);
    assert_eq!(
        e.to_string(),
        "tensor \"w\": checksum mismatch, its bytes are corrupt"
    );
    let e = Error::checksum(Checked::Header);
    assert!(e.to_string().starts_with("header checksum mismatch"), "{e}");
    let e = Error::checksum(Checked::Chunk {
        stored: 0xab,
        computed: 0x1234,
    });
    assert!(
        e.to_string().contains("stored 000000ab, computed 00001234"),
        "{e}"
    );
}

#[test]
fn io_keeps_its_source() {
    let e = io();
    assert_eq!(e.kind(), Kind::Io);
    assert_eq!(e.to_string(), "cannot write /x: denied");
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(e.with_kind(Kind::Format).kind(), Kind::Io);
}

#[test]
fn places_wrap_outermost_first() {
    let at = ChunkAt {
        payload: [0xab; 16],
        index: 2,
        count: 5,
    };
    let e = Error::integrity("zstd data is corrupt")
        .in_block(3)
        .in_tensor("layer.0/w")
        .in_update(7);
    assert_eq!(
        e.to_string(),
        "update 7: tensor \"layer.0/w\": block 3: zstd data is corrupt"
    );
    assert_eq!(e.kind(), Kind::Integrity);
    assert_eq!(e.tensor(), Some("layer.0/w"));
    assert_eq!(e.update(), Some(7));
    assert_eq!(e.block(), Some(3));
    assert!(matches!(e.root(), Error::Failed { .. }));
    let e = Error::format("the chunk count is zero").in_chunk(at);
    assert_eq!(
        e.to_string(),
        format!(
            "chunk 2 of 5 of payload {}: the chunk count is zero",
            "ab".repeat(16)
        )
    );
    assert_eq!(e.chunk(), Some(&at));
    assert_eq!(at.payload_hex(), "ab".repeat(16));
}

#[test]
fn a_place_is_named_once() {
    let e = Error::format("x")
        .in_tensor("a")
        .in_tensor("a")
        .in_update(1)
        .in_update(2);
    assert_eq!(e.to_string(), "update 1: tensor \"a\": x");
    let at = ChunkAt {
        payload: [0; 16],
        index: 0,
        count: 1,
    };
    let e = Error::format("x").in_chunk(at).in_chunk(at);
    assert_eq!(e.to_string().matches("chunk 0").count(), 1);
}

#[test]
fn with_kind_changes_the_failure_and_keeps_the_places() {
    let e = Error::codec("spec does not fit")
        .in_tensor("w")
        .with_kind(Kind::Format);
    assert_eq!(e.kind(), Kind::Format);
    assert_eq!(e.tensor(), Some("w"));
    assert_eq!(e.to_string(), "tensor \"w\": spec does not fit");
    let e = Error::limit(Kind::Input, Limit::Rank, 70, 64).with_kind(Kind::Format);
    assert_eq!(
        (e.kind(), e.broken_limit()),
        (Kind::Format, Some((Limit::Rank, 70, 64)))
    );
    assert_eq!(
        Error::checksum(Checked::Header)
            .with_kind(Kind::Format)
            .kind(),
        Kind::Integrity
    );
}

#[test]
fn buffer_too_small_carries_both_sizes() {
    let e = Error::BufferTooSmall {
        needed: 100,
        available: 64,
    };
    assert_eq!(e.kind(), Kind::Input);
    assert_eq!(e.buffer_sizes(), Some((100, 64)));
    assert_eq!(
        e.to_string(),
        "the payload needs 100 bytes, the buffer holds 64"
    );
    assert!(e.broken_limit().is_none());
    assert_eq!(Error::input("x").buffer_sizes(), None);
}
