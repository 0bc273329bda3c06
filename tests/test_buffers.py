"""Bytes-like inputs as the stable-ABI extension reads them (numpy's C API in place of
the buffer protocol): every kind the buffer protocol offers, zero-copy where nobody can
write, and a refused buffer changing nothing."""

from __future__ import annotations

import array
import mmap

import numpy as np
import pytest

import tensorwire as tw
from tensorwire import chunking

MODEL = {"w": np.arange(1000, dtype=np.float32), "b": np.ones(3, dtype=np.float64)}
BLOB = tw.encode(MODEL)


def _same(got: dict[str, np.ndarray]) -> bool:
    return got.keys() == MODEL.keys() and all(np.array_equal(got[k], v) for k, v in MODEL.items())


@pytest.mark.parametrize(
    "wrap",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: np.frombuffer(b, np.uint8),
        lambda b: np.frombuffer(b, np.uint8)[: len(b) // 4 * 4].view(np.float32),
        lambda b: array.array("B", b),
        lambda b: memoryview(b).cast("B", (len(b),)),
    ],
    ids=["bytes", "bytearray", "memoryview", "uint8", "float32-view", "array", "cast"],
)
def test_every_kind_of_buffer_reads_the_same(wrap) -> None:
    data = wrap(BLOB)
    if len(memoryview(data).cast("B")) != len(BLOB):  # the float32 view drops a tail
        pytest.skip("this payload's length is not a multiple of 4")
    assert _same(tw.decode(data))


def test_read_only_memory_is_read_in_place_and_a_map_too(tmp_path) -> None:
    ro = np.frombuffer(BLOB, np.uint8)
    assert not ro.flags.writeable
    assert np.shares_memory(tw.decode(ro, verify=False)["w"], ro)
    path = tmp_path / "m.tw"
    path.write_bytes(BLOB)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert _same(tw.decode(m))


@pytest.mark.parametrize(
    "bad, message",
    [
        (memoryview(BLOB)[::2], "C-contiguous"),
        (np.frombuffer(BLOB, np.uint8)[::2], "contiguous"),
        ("a str is not bytes", "bytes-like"),
        (12345, "bytes-like"),
        (None, "bytes-like"),
    ],
    ids=["strided-memoryview", "strided-array", "str", "int", "none"],
)
def test_what_is_not_contiguous_bytes_is_refused_and_changes_nothing(bad, message) -> None:
    pieces = list(tw.chunk(BLOB, max_bytes=256))
    r = tw.Reassembler()
    assert r.add(pieces[0]) is None
    before = (r.pending(), r.pending_bytes)
    with pytest.raises((tw.InputError, TypeError), match=message):
        r.add(bad)
    assert (r.pending(), r.pending_bytes) == before
    with pytest.raises((tw.InputError, TypeError), match=message):
        chunking.chunk_info(bad)
    done = [r.add(p) for p in pieces[1:]]
    assert done[-1] == BLOB


def test_a_read_only_output_is_refused_before_anything_is_written() -> None:
    out = {k: np.full_like(v, 7) for k, v in MODEL.items()}
    out["b"].flags.writeable = False
    with pytest.raises(tw.InputError, match="writable"):
        tw.aggregate([BLOB, BLOB], out=out)
    assert all((v == 7).all() for v in out.values())


def test_a_writable_buffer_is_the_callers_again_once_read() -> None:
    blob = bytearray(BLOB)
    reader = tw.open(blob)
    blob += b"more"  # the reader copied the writable buffer: the caller's stays free
    assert _same({k: reader[k] for k in MODEL})
    r = tw.Reassembler()
    piece = bytearray(next(iter(tw.chunk(BLOB, max_bytes=1 << 20))))
    assert r.add(piece) == BLOB
    piece += b"x"  # released after the call
