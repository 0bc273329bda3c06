"""Corrupt, truncated and hostile payloads: each is a tensorwire error, never a crash,
a hang, a huge allocation or a silently wrong array."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import spec_reader as spec

import tensorwire as tw


def sample_payload() -> bytes:
    return tw.encode(
        {
            "w": np.arange(12, dtype=np.float32).reshape(3, 4),
            "b": np.array([1, 2, 3], np.int16),
            "s": [np.float64(2.5), np.zeros((0, 2), np.uint8)],
        },
        metadata={"round": 1},
    )


def test_every_single_flipped_byte_is_detected():
    blob = sample_payload()
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises((tw.IntegrityError, tw.FormatError)):
            tw.decode(bytes(bad))


def test_flipped_data_byte_names_the_tensor():
    a = np.arange(100, dtype=np.float32)
    blob = bytearray(tw.encode({"first": np.ones(4), "victim": a}))
    r = tw.open(bytes(blob))
    # The last byte of the payload belongs to the last tensor.
    blob[-1] ^= 0xFF
    with pytest.raises(tw.IntegrityError, match='"victim": checksum mismatch'):
        tw.decode(bytes(blob))
    with pytest.raises(tw.IntegrityError, match="victim"):
        tw.open(bytes(blob)).verify()
    # Without verification the header is still checked but data is trusted.
    assert tw.decode(bytes(blob), verify=False)["victim"].shape == (100,)
    assert r.content_id == tw.open(bytes(blob)).content_id


def test_every_truncation_is_detected():
    blob = sample_payload()
    for n in range(len(blob)):
        with pytest.raises((tw.IntegrityError, tw.FormatError)):
            tw.decode(blob[:n])
    with pytest.raises(tw.IntegrityError, match="truncated"):
        tw.decode(blob[:-1])


def test_trailing_bytes_are_refused():
    with pytest.raises(tw.FormatError, match="unexpected bytes after"):
        tw.decode(sample_payload() + b"\0")


def test_not_a_payload():
    for junk in [b"", b"PK\x03\x04", b"\x93NUMPY" + bytes(100), bytes(64)]:
        with pytest.raises(tw.FormatError, match="magic"):
            tw.decode(junk)
    with pytest.raises(tw.InputError, match="bytes-like"):
        tw.decode("a string")
    with pytest.raises(tw.InputError, match="bytes-like"):
        tw.decode(12)


DATA = np.arange(4, dtype=np.float32).tobytes()


def one(**kw):
    """A valid one-tensor header, with fields overridden by ``kw``."""
    e = spec.entry("t", "float32", [4], DATA, 0)
    e.update(kw)
    return {"tensors": [e]}


@pytest.mark.parametrize(
    "header, data, match",
    [
        (one(length=1 << 40), DATA, "does not match shape"),
        (one(shape=[5]), DATA, "does not match shape"),
        (one(offset=64), DATA, "outside the data section"),
        (one(offset=3), DATA, "not a multiple of 64"),
        (one(shape=[-4]), DATA, "header is not valid"),
        (one(shape=[1 << 62, 1 << 62]), DATA, "overflows"),
        (one(shape=[0, 1 << 63]), DATA, "overflows|header is not valid"),
        (one(shape=[2] * 65), DATA, "rank 65 exceeds"),
        (one(dtype="object"), DATA, 'unknown dtype "object"'),
        (one(codec="gzip"), DATA, 'unknown codec stage "gzip"'),
        (one(hash="zz" * 32), DATA, "hash is not 64 lowercase hex"),
        (one(name="x" * 70_000), DATA, "exceeds the limit"),
        ({"tensors": "nope"}, DATA, "header is not valid"),
        ({"nothing": []}, b"", "header is not valid"),
        ({"tensors": [], "structure": {"list": [0]}}, b"", "not a tensor index"),
        (dict(one(), structure={"list": [0, 0]}), DATA, "more than once"),
        (dict(one(), structure={"dict": [["a", 0], ["a", 0]]}), DATA, "twice"),
        (dict(one(), structure={"list": []}), DATA, "does not place tensor 0"),
        (dict(one(), base="xyz"), DATA, "base id"),
    ],
)
def test_hostile_headers(header, data, match):
    with pytest.raises(tw.FormatError, match=match):
        tw.decode(spec.write(header, data))


def test_an_unknown_codec_stage_refuses_the_whole_payload():
    """docs/FORMAT.md sections 6-7: a tensor whose codec names a stage the reader does not
    know makes the whole payload unreadable, refused when the header is parsed with a
    FormatError naming the tensor and the stage; its well-formed neighbour is not read."""
    good = spec.entry("good", "float32", [4], DATA, 0)
    later = dict(spec.entry("later", "float32", [4], DATA, 64), codec="zstd:3+quantum")
    blob = spec.write({"tensors": [good, later]}, DATA + bytes(48) + DATA)
    for read in (tw.decode, tw.open, lambda b: tw.decode(b, verify=False)):
        with pytest.raises(tw.FormatError) as e:
            read(blob)
        assert '"later"' in str(e.value) and '"quantum"' in str(e.value), e.value
        assert '"good"' not in str(e.value)


def test_overlapping_and_out_of_order_tensors():
    a = spec.entry("a", "float32", [4], DATA, 0)
    b = spec.entry("b", "float32", [4], DATA, 0)
    with pytest.raises(tw.FormatError, match="overlaps"):
        tw.decode(spec.write({"tensors": [a, b]}, DATA))
    b = spec.entry("b", "float32", [4], DATA, 64)
    with pytest.raises(tw.FormatError, match="overlaps"):
        tw.decode(spec.write({"tensors": [b, a]}, DATA + bytes(48) + DATA))


def test_duplicate_names():
    a = spec.entry("a", "float32", [4], DATA, 0)
    b = spec.entry("a", "float32", [4], DATA, 64)
    with pytest.raises(tw.FormatError, match='"a" appears twice'):
        tw.decode(spec.write({"tensors": [a, b]}, DATA + bytes(48) + DATA))


def test_gaps_must_be_zero_and_data_must_end_at_last_tensor():
    a = spec.entry("a", "float32", [4], DATA, 0)
    b = spec.entry("b", "float32", [4], DATA, 64)
    with pytest.raises(tw.IntegrityError, match="padding before tensor"):
        tw.decode(spec.write({"tensors": [a, b]}, DATA + b"\1" + bytes(47) + DATA))
    with pytest.raises(tw.FormatError, match="tensors end at 16"):
        tw.decode(spec.write({"tensors": [a]}, DATA + bytes(48)))


def test_invalid_utf8_and_invalid_json_headers():
    with pytest.raises(tw.FormatError, match="UTF-8"):
        tw.decode(spec.write(b'{"tensors": [], "metadata": "\xff\xfe"}', b""))
    with pytest.raises(tw.FormatError, match="header is not valid"):
        tw.decode(spec.write(b'{"tensors": [', b""))
    with pytest.raises(tw.FormatError, match="header is not valid"):
        tw.decode(spec.write(b'{"tensors": [], "metadata": NaN}', b""))


def test_deeply_nested_json_is_refused_without_crashing():
    deep = b'{"tensors": [], "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(tw.FormatError, match="header is not valid|metadata is not valid"):
        tw.decode(spec.write(deep, b""))
    with pytest.raises(tw.InputError, match="metadata"):
        tw.encode({}, metadata=json.loads("[" * 200 + "]" * 200))
    structure = 0
    for _ in range(100):
        structure = {"list": [structure]}
    with pytest.raises(tw.FormatError, match="deeper than 64|structure is not valid"):
        tw.decode(spec.write(dict(one(), structure=structure), DATA))


def test_header_bombs_are_refused_before_allocating():
    for header_len in [1 << 62, (1 << 64) - 64, 257 << 20, 0, 63]:
        blob = spec.write(one(), DATA, header_len=header_len)
        with pytest.raises(tw.FormatError, match="header length"):
            tw.decode(blob)
    # A header length within limits but beyond the buffer is a truncation.
    with pytest.raises(tw.IntegrityError, match="truncated"):
        tw.decode(spec.write(one(), DATA, header_len=1 << 20))
    with pytest.raises(tw.IntegrityError, match="truncated"):
        tw.decode(spec.write(one(), DATA, data_len=1 << 60))


def test_forged_header_hash_is_caught():
    blob = bytearray(spec.write(one(), DATA))
    header_len = struct.unpack_from("<Q", blob, 16)[0]
    text = bytes(blob[64 : 64 + header_len]).replace(b'"shape": [4]', b'"shape": [2]')
    blob[64 : 64 + header_len] = text
    with pytest.raises(tw.IntegrityError, match="header checksum"):
        tw.decode(bytes(blob))


def test_versions():
    with pytest.raises(tw.FormatError, match="unsupported format version 2.0"):
        tw.decode(spec.write(one(), DATA, major=2))
    with pytest.raises(tw.FormatError, match="reserved"):
        blob = bytearray(spec.write(one(), DATA))
        blob[12] = 1
        tw.decode(bytes(blob))
    # A newer minor version with keys this reader doesn't know still reads.
    header = dict(one(), future={"x": 1})
    header["tensors"][0]["future_field"] = True
    r = tw.open(spec.write(header, DATA, minor=7))
    assert r.version == (1, 7)
    assert r["t"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_unknown_dtype_name_from_a_newer_writer_names_the_tensor():
    with pytest.raises(tw.FormatError, match='tensor "t": unknown dtype'):
        tw.decode(spec.write(one(dtype="float4"), DATA))


def test_metadata_is_returned_not_evaluated():
    payload = spec.write(dict(one(), metadata={"__class__": "os.system"}), DATA)
    assert tw.open(payload).metadata == {"__class__": "os.system"}
    assert json.loads(json.dumps(tw.open(payload).metadata))
