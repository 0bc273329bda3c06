"""The exception classes and the places they name (tensor, update, chunk, limit) as data."""

from __future__ import annotations

import forge
import numpy as np
import pytest

import tensorwire as tw
import tensorwire.errors
from tensorwire import _core


def test_the_classes_come_from_the_extension_with_the_documented_bases():
    assert tw.TensorwireError is _core.TensorwireError
    assert tw.TensorwireError.__module__ == "tensorwire._core"
    assert tw.TensorwireError.__bases__ == (Exception,)
    for cls, other in [
        (tw.FormatError, ValueError),
        (tw.IntegrityError, ValueError),
        (tw.CodecError, ValueError),
        (tw.errors.ClosedError, ValueError),
        (tw.InputError, TypeError),
    ]:
        assert cls.__bases__ == (tw.TensorwireError, other)
        assert cls.__doc__ and cls.__doc__ == getattr(_core, cls.__name__).__doc__
    assert issubclass(tw.errors.MismatchError, tw.TensorwireError)
    assert tw.AuthenticationError.__bases__ == (tw.IntegrityError,)
    assert tw.AuthenticationError.__doc__ == _core.AuthenticationError.__doc__


def test_places_default_to_none():
    e = tw.FormatError("made in Python")
    assert str(e) == "made in Python"
    assert (e.tensor, e.update, e.chunk, e.limit) == (None, None, None, None)
    with pytest.raises(tw.FormatError) as info:
        tw.decode(b"not a payload at all, not even close")
    assert (info.value.tensor, info.value.update, info.value.limit) == (None, None, None)


def _corrupt_tensor(blob: bytes, name: str) -> bytes:
    r = tw.open(blob)
    info = r.info(name)
    start = next(e[4] for e in r._payload.entries() if e[0] == name)
    assert info.stored_bytes > 0
    bad = bytearray(blob)
    bad[start] ^= 0xFF
    return bytes(bad)


def test_a_corrupt_tensor_names_the_tensor():
    blob = tw.encode({"a": np.ones(8, np.float32), "b": np.arange(16, dtype=np.float32)})
    bad = _corrupt_tensor(blob, "b")
    with pytest.raises(tw.IntegrityError, match='tensor "b": checksum mismatch') as info:
        tw.decode(bad)
    assert info.value.tensor == "b"
    assert info.value.update is None
    # A coded tensor: the same, from the block decoder.
    blob = tw.encode({"z": np.zeros(4096, np.float32)}, codec="zstd")
    with pytest.raises(tw.IntegrityError) as info:
        tw.decode(_corrupt_tensor(blob, "z"))
    assert info.value.tensor == "z"


def test_a_bad_update_names_the_update():
    good, other = (tw.encode({"w": np.full(4, v, np.float32)}) for v in (1, 2))
    bad = _corrupt_tensor(tw.encode({"w": np.full(4, 3, np.float32)}), "w")
    with pytest.raises(tw.IntegrityError, match='update 2: tensor "w"') as info:
        tw.aggregate([good, other, bad])
    assert (info.value.update, info.value.tensor) == (2, "w")
    # Refused before the core aggregates: the header of update 1 is cut short.
    with pytest.raises(tw.IntegrityError, match="update 1: payload truncated") as info:
        tw.aggregate([good, good[:-10]])
    assert info.value.update == 1 and info.value.tensor is None
    # Not a buffer at all: the update is still named.
    with pytest.raises(tw.InputError, match="bytes-like") as info:
        tw.aggregate([good, 12345])
    assert info.value.update == 1
    # The streaming aggregator counts its updates.
    agg = tw.Aggregator()
    agg.add(good)
    with pytest.raises(tw.IntegrityError) as info:
        agg.add(bad)
    assert (info.value.update, info.value.tensor) == (1, "w")
    # A refused update: MismatchError carries it too.
    with pytest.raises(tw.errors.MismatchError) as info:
        tw.aggregate([good, tw.encode({"v": np.ones(4, np.float32)})])
    assert info.value.update == info.value.index == 1


def test_a_tensor_structure_update_names_the_update():
    good = {"w": np.ones(4, np.float32)}
    with pytest.raises(tw.InputError) as info:
        tw.aggregate([good, {"w": object()}])
    assert info.value.update == 1


def test_a_broken_limit_is_named_with_its_numbers():
    blob = tw.encode({"w": np.zeros(1000, np.float32)}, codec="zstd")
    with pytest.raises(tw.FormatError, match="max_decoded_bytes") as info:
        tw.decode(blob, max_decoded_bytes=100)
    assert info.value.limit == ("max_decoded_bytes", 4000, 100)
    name = "n" * (_core.MAX_NAME_LEN + 1)
    with pytest.raises(tw.InputError, match="exceeds the limit") as info:
        tw.encode({name: np.zeros(1, np.float32)})
    assert info.value.limit == ("MAX_NAME_LEN", len(name), _core.MAX_NAME_LEN)


def test_a_header_over_a_limit_is_named():
    # A header whose rank exceeds MAX_RANK, forged with a valid header checksum.
    bad = forge.payload([forge.T("w", "float32", [1] * (_core.MAX_RANK + 1), bytes(4))])
    with pytest.raises(tw.FormatError, match="rank") as info:
        tw.decode(bad)
    assert info.value.limit == ("MAX_RANK", _core.MAX_RANK + 1, _core.MAX_RANK)
    assert info.value.tensor == "w"


def test_a_bad_chunk_names_the_chunk():
    blob = tw.encode({"w": np.arange(1000, dtype=np.float32)})
    pieces = list(tw.chunk(blob, 1024))
    bad = bytearray(pieces[1])
    bad[-1] ^= 0xFF
    r = tw.Reassembler()
    with pytest.raises(tw.IntegrityError, match="checksum mismatch") as info:
        r.add(bytes(bad))
    payload_id, index, count = info.value.chunk
    assert (index, count) == (1, len(pieces))
    assert len(payload_id) == 32 and str(payload_id) in str(info.value)
    r = tw.Reassembler(max_payload_bytes=100)
    with pytest.raises(tw.FormatError) as info:
        r.add(pieces[0])
    assert info.value.limit == ("max_payload_bytes", len(blob), 100)
    assert info.value.chunk is not None and info.value.chunk[1] == 0
