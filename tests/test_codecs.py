"""Codec pipelines end to end: lossless bit-exactness, lossy error bounds, misfits,
deltas against a base, and corrupted stored bytes."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorwire as tw

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FLOAT_DTYPES = ["float16", "bfloat16", "float32", "float64", "complex64", "complex128"]
OTHER_DTYPES = ["bool", "int8", "uint8", "int16", "int32", "uint64", "float8_e4m3fn"]
LOSSLESS = ["zstd", "zstd:-3", "lz4", "shuffle", "shuffle+zstd:1", "shuffle+lz4", "auto"]
FLOAT_LOSSLESS = ["floatzip"]
SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 0, 3), (33, 65)]


def np_dtype(name: str) -> np.dtype:
    if name in ("bfloat16", "float8_e4m3fn"):
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@st.composite
def any_bits_array(draw, dtype_names=FLOAT_DTYPES + OTHER_DTYPES):
    """An array of arbitrary bit patterns (NaN payloads, -0.0, inf included), possibly
    non-contiguous."""
    name = draw(st.sampled_from(dtype_names))
    dtype = np_dtype(name)
    shape = draw(st.sampled_from(SHAPES))
    n = int(np.prod(shape))
    raw = draw(st.binary(min_size=2 * n * dtype.itemsize, max_size=2 * n * dtype.itemsize))
    a = np.frombuffer(raw, np.uint8).copy().view(dtype) if n else np.zeros(0, dtype)
    if name == "bool":
        a = (a.view(np.uint8) & 1).astype(bool)
    if draw(st.booleans()) and n:
        a = a[::2].reshape(shape)  # strided: non-contiguous source
    else:
        a = a[:n].reshape(shape)
    return name, a


@SETTINGS
@given(any_bits_array(), st.sampled_from(LOSSLESS + FLOAT_LOSSLESS))
def test_lossless_pipelines_are_bit_exact(case, codec):
    name, a = case
    if codec == "floatzip" and name not in FLOAT_DTYPES:
        with pytest.raises(tw.CodecError, match="floatzip"):
            tw.encode({"t": a}, codec=codec)
        return
    out = tw.decode(tw.encode({"t": a}, codec=codec))["t"]
    assert out.dtype == a.dtype and out.shape == a.shape
    assert bits(out) == bits(a)


@SETTINGS
@given(any_bits_array(), st.sampled_from(["xor", "xor+zstd", "xor+shuffle+lz4"]))
def test_xor_delta_is_bit_exact(case, codec):
    _, a = case
    base = (a[::-1] if a.ndim else a).copy()
    blob = tw.encode({"t": a}, codec=codec, base={"t": base})
    assert bits(tw.decode(blob, base={"t": base})["t"]) == bits(a)


def test_auto_stores_the_pipeline_it_chose():
    rng = np.random.default_rng(0)
    tensors = {
        "w": (rng.normal(0, 0.05, (256, 256))).astype(np.float32),
        "noise": rng.integers(0, 256, 10_000, dtype=np.uint8),
        "zeros": np.zeros(4096, np.int64),
    }
    blob = tw.encode(tensors, codec="auto")
    with tw.open(blob) as r:
        codecs = {k: r.info(k).codec for k in r}
    assert codecs["noise"] == "raw"
    assert codecs["w"] in ("floatzip", "shuffle+zstd:3", "zstd:3")
    assert codecs["zeros"] != "raw" and "auto" not in codecs.values()
    out = tw.decode(blob)
    assert all(bits(out[k]) == bits(v) for k, v in tensors.items())


# -- lossy stages: documented error bounds ---------------------------------------------

finite32 = st.floats(-60000, 60000, allow_nan=False, width=32)


@SETTINGS
@given(st.lists(finite32, max_size=300), st.sampled_from(["f16", "f16+zstd", "f16+floatzip"]))
def test_f16_within_bound(values, codec):
    a = np.array(values, np.float32)
    out = tw.decode(tw.encode({"t": a}, codec=codec))["t"]
    assert out.dtype == np.float32
    bound = np.maximum(np.abs(a.astype(np.float64)) * 2.0**-11, 2.0**-25)
    assert np.all(np.abs(out.astype(np.float64) - a) <= bound)


@SETTINGS
@given(
    st.lists(st.floats(-3e38, 3e38, allow_nan=False), max_size=300),
    st.sampled_from(["float32", "float64"]),
)
def test_bf16_within_bound(values, dtype):
    a = np.array(values, dtype)
    out = tw.decode(tw.encode({"t": a}, codec="bf16+shuffle+zstd"))["t"]
    assert out.dtype == a.dtype
    bound = np.maximum(np.abs(a.astype(np.float64)) * 2.0**-8, 2.0**-134)
    assert np.all(np.abs(out.astype(np.float64) - a) <= bound)


@SETTINGS
@given(
    st.integers(1, 8),
    st.integers(1, 40),
    st.sampled_from(["int8", "int8:channel", "int8:stochastic=5", "int8:channel:stochastic=9"]),
    st.integers(0, 2**32),
)
def test_int8_within_bound(rows, cols, codec, seed):
    rng = np.random.default_rng(seed)
    a = (rng.normal(0, 1, (rows, cols)) * rng.uniform(0.01, 10, (rows, 1))).astype(np.float32)
    out = tw.decode(tw.encode({"t": a}, codec=codec + "+zstd"))["t"]
    assert out.dtype == np.float32 and out.shape == a.shape
    peak = np.abs(a).max(axis=1, keepdims=True) if "channel" in codec else np.abs(a).max()
    scale = peak.astype(np.float64) / 127
    factor = 1.0 if "stochastic" in codec else 0.5
    err = np.abs(out.astype(np.float64) - a)
    assert np.all(err <= factor * scale * (1 + 1e-6) + 1e-7 * np.abs(a))


def test_int8_stochastic_rounding_is_unbiased_and_seeded():
    a = np.full(100_000, 0.3, np.float32)
    a[0] = 127.0  # scale 1.0: every other value sits 0.3 between two levels
    out = tw.decode(tw.encode({"t": a}, codec="int8:stochastic=1"))["t"]
    assert abs(out[1:].mean() - 0.3) < 0.01
    nearest = tw.decode(tw.encode({"t": a}, codec="int8"))["t"]
    assert np.all(nearest[1:] == 0.0)
    same = tw.encode({"t": a}, codec="int8:stochastic=1")
    assert same == tw.encode({"t": a}, codec="int8:stochastic=1")
    assert same != tw.encode({"t": a}, codec="int8:stochastic=2")


def test_sparse_keeps_the_largest_and_scatters_into_zeros():
    a = np.array([0.0, 5.0, -0.1, 0.0, -7.0, 0.2, 0.01, 3.0], np.float32)
    out = tw.decode(tw.encode({"t": a}, codec="topk:0.25+zstd"))["t"]
    np.testing.assert_array_equal(out, [0, 5, 0, 0, -7, 0, 0, 0])
    out = tw.decode(tw.encode({"t": a}, codec="threshold:0.15+f16"))["t"]
    np.testing.assert_array_equal(out, np.where(np.abs(a) > 0.15, a, 0).astype(np.float16))


# -- deltas against a base ----------------------------------------------------------------


def update(shape=(512, 384), seed=0):
    rng = np.random.default_rng(seed)
    old = {"w": rng.normal(0, 0.05, shape).astype(np.float32), "b": np.zeros(shape[1], np.float32)}
    new = {k: (v + rng.normal(0, 1e-3, v.shape)).astype(np.float32) for k, v in old.items()}
    return old, new


def test_delta_topk_update_is_small_and_lands_on_the_base():
    old, new = update()
    blob = tw.encode(new, codec="delta+topk:0.01+f16+zstd", base=old)
    raw = sum(v.nbytes for v in new.values())
    assert len(blob) < 0.03 * raw  # headers included; the stage data alone is ~0.01
    out = tw.decode(blob, base=old)
    for k in new:
        moved = out[k] != old[k]
        assert abs(moved.mean() - 0.01) < 0.002
        d = np.abs(new[k] - old[k])
        assert d[moved].min() >= d[~moved].max() * 0.999  # the largest deltas were kept
        err = np.abs(out[k][moved].astype(np.float64) - new[k][moved])
        tol = d[moved] * 2.0**-11 + 2 * np.finfo(np.float32).eps * (
            np.abs(new[k][moved]) + np.abs(old[k][moved])
        )
        assert np.all(err <= tol)


def test_dense_delta_within_bound():
    old, new = update((64, 64), 3)
    out = tw.decode(tw.encode(new, codec="delta+shuffle+zstd", base=old), base=old)
    for k in new:
        eps = np.finfo(np.float32).eps
        assert np.all(np.abs(out[k] - new[k]) <= eps * (np.abs(new[k]) + np.abs(old[k])))


@pytest.mark.parametrize("codec", ["delta+zstd", "xor+zstd", "delta+topk:0.1+int8+lz4"])
def test_missing_or_wrong_base_is_an_integrity_error(codec):
    old, new = update((32, 16), 1)
    blob = tw.encode(new, codec=codec, base=old)
    with pytest.raises(tw.IntegrityError, match="base"):
        tw.decode(blob)
    other = {k: v + 1 for k, v in old.items()}
    with pytest.raises(tw.IntegrityError, match="base"):
        tw.decode(blob, base=other)
    tw.decode(blob, base=old)


def test_delta_without_base_is_a_codec_error():
    with pytest.raises(tw.CodecError, match="base"):
        tw.encode({"w": np.ones(4, np.float32)}, codec="delta+zstd")


# -- bad specs and misfits ---------------------------------------------------------------


@pytest.mark.parametrize(
    "codec",
    [
        "gzip",
        "zstd:99",
        "topk",
        "topk:2",
        "threshold:-1",
        "int8:perchannel",
        "floatzip+zstd",
        "zstd+shuffle",
        "f16+f16",
        "xor+topk:0.1",
        "auto+zstd",
        "",
        "lz4:9",
    ],
)
def test_bad_specs_raise_codec_error(codec):
    with pytest.raises(tw.CodecError):
        tw.encode({"w": np.ones(4, np.float32)}, codec=codec)


@pytest.mark.parametrize(
    ("codec", "array"),
    [
        ("f16", np.arange(4, dtype=np.int32)),
        ("bf16", np.ones(4, np.float16)),
        ("int8", np.ones(4, np.int64)),
        ("delta", np.ones(4, np.int32)),
        ("topk:0.5", np.ones(4, bool)),
        ("threshold:0.5", np.ones(4, np.complex64)),
        ("floatzip", np.ones(4, np.uint16)),
        ("int8+floatzip", np.ones(4, np.float32)),
        ("int8:channel", np.float32(1.0)),
    ],
)
def test_stages_that_do_not_fit_raise_codec_error_naming_the_tensor(codec, array):
    base = {"layer.w": array}
    with pytest.raises(tw.CodecError, match=r"layer\.w"):
        tw.encode({"layer.w": array}, codec=codec, base=base)


def test_f16_refuses_finite_values_beyond_its_range():
    a = np.array([1.0, 70000.0], np.float32)
    with pytest.raises(tw.CodecError, match=r"element 1 is beyond float16.s range"):
        tw.encode({"w": a}, codec="f16+zstd")
    inf = np.array([np.inf, -np.inf, np.nan], np.float32)
    out = tw.decode(tw.encode({"w": inf}, codec="f16"))["w"]
    assert np.isinf(out[:2]).all() and np.isnan(out[2])


def test_codec_mapping_and_callable_with_stages():
    rng = np.random.default_rng(1)
    t = {
        "l.weight": rng.normal(size=(40, 30)).astype(np.float32),
        "l.bias": np.ones(30, np.float32),
    }
    blob = tw.encode(t, codec={"*.bias": "raw", "*": "int8:channel+zstd"})
    with tw.open(blob) as r:
        assert r.info("l.bias").codec == "raw"
        assert r.info("l.weight").codec == "int8:channel+zstd:3"
    blob = tw.encode(t, codec=lambda name, a: "floatzip" if a.ndim == 2 else "lz4")
    out = tw.decode(blob)
    assert all(bits(out[k]) == bits(v) for k, v in t.items())


# -- corruption of stored codec bytes ----------------------------------------------------


def tensor_span(blob: bytes, name: str) -> tuple[int, int]:
    """Absolute start and length of a tensor's stored bytes, read from the header."""
    (header_len,) = struct.unpack_from("<Q", blob, 16)
    header = json.loads(blob[64 : 64 + header_len].decode().rstrip(" "))
    entry = next(t for t in header["tensors"] if t["name"] == name)
    return 64 + header_len + entry["offset"], entry["length"]


