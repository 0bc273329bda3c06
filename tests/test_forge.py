"""The forger (tests/forge.py) speaks the spec: on valid inputs its payloads, coded
tensors, chunks and update records are what the library reads back."""

from __future__ import annotations

import json
import random
import struct

import forge
import numpy as np
import pytest
import spec_reader

import tensorwire as tw
from tensorwire import chunking, fl

X = (np.arange(300_000, dtype=np.float32) * 0.37).astype(np.float32)  # two 2**18 blocks


def decode_one(dtype: str, shape: list[int], stored: bytes, codec: str, **header) -> np.ndarray:
    blob = forge.payload([forge.T("t", dtype, shape, stored, codec)], **header)
    tw.open(blob).verify()
    return tw.decode(blob)["t"]


@pytest.mark.parametrize(
    "codec, compressor, layout",
    [
        ("zstd:3", "zstd", ""),
        ("zstd:3", "zstd-raw", ""),
        ("lz4", "lz4", ""),
        ("shuffle", "", "shuffle"),
        ("shuffle+zstd:1", "zstd", "shuffle"),
        ("shuffle+lz4", "lz4", "shuffle"),
        ("floatzip", "", "floatzip"),
    ],
)
def test_dense_pipelines_decode(codec, compressor, layout):
    stored = forge.dense(X.tobytes(), 4, compressor=compressor, layout=layout)
    np.testing.assert_array_equal(decode_one("float32", [len(X)], stored, codec), X)


def test_float64_floatzip_with_zstd_planes_and_tiny_blocks():
    x = np.linspace(-3, 3, 1000)
    bodies = [forge.floatzip(x[i : i + 128].tobytes(), 8, [1, 0] * 4) for i in range(0, 1000, 128)]
    stored = forge.twc1(bodies, block_scalars=128)
    np.testing.assert_array_equal(
        decode_one("float64", [10, 100], stored, "floatzip"), x.reshape(10, 100)
    )


def test_hand_made_rle_frames_and_lz4_matches():
    n = (1 << 20) + 5  # more than one RLE block per frame, and a short last block
    stored = forge.twc1([forge.zstd_rle(7, n)], block_scalars=n)
    assert decode_one("uint8", [n], stored, "zstd:3").tolist() == [7] * n
    stored = forge.twc1([forge.lz4_repeat(9, 1000), forge.lz4_repeat(9, 17)], block_scalars=1000)
    assert decode_one("int8", [1017], stored, "lz4").tolist() == [9] * 1017
    no_size = forge.zstd_rle(1, 4096, content_size=None)
    assert decode_one("uint8", [4096], forge.twc1([no_size], block_scalars=4096), "zstd:3").all()


def test_sparse_blocks_and_int8_scales():
    idx = [[0, 3, 99], [], [1, 49]]  # three blocks of 100 scalars, the last of 50
    vals = [np.array(v, np.float32) for v in ([1.5, -2, 3], [], [4, 5])]
    bodies = [forge.sparse_body(i, v.tobytes()) for i, v in zip(idx, vals)]
    want = np.zeros(250, np.float32)
    for b, (i, v) in enumerate(zip(idx, vals)):
        want[[100 * b + j for j in i]] = v
    for codec, wrap in [("topk:0.1", bytes), ("threshold:0.5+zstd:3", forge.zstd_frame)]:
        stored = forge.twc1([wrap(x) for x in bodies], block_scalars=100, counts=[3, 0, 2])
        np.testing.assert_array_equal(decode_one("float32", [250], stored, codec), want)
    q = np.array([[-127, 0, 5], [1, 2, 127]], np.int8)
    stored = forge.twc1([q.tobytes()], block_scalars=6, scales=[0.5, 2.0])
    got = decode_one("float32", [2, 3], stored, "int8:channel")
    np.testing.assert_array_equal(got, q * np.array([[0.5], [2.0]], np.float32))


