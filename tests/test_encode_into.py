"""Encoding into a caller's buffer and decoding into a caller's arrays.

``encode_into`` round-trips every codec through one reused buffer, never writes past a
too-small buffer (a slice of a larger one, its guard region checked after) and refuses
read-only ones; ``encoded_size`` is exact for raw under every option and bounds every
coded codec; ``decode(out=)`` fills the given arrays, and refuses mismatched ones with
nothing written."""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np
import pytest

import tensorwire as tw

CODECS = [
    "raw",
    "zstd",
    "zstd:19",
    "lz4",
    "shuffle",
    "shuffle+zstd:3",
    "shuffle+lz4",
    "floatzip",
    "f16",
    "bf16+zstd",
    "f16+floatzip",
    "int8",
    "int8:channel+zstd",
    "int8:block=16",
    "int4:block=64+lz4",
    "nf4:block=16+zstd",
    "topk:0.5+int8:block=16",
    "topk:0.05",
    "threshold:0.5+f16+zstd",
    "auto",
]
GUARD = 4096


def state(seed: int, noisy: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((300, 1000)).astype(np.float32)
    if noisy:  # random signs and mantissas, magnitudes in [0.5, 2): incompressible
        bits = rng.integers(0, 2**32, big.shape, dtype=np.uint32)
        big = ((bits & 0x807FFFFF) | 0x3F000000).view(np.float32)
    return {
        "w": big,
        "b": rng.standard_normal(7).astype(np.float32),
        "empty": np.zeros((0, 4), np.float32),
    }


def assert_close(got: Any, want: dict[str, np.ndarray], codec: str) -> None:
    lossless = codec in ("raw", "zstd", "zstd:19", "lz4", "shuffle", "shuffle+zstd:3",
                         "shuffle+lz4", "floatzip", "auto")  # fmt: skip
    for name, a in want.items():
        assert got[name].shape == a.shape and got[name].dtype == a.dtype
        if lossless:
            np.testing.assert_array_equal(got[name], a)


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_through_one_reused_buffer(codec: str) -> None:
    size = max(tw.encoded_size(state(s), codec=codec) for s in range(3))
    buffer = bytearray(size)
    for seed in range(3):
        sd = state(seed)
        n = tw.encode_into(buffer, sd, codec=codec)
        assert n <= size
        assert_close(tw.decode(bytes(buffer[:n])), sd, codec)
        assert bytes(buffer[:n]) == tw.encode(sd, codec=codec)  # the same bytes as encode


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("noisy", [False, True])
def test_encoded_size_bounds_every_codec(codec: str, noisy: bool) -> None:
    sd = state(1, noisy)
    bound = tw.encoded_size(sd, codec=codec, metadata={"round": 1})
    actual = len(tw.encode(sd, codec=codec, metadata={"round": 1}))
    assert bound >= actual
    if codec == "raw":
        assert bound == actual


def test_encoded_size_is_exact_for_raw_under_every_option() -> None:
    sd = state(2)
    key, sk = b"k" * 32, tw.generate_signing_key()
    nested = {"layers": [sd["w"], sd["b"]], "extra": (sd["empty"],)}
    for tensors, options in [
        (sd, {}),
        (sd, {"metadata": {"round": 7, "name": "é" * 50}}),
        (nested, {}),
        (sd, {"key": key}),
        (sd, {"signing_key": sk}),
        (sd, {"key": key, "signing_key": sk, "encrypt": True}),
        (nested, {"key": key, "signing_key": sk, "encrypt": "all", "metadata": [1]}),
        (sd, {"codec": {"w*": "raw"}}),
    ]:
        size = tw.encoded_size(tensors, **options)
        assert size == len(tw.encode(tensors, **options)), options
        buffer = bytearray(size)
        assert tw.encode_into(buffer, tensors, **options) == size


@pytest.mark.parametrize("codec", ["raw", "shuffle+zstd", "int8"])
def test_too_small_a_buffer_is_refused_and_nothing_is_written_past_it(codec: str) -> None:
    sd = state(3)
    need = len(tw.encode(sd, codec=codec))
    for short in [0, 1, 64, need // 2, need - 1]:
        backing = np.full(short + GUARD, 0xEE, np.uint8)
        view = memoryview(backing)[:short]  # type: ignore[arg-type]
        with pytest.raises(tw.InputError) as e:
            tw.encode_into(view, sd, codec=codec)
        assert (e.value.needed, e.value.available) == (need, short)  # type: ignore[attr-defined]
        assert str(need) in str(e.value)
        assert (backing[short:] == 0xEE).all(), "written past the end"
    # a larger buffer: the bytes after the payload stay as they were
    backing = np.full(need + GUARD, 0xEE, np.uint8)
    assert tw.encode_into(backing, sd, codec=codec) == need
    assert (backing[need:] == 0xEE).all()


def test_every_writable_buffer_kind_takes_a_payload(tmp_path: Any) -> None:
    sd = state(4)
    n = tw.encoded_size(sd)
    path = tmp_path / "buf"
    path.write_bytes(b"\0" * n)
    with path.open("r+b") as f, mmap.mmap(f.fileno(), n) as m:
        for buffer in [bytearray(n), np.zeros(n, np.uint8), np.zeros(n // 4 + 1, np.float32),
                       memoryview(bytearray(n + 8)), m]:  # fmt: skip
            assert tw.encode_into(buffer, sd) == n
            got = tw.decode(bytes(memoryview(buffer).cast("B")[:n]))
            assert_close(got, sd, "raw")


def test_read_only_and_strided_buffers_are_refused(tmp_path: Any) -> None:
    sd = state(5)
    n = tw.encoded_size(sd)
    frozen = np.zeros(n, np.uint8)
    frozen.flags.writeable = False
    path = tmp_path / "ro"
    path.write_bytes(b"\0" * n)
    with path.open("rb") as f, mmap.mmap(f.fileno(), n, access=mmap.ACCESS_READ) as m:
        for buffer in [bytes(n), memoryview(bytearray(n)).toreadonly(), frozen, m]:
            with pytest.raises(tw.InputError, match="read-only"):
                tw.encode_into(buffer, sd)
    with pytest.raises(tw.InputError):
        tw.encode_into(np.zeros(2 * n, np.uint8)[::2], sd)
    with pytest.raises(tw.InputError):
        tw.encode_into("not a buffer", sd)


def test_a_buffer_sharing_memory_with_a_tensor_is_refused() -> None:
    backing = np.zeros(1 << 16, np.float32)
    sd = {"w": backing[:100]}
    with pytest.raises(tw.InputError, match="shares memory") as e:
        tw.encode_into(backing, sd)
    assert e.value.tensor == "w"
    assert (backing == 0).all()


def outs_like(sd: dict[str, np.ndarray], fill: float = 9.0) -> dict[str, np.ndarray]:
    return {k: np.full(v.shape, fill, v.dtype) for k, v in sd.items()}


@pytest.mark.parametrize("codec", ["raw", "shuffle+zstd", "f16", "topk:0.05"])
def test_decode_into_existing_arrays(codec: str) -> None:
    sd = state(6)
    blob = tw.encode(sd, codec=codec)
    out = outs_like(sd)
    got = tw.decode(blob, copy=True, out=out)
    want = tw.decode(blob, copy=True)
    for name in sd:
        assert got[name] is out[name]
        np.testing.assert_array_equal(out[name], want[name])
    # again, into the same arrays; and a subset, the rest decoded as usual
    sd2 = state(7)
    got = tw.decode(tw.encode(sd2, codec=codec), out={"w": out["w"]})
    assert got["w"] is out["w"]
    assert_close(got, sd2, codec)


def test_decode_into_arrays_keeps_the_structure() -> None:
    sd = state(8)
    nested = {"layers": [sd["w"], sd["b"]]}
    blob = tw.encode(nested)
    names = tw.open(blob).keys()
    out = {names[0]: np.zeros_like(sd["w"])}
    got = tw.decode(blob, out=out)
    assert got["layers"][0] is out[names[0]]
    np.testing.assert_array_equal(out[names[0]], sd["w"])


def refused(blob: bytes, out: dict[str, Any], tensor: str | None, **kw: Any) -> None:
    before = {k: np.array(v, copy=True) for k, v in out.items() if isinstance(v, np.ndarray)}
    with pytest.raises(tw.TensorwireError) as e:
        tw.decode(blob, out=out, **kw)
    if tensor is not None:
        assert e.value.tensor == tensor, e.value
    for k, v in before.items():
        np.testing.assert_array_equal(out[k], v, err_msg=f"{k} was written")


def test_mismatched_arrays_are_refused_with_nothing_written() -> None:
    sd = state(9)
    blob = tw.encode(sd, codec={"b": "zstd"})
    good = outs_like(sd)
    frozen = np.zeros_like(sd["b"])
    frozen.flags.writeable = False
    big_endian = np.zeros(sd["b"].shape, ">f4")
    for bad_b in [
        np.zeros((7, 1), np.float32),  # shape
        np.zeros(7, np.float64),  # dtype
        big_endian,  # byte order
        frozen,  # read-only
        np.zeros(14, np.float32)[::2],  # strided
        [0.0] * 7,  # not an array
    ]:
        out = {"w": good["w"], "b": bad_b, "empty": good["empty"]}
        refused(blob, out, "b")
    # names that are no tensor, and two names sharing memory
    refused(blob, {"w": good["w"], "nope": np.zeros(3, np.float32)}, None)
    whole = np.zeros(300 * 1000, np.float32)
    overlapping = {"w": whole.reshape(300, 1000), "b": whole[10:17], "empty": good["empty"]}
    refused(blob, overlapping, "b")
    with pytest.raises(tw.InputError):
        tw.decode(blob, out=[good["w"]])  # type: ignore[arg-type]


def test_a_corrupt_payload_writes_no_array() -> None:
    sd = state(10)
    blob = bytearray(tw.encode(sd, codec={"b": "zstd"}))
    start = bytes(blob).find(sd["w"].tobytes()[:256])
    assert start > 0
    blob[start + 100] ^= 0xFF
    refused(bytes(blob), outs_like(sd), "w")
    # a delta without its base: found while decoding, after the raw tensors passed
    base = state(11)
    delta = tw.encode(sd, codec={"b": "delta+zstd"}, base=base)
    with pytest.raises(tw.IntegrityError):
        tw.decode(delta, out=outs_like(sd))
    out = outs_like(sd)
    refused(delta, out, None)
