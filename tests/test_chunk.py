"""Chunk framing: tw.chunk, tw.encode_chunks, tw.Reassembler (docs/FORMAT.md, "Chunk framing")."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorwire as tw
from tensorwire import chunking

HEADER = chunking.CHUNK_HEADER_LEN
MIN_CHUNK = HEADER + 1


def reseal(piece: bytes | bytearray) -> bytes:
    """Recompute a tampered chunk's CRC-32, as a forger would (FORMAT.md: CRC-32 of
    header bytes 0..84 followed by the body, little-endian at 84..88)."""
    b = bytearray(piece)
    crc = zlib.crc32(bytes(b[HEADER:]), zlib.crc32(bytes(b[:84])))
    b[84:88] = struct.pack("<I", crc)
    return bytes(b)


def feed(r: tw.Reassembler, pieces, now: float | None = None) -> list[bytes]:
    return [p for p in (r.add(c, now) for c in pieces) if p is not None]


# -- round trips ------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=20_000),
    max_bytes=st.integers(MIN_CHUNK, 5_000),
    seed=st.integers(0, 2**32),
)
def test_round_trip_shuffled_and_duplicated(payload: bytes, max_bytes: int, seed: int) -> None:
    pieces = list(tw.chunk(payload, max_bytes))
    assert all(len(p) <= max_bytes for p in pieces)
    rng = random.Random(seed)
    order = pieces + rng.sample(pieces, k=rng.randint(0, len(pieces)))
    rng.shuffle(order)
    r = tw.Reassembler()
    assert feed(r, order) == [payload]
    assert r.pending() == [] and r.pending_bytes == 0


@settings(max_examples=40, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=8_000), min_size=2, max_size=8),
    max_bytes=st.integers(MIN_CHUNK, 2_000),
    seed=st.integers(0, 2**32),
)
def test_interleaved_payloads(payloads: list[bytes], max_bytes: int, seed: int) -> None:
    tagged = [(i, p) for i, payload in enumerate(payloads) for p in tw.chunk(payload, max_bytes)]
    random.Random(seed).shuffle(tagged)
    r = tw.Reassembler()
    got: dict[int, bytes] = {}
    for i, piece in tagged:
        done = r.add(piece)
        if done is not None:
            assert i not in got
            got[i] = done
    assert got == dict(enumerate(payloads))


def test_bytes_like_inputs_and_views() -> None:
    payload = bytes(range(256)) * 100
    for blob in (bytearray(payload), memoryview(payload), np.frombuffer(payload, np.uint8)):
        pieces = list(tw.chunk(blob, 1000))
        r = tw.Reassembler()
        assert feed(r, [memoryview(p) for p in pieces[::-1]]) == [payload]
    with pytest.raises(tw.InputError, match="bytes-like"):
        tw.chunk("text", 1000)  # type: ignore[arg-type]
    with pytest.raises(tw.InputError, match="C-contiguous"):
        tw.chunk(np.zeros((10, 10), np.uint8)[:, ::2], 1000)


def test_iterator_reports_its_shape() -> None:
    c = tw.chunk(b"x" * 1000, MIN_CHUNK + 99, payload_id=b"0123456789abcdef")
    assert (c.count, c.total_len, len(c)) == (10, 1000, 10)
    assert c.payload_id == b"0123456789abcdef".hex()
    next(c)
    assert len(c) == 9
    info = chunking.chunk_info(next(c))
    assert info["index"] == 1 and info["offset"] == 100 and info["body_len"] == 100
    assert info["kind"] == "bytes" and info["payload_id"] == c.payload_id


def test_max_bytes_validation() -> None:
    with pytest.raises(tw.InputError, match="too small"):
        tw.chunk(b"abc", HEADER)
    with pytest.raises(tw.InputError, match="non-negative"):
        tw.chunk(b"abc", -1)
    with pytest.raises(tw.InputError, match="16 bytes"):
        tw.chunk(b"abc", 1000, payload_id=b"short")
    assert [len(p) for p in tw.chunk(b"abc", MIN_CHUNK)] == [MIN_CHUNK] * 3
    assert [len(p) for p in tw.chunk(b"", MIN_CHUNK)] == [HEADER]


def test_tensorwire_payloads_travel_as_containers() -> None:
    model = {"a": np.arange(10_000, dtype=np.float32), "b": np.ones((3, 4), np.int64)}
    blob = tw.encode(model, metadata={"round": 3})
    pieces = list(tw.chunk(blob, 4096))
    info = chunking.chunk_info(pieces[0])
    assert info["kind"] == "tensorwire"
    assert info["digest"] == tw.open(blob).content_id
    r = tw.Reassembler()
    (out,) = feed(r, reversed(pieces))
    assert out == blob
    np.testing.assert_array_equal(tw.decode(out)["a"], model["a"])


# -- streaming encode ---------------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [MIN_CHUNK, 200, 1000, 4096, 65536, 10**7])
@pytest.mark.parametrize("codec", ["raw", "shuffle+zstd"])
def test_encode_chunks_equals_encode(max_bytes: int, codec: str) -> None:
    rng = np.random.default_rng(max_bytes)
    model = {
        "emb": rng.standard_normal((64, 33)).astype(np.float32),
        "layers": [
            {"w": rng.standard_normal((17, 5)), "b": np.zeros(5, np.float16)},
            {"w": rng.standard_normal((5, 3)).astype(np.float32), "b": np.arange(3)},
        ],
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.float32(2.5),
    }
    expected = tw.encode(model, codec=codec, metadata={"round": 7})
    chunks = tw.encode_chunks(model, max_bytes, codec=codec, metadata={"round": 7})
    assert chunks.total_len == len(expected)
    pieces = list(chunks)
    assert len(pieces) == chunks.count and all(len(p) <= max_bytes for p in pieces)
    assert {chunking.chunk_info(p)["kind"] for p in pieces} == {"tensorwire"}
    # Data chunks first, in order; the chunks holding the header last, once it is known.
    order = [chunking.chunk_info(p)["index"] for p in pieces]
    head = len(order) - order.index(0)
    assert order == list(range(head, len(order))) + list(range(head))
    random.Random(max_bytes).shuffle(pieces)
    (out,) = feed(tw.Reassembler(), pieces)
    assert out == expected
    back = tw.decode(out)
    np.testing.assert_array_equal(back["layers"][1]["b"], model["layers"][1]["b"])


def test_encode_chunks_of_a_model_changed_midway_is_rejected() -> None:
    w = np.zeros(100_000, np.float32)
    chunks = tw.encode_chunks({"w": w}, 10_000)
    pieces = [next(chunks) for _ in range(5)]
    # Modified while being sent: the data bytes that travel in the header's chunk were
    # hashed at the start, so the header's checksum no longer matches them.
    w[0] = 1.0
    pieces += list(chunks)
    with pytest.raises(tw.IntegrityError, match="not intact"):
        feed(tw.Reassembler(), pieces)


def test_encode_chunks_bad_input() -> None:
    with pytest.raises(tw.InputError, match="too small"):
        tw.encode_chunks({"w": np.zeros(3)}, 10)
    with pytest.raises(tw.InputError, match="unsupported dtype"):
        tw.encode_chunks({"w": np.array(["a"])}, 1000)
    with pytest.raises(tw.CodecError):
        tw.encode_chunks({"w": np.zeros(3)}, 1000, codec="nope")


# -- loss, timeout, corruption, forgery --------------------------------------------------


def test_missing_chunk_stays_pending_then_expires() -> None:
    pieces = list(tw.chunk(bytes(5000), 1000))
    r = tw.Reassembler(timeout=10.0)
    assert feed(r, pieces[:-1], now=100.0) == []
    ((pid, received, count, total),) = r.pending()
    assert (received, count, total) == (len(pieces) - 1, len(pieces), 5000)
    assert r.pending_bytes >= 5000
    assert r.evict_expired(now=109.0) == []
    assert r.evict_expired(now=110.5) == [pid]
    assert r.pending() == [] and r.pending_bytes == 0
    assert r.stats["expired"] == 1
    # The late last chunk alone does not make a payload.
    assert r.add(pieces[-1], now=111.0) is None
    assert r.pending()[0][1] == 1


def test_expiry_happens_on_add_too() -> None:
    a = list(tw.chunk(bytes(3000), 1000))
    b = list(tw.chunk(bytes(3000), 1000))
    r = tw.Reassembler(timeout=5.0)
    r.add(a[0], now=0.0)
    r.add(b[0], now=4.0)
    r.add(b[1], now=6.0)
    assert [p[0] for p in r.pending()] == [chunking.chunk_info(b[0])["payload_id"]]


def test_corrupt_chunk_is_rejected_without_losing_others() -> None:
    a, b = bytes(range(256)) * 40, bytes(range(255, -1, -1)) * 40
    pa, pb = list(tw.chunk(a, 1000)), list(tw.chunk(b, 1000))
    r = tw.Reassembler()
    feed(r, pa[1:] + pb[1:])
    for good in (pa[0], pb[3]):  # a new chunk, and a copy of one already received
        bad = bytearray(good)
        bad[HEADER + 5] ^= 0x10
        with pytest.raises(tw.IntegrityError, match="checksum mismatch"):
            r.add(bad)
    bad = bytearray(pa[0])
    bad[33] ^= 1  # the header's total length
    with pytest.raises(tw.TensorwireError):
        r.add(bad)
    assert len(r.pending()) == 2
    assert r.add(pa[0]) == a
    assert r.add(pb[0]) == b
    assert r.stats["rejected"] == 3


def test_forged_chunk_is_caught_by_the_digest() -> None:
    payload = bytes(range(256)) * 40
    pieces = list(tw.chunk(payload, 1000))
    forged = bytearray(pieces[2])
    forged[HEADER : HEADER + 4] = b"EVIL"
    forged = reseal(forged)
    other = list(tw.chunk(b"someone else's payload" * 100, 500))
    r = tw.Reassembler()
    r.add(other[0])
    r.add(forged)
    with pytest.raises(tw.IntegrityError, match="digest"):
        feed(r, [p for i, p in enumerate(pieces) if i != 2])
    assert r.stats["failed"] == 1
    assert feed(r, other[1:]) == [b"someone else's payload" * 100]
    # Arriving after the genuine chunk, or before it, the forgery is held beside it and
    # the genuine payload, the one that verifies, comes out.
    for first in (pieces[2], forged):
        r = tw.Reassembler()
        r.add(first)
        assert r.add(forged if first is pieces[2] else pieces[2]) is None
        assert r.stats["conflicts"] == 1
        assert feed(r, pieces) == [payload]


def test_forged_tensor_bytes_in_a_container() -> None:
    blob = tw.encode({"w": np.arange(4096, dtype=np.float32)})
    pieces = list(tw.chunk(blob, 2000))
    pieces[-1] = reseal(pieces[-1][:HEADER] + b"\x01" + pieces[-1][HEADER + 1 :])
    with pytest.raises(tw.IntegrityError, match="checksum mismatch"):
        feed(tw.Reassembler(), pieces)
    # verify=False leaves the tensor checksums to decode, which catches it.
    (out,) = feed(tw.Reassembler(verify=False), pieces)
    with pytest.raises(tw.IntegrityError, match="checksum"):
        tw.decode(out)


def test_inconsistent_chunks_of_one_payload_id() -> None:
    pid = b"same-id-for-both"
    a = list(tw.chunk(bytes(3000), 1000, payload_id=pid))
    b = list(tw.chunk(bytes(4000), 1000, payload_id=pid))
    r = tw.Reassembler()
    # Chunks of another geometry under the same id are another payload: a forger's
    # first chunk cannot turn the genuine ones away, before or after they start.
    assert r.add(b[1]) is None
    r.add(a[0])
    assert r.add(b[2]) is None
    assert len(r.pending()) == 2
    assert feed(r, a[1:]) == [bytes(3000)]
    assert feed(r, b) == [bytes(4000)]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        (slice(0, 4), b"XXXX", "magic"),
        (slice(4, 5), b"\x02", "version"),
        (slice(5, 6), b"\x07", "kind"),
        (slice(6, 8), b"\x00\x01", "reserved"),
        (slice(24, 28), struct.pack("<I", 99), "not below the chunk count"),
        (slice(28, 32), struct.pack("<I", 0), "count is zero"),
        (slice(40, 48), struct.pack("<Q", 7), "offset"),
        (slice(32, 40), struct.pack("<Q", 2**64 - 1), "do not make"),
        (slice(48, 52), struct.pack("<I", 5), "announces"),
    ],
)
def test_forged_header_fields(field: slice, value: bytes, match: str) -> None:
    pieces = list(tw.chunk(bytes(3000), 1000))
    bad = bytearray(pieces[1])
    bad[field] = value
    r = tw.Reassembler()
    with pytest.raises(tw.TensorwireError, match=match):
        r.add(reseal(bad))
    assert r.pending() == []
    with pytest.raises(tw.IntegrityError, match="truncated"):
        r.add(pieces[1][:40])


# -- memory bounds ----------------------------------------------------------------------


@pytest.mark.parametrize("when_full", ["evict", "refuse"])
def test_pending_memory_bound_under_a_flood(when_full: str) -> None:
    limit = 200_000
    r = tw.Reassembler(max_pending_bytes=limit, when_full=when_full)
    refused = 0
    ids = []
    for i in range(500):
        c = tw.chunk(bytes(10_000), 1000)
        ids.append(c.payload_id)
        try:
            assert r.add(next(c), now=i * 0.01) is None
        except tw.FormatError as e:
            assert "no room" in str(e)
            refused += 1
        assert r.pending_bytes <= limit
    held = [p[0] for p in r.pending()]
    assert 10 <= len(held) < 20
    if when_full == "evict":
        assert refused == 0 and r.stats["evicted"] == 500 - len(held)
        assert held == ids[-len(held) :]  # the newest survive
    else:
        assert refused == 500 - len(held)
        assert held == ids[: len(held)]  # the oldest stay until they expire


def test_payload_limit_refuses_before_allocating() -> None:
    r = tw.Reassembler(max_payload_bytes=10_000)
    with pytest.raises(tw.FormatError, match="max_payload_bytes"):
        r.add(next(tw.chunk(bytes(10_001), 1000)))
    # A forged total of ~4 TB is refused from the header alone.
    piece = bytearray(next(tw.chunk(bytes(3000), 1000)))
    piece[28:32] = struct.pack("<I", 4_000_000_000)
    piece[32:40] = struct.pack("<Q", 4_000_000_000 * 912)
    with pytest.raises(tw.FormatError, match="max_payload_bytes"):
        r.add(reseal(piece))
    assert r.pending() == []


def test_reassembler_options_are_validated() -> None:
    with pytest.raises(tw.InputError, match="when_full"):
        tw.Reassembler(when_full="panic")
    with pytest.raises(tw.InputError, match="timeout"):
        tw.Reassembler(timeout=0)
    with pytest.raises(tw.InputError, match="non-negative"):
        tw.Reassembler(max_pending_bytes=-5)
    r = tw.Reassembler(max_pending_bytes=123, max_payload_bytes=45, timeout=6.0)
    assert (r.max_pending_bytes, r.max_payload_bytes, r.timeout) == (123, 45, 6.0)
    with pytest.raises(tw.InputError, match="now"):
        r.add(b"", now=float("nan"))
    with pytest.raises(tw.InputError, match="bytes-like"):
        r.add(12)  # type: ignore[arg-type]


def test_late_duplicates_are_ignored() -> None:
    pieces = list(tw.chunk(bytes(5000), 1000))
    r = tw.Reassembler()
    assert feed(r, pieces + pieces) == [bytes(5000)]
    assert r.pending() == [] and r.stats["duplicates"] == len(pieces)


def test_threads_share_one_reassembler() -> None:
    payloads = [bytes([i]) * 300_000 for i in range(8)]
    r = tw.Reassembler()
    results: list[bytes] = []
    lock = threading.Lock()

    def send(p: bytes) -> None:
        for piece in tw.chunk(p, 10_000):
            done = r.add(piece)
            if done is not None:
                with lock:
                    results.append(done)

    threads = [threading.Thread(target=send, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(payloads)


# -- the spec alone ------------------------------------------------------------------------


def reassemble_from_spec(pieces: list[bytes]) -> bytes:
    """A minimal reader written from docs/FORMAT.md alone (no tensorwire code)."""
    bodies: dict[int, bytes] = {}
    total = count = None
    for piece in pieces:
        magic, version, kind, reserved = struct.unpack_from("<4sBBH", piece, 0)
        assert (magic, version, reserved) == (b"\x89TWC", 1, 0) and kind in (0, 1)
        index, count, total, offset, body_len = struct.unpack_from("<IIQQI", piece, 24)
        (crc,) = struct.unpack_from("<I", piece, 84)
        body = piece[88:]
        assert len(body) == body_len and offset + body_len <= total
        assert zlib.crc32(body, zlib.crc32(piece[:84])) == crc
        bodies[index] = body
    assert total is not None and count is not None and sorted(bodies) == list(range(count))
    out = b"".join(bodies[i] for i in range(count))
    assert len(out) == total
    return out


def test_spec_reader_agrees() -> None:
    payload = bytes(random.Random(1).randbytes(12_345))
    assert reassemble_from_spec(list(tw.chunk(payload, 1000))) == payload
    model = {"w": np.arange(999, dtype=np.float32)}
    assert reassemble_from_spec(list(tw.encode_chunks(model, 700))) == tw.encode(model)


def test_no_deadlock_between_iterating_and_inspecting_threads() -> None:
    # A deadlock would hang the interpreter, so this runs in a child process.
    script = """
import threading, tensorwire as tw
c = tw.chunk(bytes(20_000_000), 50_000)
s = tw.encode_chunks({"w": __import__("numpy").zeros(5_000_000)}, 50_000)
r = tw.Reassembler()
def drain(it):
    for piece in it:
        r.add(piece)
threads = [threading.Thread(target=drain, args=(it,)) for it in (c, s)]
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    len(c), len(s), r.pending(), r.pending_bytes, r.stats
for t in threads:
    t.join()
assert r.stats["completed"] == 2, r.stats
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()


def test_chunk_info_without_the_crc_reads_the_header_only() -> None:
    piece = bytearray(next(iter(tw.chunk(bytes(1000), 400))))
    piece[-1] ^= 1  # the body no longer matches the CRC
    with pytest.raises(tw.IntegrityError):
        chunking.chunk_info(bytes(piece))
    assert chunking.chunk_info(bytes(piece), check_crc=False)["count"] == 4