CORRUPTIBLE = [
    "zstd",
    "lz4",
    "shuffle+zstd",
    "floatzip",
    "f16+zstd",
    "int8:channel+lz4",
    "topk:0.05+f16+zstd",
    "threshold:0.05+floatzip",
    "int8:block=64+lz4",
    "int4:block=64+zstd",
    "nf4:block=64",
    "topk:0.1+nf4:block=32",
]


@pytest.mark.parametrize("codec", CORRUPTIBLE)
def test_corrupted_codec_bytes(codec):
    rng = np.random.default_rng(7)
    a = rng.normal(0, 0.05, (300, 1000)).astype(np.float32)
    blob = tw.encode({"w": a}, codec=codec)
    start, length = tensor_span(blob, "w")
    # The container's checksum catches any flip first.
    bad = bytearray(blob)
    bad[start + length // 2] ^= 0x10
    with pytest.raises(tw.IntegrityError):
        tw.decode(bytes(bad))
    # Without it, the codec's own validation: absurd block size, absurd block length.
    table = 8 + (4 * 300 if "channel" in codec else 0)  # after the int8 scales, if any
    for offset, value in [(4, 0xFFFFFFFF), (4, 0), (table, 1 << 31)]:
        bad = bytearray(blob)
        struct.pack_into("<I", bad, start + offset, value)
        with pytest.raises(tw.IntegrityError):
            tw.decode(bytes(bad), verify=False)
    # Random damage: a tensorwire error or an array of the right shape, never a crash.
    for i in range(60):
        bad = bytearray(blob)
        pos = start + int(rng.integers(0, length))
        bad[pos] ^= 1 << (i % 8)
        try:
            out = tw.decode(bytes(bad), verify=False)["w"]
        except tw.TensorwireError:
            continue
        assert out.shape == a.shape and out.dtype == a.dtype


def test_reader_hashes_a_base_once_per_base(monkeypatch):
    from tensorwire import _container

    base = {"a": np.arange(64, dtype=np.float32), "b": np.ones(32, np.float32)}
    new = {"a": base["a"] + 1, "b": base["b"] * 2}
    blob = tw.encode(new, codec="delta+zstd", base=base)
    calls = []
    real = _container._base_id
    monkeypatch.setattr(_container, "_base_id", lambda b: calls.append(1) or real(b))
    r = tw.open(blob)
    for name in ("a", "b", "a"):
        np.testing.assert_array_equal(r.get(name, base=base), new[name])
    assert len(calls) == 1
    # Another tensor object in the same base: hashed again, and checked.
    base["b"] = np.zeros(32, np.float32)
    with pytest.raises(tw.IntegrityError, match="base mismatch"):
        r.get("b", base=base)
    assert len(calls) == 2
    base["b"] = np.ones(32, np.float32)
    np.testing.assert_array_equal(r.get("b", base=base), new["b"])
    np.testing.assert_array_equal(r.get("a", base=dict(base)), new["a"])
    assert len(calls) == 4


def test_a_strided_leaf_with_base_is_normalised_once(monkeypatch):
    from tensorwire import _arrays, _container

    base = {"w": np.ones(8, np.float32)}
    leaf = np.arange(16, dtype=np.float32)[::2]  # not contiguous
    calls = []
    real = _arrays.as_array
    monkeypatch.setattr(_arrays, "as_array", lambda x, n: calls.append(n) or real(x, n))
    monkeypatch.setattr(_container, "as_array", _arrays.as_array)
    blob = tw.encode({"w": leaf}, codec="delta+zstd", base=base)
    # once for the leaf, once for the base's own tensor
    assert calls == ["w", "w"]
    np.testing.assert_array_equal(tw.decode(blob, base=base)["w"], leaf)