def test_base_id_and_delta_decode():
    base = {"w": np.arange(4, dtype=np.float32), "b": np.ones((2, 1), np.float64)}
    new = {k: v + 1 for k, v in base.items()}
    want = tw.open(tw.encode(new, codec="delta", base=base)).base_id
    tuples = [(k, str(v.dtype), v.shape, v.tobytes()) for k, v in base.items()]
    assert forge.base_id(tuples) == want
    stored = forge.twc1([np.ones(4, np.float32).tobytes()], block_scalars=4)
    blob = forge.payload(
        [
            forge.T("w", "float32", [4], stored, "delta"),
            forge.T("b", "float64", [2, 1], b"\0" * 16),
        ],
        base=want,
    )
    out = tw.decode(blob, base=base)
    np.testing.assert_array_equal(out["w"], new["w"])
    assert out["b"].tolist() == [[0.0], [0.0]]


def test_header_keys_structure_and_metadata():
    a, b = np.arange(3, dtype=np.int16), np.array(2.5)
    blob = forge.payload(
        [forge.T("x", "int16", [3], a.tobytes()), forge.T("y", "float64", [], b.tobytes())],
        minor=3,
        structure={"dict": [["k", {"tuple": [1, 0]}]]},
        metadata=[1, {"z": None}],
        unknown={"future": True},
    )
    out = tw.decode(blob)
    assert out["k"][0] == 2.5 and out["k"][1].tolist() == [0, 1, 2]
    assert tw.open(blob).metadata == [1, {"z": None}]
    assert forge.header_of(blob)["unknown"] == {"future": True}


def test_chunks_match_the_library_and_reassemble():
    blob = tw.encode({"w": X}, codec="shuffle+zstd")
    pid = bytes(range(16))
    assert forge.chunks(blob, 1000, payload_id=pid) == list(tw.chunk(blob, 1088, payload_id=pid))
    for kind, data in [(1, blob), (0, b"any bytes" * 999), (0, b"")]:
        pieces = forge.chunks(data, 777, kind=kind)
        random.Random(kind).shuffle(pieces)
        r = tw.Reassembler()
        done = [x for x in (r.add(p) for p in pieces + pieces[:1]) if x is not None]
        assert done == [data]
    info = chunking.chunk_info(forge.chunks(blob, 1000, payload_id=pid)[3])
    assert (info["index"], info["offset"], info["body_len"]) == (3, 3000, 1000)
    bad = forge.chunk(b"x", payload_id=pid, index=0, count=1, total=1, offset=0, crc=0)
    with pytest.raises(tw.IntegrityError):
        tw.Reassembler().add(bad)


def test_update_records():
    base = {"w": np.zeros(4, np.float32)}
    bid = forge.base_id([("w", "float32", [4], bytes(16))])
    ups = [
        forge.payload(
            [forge.T("w", "float32", [4], np.full(4, v, np.float32).tobytes())],
            metadata=forge.update_metadata(bid, round=2, client=f"c{v}", samples=n, note="x"),
        )
        for v, n in [(1, 1), (4, 3)]
    ]
    assert fl.update_info(ups[1]) == fl.UpdateInfo("difference", bid, 2, "c4", 3)
    out = tw.aggregate(ups, weights="samples", base=base, round=2)
    assert out["w"].tolist() == [3.25] * 4


def test_forged_fields_are_forged():
    stored = forge.twc1([b"abc"], block_scalars=5, lengths=[9, 9], magic=b"NOPE")
    assert stored[:4] == b"NOPE" and struct.unpack_from("<III", stored, 4) == (5, 9, 9)
    assert forge.twc1([], block_scalars=1, scales=[float("nan")])[8:12] == b"\x00\x00\xc0\x7f"
    assert forge.leb128(300) == b"\xac\x02" and len(forge.leb128(1 << 35)) == 6


# -- authenticated and signed payloads (FORMAT.md section 10) ----------------------------

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
SK, SK2 = bytes(range(7, 39)), bytes(range(9, 41))
PK, PK2 = tw.public_key(SK), tw.public_key(SK2)
W = np.arange(40, dtype=np.float32)
B = np.array([[1, -2], [3, 4]], np.int16)


def test_forged_keyed_and_signed_payloads_are_what_the_library_reads():
    assert forge.public_key(SK) == PK and forge.key_id(KEY) == tw.key_id(KEY)
    tensors = [
        forge.T("w", "float32", [40], W.tobytes()),
        forge.T("b", "int16", [2, 2], B.tobytes()),
    ]
    for key, sk in [(KEY, None), (None, SK), (KEY, SK)]:
        blob = forge.payload(tensors, key=key, signing_key=sk, metadata={"m": 1})
        assert (blob[10], blob[12], blob[13]) == (1, key is not None, sk is not None)
        read = {"key": key, "trusted_keys": [PK] if sk else None}
        out = tw.decode(blob, **read)
        np.testing.assert_array_equal(out["w"], W)
        np.testing.assert_array_equal(out["b"], B)
        with tw.open(blob, **read) as r:
            assert r.key_id == (tw.key_id(key) if key else None)
            assert r.signer == (PK if sk else None)
            assert (r.created, r.nonce, r.metadata) == (1_700_000_000_000, bytes(16), {"m": 1})
        # The same payload rewritten by an insider: re-keyed and re-signed, still read.
        doc = forge.header_of(blob)
        doc["metadata"] = {"m": 2}
        again = forge.with_header(blob[: len(blob) - 64 * bool(sk)], doc, key=key, signing_key=sk)
        assert tw.open(again, **read).metadata == {"m": 2}


def outcome(read, blob: bytes, **options) -> tuple[str, object]:
    """("ok", what ``read(blob, **options)`` returns) or the class of refusal:
    "authentication" or "refused"."""
    try:
        return "ok", read(blob, **options)
    except (tw.AuthenticationError, spec_reader.SpecAuthError):
        return "authentication", None
    except (tw.TensorwireError, spec_reader.SpecError, ValueError, KeyError, AssertionError):
        return "refused", None


def changed_tensor(blob: bytes, key: bytes | None) -> bytes:
    """A byte of tensor "w" changed, its hash and the header hash recomputed (plain, or
    keyed with ``key``); a signature trailer is kept as it was."""
    doc = forge.header_of(blob)
    (h, d) = struct.unpack_from("<QQ", blob, 16)
    at = 64 + h + doc["tensors"][0]["offset"] + 3
    changed = blob[:at] + bytes([blob[at] ^ 0x20]) + blob[at + 1 :]
    return forge.with_header(changed[: 64 + h + d], doc, key=key) + changed[64 + h + d :]


def variants(blob: bytes) -> dict[str, bytes]:
    """What an attacker (with or without the key, with his own signing key) makes of a
    library-written payload."""
    signed = bool(blob[13] & 1)
    end = len(blob) - 64 * signed
    trailer = blob[end:]
    doc = forge.header_of(blob)
    out = {
        "as written": blob,
        "tensor changed, plain hashes": changed_tensor(blob, None),
        "tensor changed, keyed with another key": changed_tensor(blob, OTHER),
        "tensor changed, keyed with the key": changed_tensor(blob, KEY),
        "auth byte cleared": forge.reseal(blob[:12] + b"\0" + blob[13:]),
        "auth byte set": forge.reseal(blob[:12] + b"\1" + blob[13:]),
        "auth byte 2": forge.reseal(blob[:12] + b"\2" + blob[13:]),
        "flag bit 1": forge.reseal(blob[:13] + bytes([blob[13] | 2]) + blob[14:]),
        "signed flag cleared": forge.reseal(blob[:13] + b"\0" + blob[14:]),
        "minor 0": forge.reseal(blob[:10] + b"\0\0" + blob[12:]),
        "trailer cut": blob[:-1],
        "trailer gone": blob[:end],
        "signed by another key": forge.sign(blob[:end], SK2),
        "header padding changed": blob[: 64 + struct.unpack_from("<Q", blob, 16)[0] - 1]
        + b"\t"
        + blob[64 + struct.unpack_from("<Q", blob, 16)[0] :],
    }
    for name, change in [
        ("auth has an extra field", lambda a: a.update(extra=1)),
        ("auth without nonce", lambda a: a.pop("nonce")),
        ("auth created -1", lambda a: a.update(created=-1)),
        ("auth created 1.5", lambda a: a.update(created=1.5)),
        ("auth nonce upper case", lambda a: a.update(nonce="AB" * 16)),
        ("auth without key_id", lambda a: a.pop("key_id", None)),
        ("auth names another key", lambda a: a.update(key_id=tw.key_id(OTHER))),
        ("auth names another signer", lambda a: a.update(signer=PK2.hex())),
        ("auth drops the signer", lambda a: a.pop("signer", None)),
    ]:
        d = json.loads(json.dumps(doc))
        d.setdefault("auth", {"created": 0, "nonce": "00" * 16})
        change(d["auth"])
        for key in {None, KEY if blob[12] else None}:
            out[f"{name}, {'keyed' if key else 'plain'} hash"] = (
                forge.with_header(blob[:end], d, key=key) + trailer
            )
    # A signer of the attacker's own: re-signed with his key, his public key named.
    d = json.loads(json.dumps(doc))
    d.setdefault("auth", {"created": 0, "nonce": "00" * 16})["signer"] = PK2.hex()
    keyed = KEY if blob[12] else None
    out["re-signed by the attacker"] = forge.with_header(
        forge.reseal(blob[:13] + b"\1" + blob[14:end], keyed)[:end], d, key=keyed, signing_key=SK2
    )
    return out


READERS = [
    {},
    {"key": KEY},
    {"keys": [OTHER]},
    {"keys": [OTHER, KEY]},
    {"trusted_keys": [PK]},
    {"trusted_keys": [PK2]},
    {"key": KEY, "trusted_keys": [PK]},
]


@pytest.mark.parametrize("key, sk", [(None, None), (KEY, None), (None, SK), (KEY, SK)])
def test_the_spec_reader_and_the_library_agree_on_authenticated_payloads(key, sk):
    blob = tw.encode({"w": W, "b": B}, key=key, signing_key=sk, metadata=[1])
    assert spec_reader.VERIFIES_SIGNATURES, "cryptography (a dependency of flwr) is missing"
    seen: dict[str, int] = {}
    for name, forged in variants(blob).items():
        for read in READERS:
            keys = read.get("keys") or ([read["key"]] if "key" in read else [])
            trusted = read.get("trusted_keys")
            lib = outcome(tw.decode, forged, **read)
            spec = outcome(spec_reader.read, forged, keys=keys, trusted_keys=trusted)
            assert lib[0] == spec[0], (name, read, lib[0], spec[0])
            if lib[0] == "ok":
                np.testing.assert_array_equal(lib[1]["w"], spec[1][0]["w"])
                np.testing.assert_array_equal(lib[1]["b"], spec[1][0]["b"])
            seen[lib[0]] = seen.get(lib[0], 0) + 1
    assert seen.get("ok", 0) >= 2 and seen.get("authentication", 0) >= 10, seen
    assert seen.get("refused", 0) >= 10, seen


def test_tagged_chunks_of_a_keyed_payload_match_the_library():
    blob = tw.encode({"w": W}, key=KEY, signing_key=SK)
    pid = bytes(range(16))
    ours = forge.chunks(blob, 100, payload_id=pid, kind=1, key=KEY)
    assert ours == list(tw.chunk(blob, 100 + 88 + 16, payload_id=pid, key=KEY))
    assert chunking.chunk_info(ours[0])["kind"] == "tensorwire"
    r = tw.Reassembler(key=KEY, trusted_keys=[PK])
    done = [p for p in (r.add(c) for c in reversed(ours)) if p is not None]
    assert done == [blob]
    with pytest.raises(tw.AuthenticationError, match="matches none"):
        tw.Reassembler(key=KEY).add(forge.chunk(b"x", payload_id=pid, index=0, count=1, total=1,
                                                offset=0, key=OTHER))  # fmt: skip
