"""The blockwise quantizers (``int8:block=N``, ``int4:block=N``, ``nf4:block=N``) end to
end: the documented per-block error bounds on random and adversarial data, refusals
naming the tensor, pipelines around them, the independent reader, error feedback."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import spec_reader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensorwire as tw
from tensorwire import fl

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NF4_GAP = float(np.diff(spec_reader.NF4.astype(np.float64)).max())
#: Half a code step, as a fraction of the block's largest magnitude (docs/FORMAT.md).
HALF_STEP = {"int8": 1 / 254, "int4": 1 / 14, "nf4": NF4_GAP / 2}
EPS = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}


def np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def check_bound(x: np.ndarray, back: np.ndarray, code: str, block: int) -> None:
    """Every decoded element within half a step of its block's scale, plus the final
    rounding to the dtype (half an ulp at the decoded value)."""
    assert back.dtype == x.dtype and back.shape == x.shape
    xf = x.astype(np.float64).reshape(-1)
    bf = back.astype(np.float64).reshape(-1)
    pad = -len(xf) % block
    xb = np.pad(xf, (0, pad)).reshape(-1, block)
    absmax = np.repeat(np.abs(xb).max(axis=1), block)[: len(xf)]
    limit = absmax * HALF_STEP[code] * (1 + 2.0**-22) + EPS[x.dtype.name] * np.abs(bf)
    err = np.abs(bf - xf)
    assert (err <= limit + 1e-300).all(), (code, float((err - limit).max()))


@pytest.mark.parametrize("code", ["int8", "int4", "nf4"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (33, 65), (3, 1000)])
def test_random_data_within_the_documented_bound(code, dtype, shape):
    rng = np.random.default_rng(hash((code, dtype, shape)) % 2**32)
    x = (rng.standard_normal(shape) * 0.05).astype(np_dtype(dtype))
    for block in (16, 64, 4096):
        back = tw.decode(tw.encode({"w": x}, codec=f"{code}:block={block}"))["w"]
        check_bound(x, back, code, block)


@SETTINGS
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=300
    ),
    code=st.sampled_from(["int8", "int4", "nf4"]),
    block=st.sampled_from([16, 32, 64]),
)
def test_any_finite_values_within_the_bound(values, code, block):
    x = np.array(values, np.float32)
    back = tw.decode(tw.encode({"w": x}, codec=f"{code}:block={block}+zstd"))["w"]
    check_bound(x, back, code, block)


@pytest.mark.parametrize("code", ["int8", "int4", "nf4"])
def test_adversarial_blocks(code):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(64 * 6) * 1e-3).astype(np.float32)
    x[:64] = 0.0  # an all-zero block decodes to zeros
    x[64:128] = -0.0
    x[130] = 3e38  # a huge outlier costs precision in its own block only
    x[192:256] = 0.0
    x[200] = -1e-40  # a subnormal alone
    back = tw.decode(tw.encode({"w": x}, codec=f"{code}:block=64"))["w"]
    check_bound(x, back, code, 64)
    assert (back[:128] == 0).all()
    # Per tensor, the outlier swamps every small weight; per block of 64, only its own.
    per_tensor = tw.decode(tw.encode({"w": x}, codec="int8"))["w"]
    assert (per_tensor[256:] == 0).all()
    assert np.abs(back[256:] - x[256:]).max() <= np.abs(x[256:]).max() * HALF_STEP[code] * 1.01


@pytest.mark.parametrize("code", ["int8:block=64", "int4", "nf4:block=16"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_naming_the_tensor(code, bad):
    x = np.ones(200, np.float32)
    x[77] = bad
    with pytest.raises(tw.CodecError, match=r'"layer\.w".*element 77'):
        tw.encode({"layer.w": x, "ok": np.ones(3, np.float32)}, codec=code)


@pytest.mark.parametrize(
    "codec",
    ["int4:block=64+shuffle", "nf4+floatzip+zstd", "xor+int4", "int8:block=65", "nf4:block=8192"],
)
def test_misfits_are_codec_errors(codec):
    with pytest.raises(tw.CodecError):
        tw.encode({"w": np.ones(8, np.float32)}, codec=codec)
    with pytest.raises(tw.CodecError, match='tensor "i"'):
        tw.encode({"i": np.ones(8, np.int32)}, codec="int4")


def test_sizes_match_the_layout():
    x = np.random.default_rng(0).standard_normal(64 * 1000).astype(np.float32)
    for codec, per_value in [("int8:block=64", 1 + 4 / 64), ("int4", 0.5 + 4 / 64)]:
        with tw.open(tw.encode({"w": x}, codec=codec)) as r:
            info = r.info("w")
            assert info.codec in ("int8:block=64", "int4:block=64")
            # TWC1 header, block size, one table entry, then scales and codes.
            assert info.stored_bytes == 12 + x.size * per_value


SPEC_READER_CODECS = [
    "int8:block=64",
    "int4:block=32+zstd",
    "nf4:block=64+lz4",
    "topk:0.2+int4:block=16",
    "threshold:0.03+nf4:block=64+zstd",
    "delta+int8:block=128+zstd",
    "delta+topk:0.1+nf4:block=64+zstd",
]


@pytest.mark.parametrize(
    ("codec", "dtype"),
    [
        (c, d)
        for c in SPEC_READER_CODECS
        for d in ["float32", "float16", "bfloat16", "float64", "complex64"]
        # complex deltas are covered by the float32 scalars
        if not (d == "complex64" and "delta" in c)
    ],
)
def test_the_spec_reader_decodes_what_the_library_writes(codec, dtype):
    """The reader written from docs/FORMAT.md alone gives the library's very bits."""
    rng = np.random.default_rng(1)
    shape = (3, 300_001) if dtype == "float16" else (37, 41)  # float16: two coded blocks
    if dtype == "complex64":
        a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        with pytest.raises(tw.CodecError):
            tw.encode({"x": a}, codec=codec)
        return
    x = (rng.standard_normal(shape) * 0.05).astype(np_dtype(dtype))
    base = (rng.standard_normal(shape) * 0.05).astype(x.dtype) if "delta" in codec else None
    blob = tw.encode({"x": x}, codec=codec, base=None if base is None else {"x": base})
    want = tw.decode(blob, base=None if base is None else {"x": base})["x"]
    got, _ = spec_reader.read(blob, bases=None if base is None else {"x": base})
    assert got["x"].dtype == want.dtype
    assert got["x"].tobytes() == want.tobytes()


@pytest.mark.parametrize("codec", ["int8:block=64", "int4:block=64+zstd", "nf4:block=64"])
def test_error_feedback_carries_what_the_decoder_drops(codec):
    rng = np.random.default_rng(4)
    old = {"w": rng.standard_normal((64, 100)).astype(np.float32)}
    ef = fl.ErrorFeedback()
    sent = np.zeros_like(old["w"])
    intended = np.zeros_like(old["w"])
    for _ in range(3):
        new = {"w": old["w"] + rng.standard_normal((64, 100)).astype(np.float32) * 0.01}
        up = tw.encode_update(old, new, codec=codec, error_feedback=ef)
        got = tw.decode(up)["w"]
        sent += got
        intended += new["w"] - old["w"]
        # The residual is against the decoder's reconstruction, exactly.
        np.testing.assert_allclose(sent + ef.residual["w"], intended, atol=1e-6)
    assert np.abs(ef.residual["w"]).max() > 0
    # With a delta codec the same holds against the base.
    ef = fl.ErrorFeedback()
    new = {"w": old["w"] + 0.01}
    up = tw.encode_update(old, new, codec=f"delta+{codec}", error_feedback=ef)
    got = tw.decode(up, base=old)["w"]
    np.testing.assert_allclose(got - old["w"] + ef.residual["w"], new["w"] - old["w"], atol=1e-6)


def test_blockwise_updates_aggregate():
    """The server adds blockwise-quantized updates like any other coded tensor."""
    rng = np.random.default_rng(6)
    old = {"w": rng.standard_normal((32, 50)).astype(np.float32)}
    news = [{"w": old["w"] + rng.standard_normal((32, 50)).astype(np.float32)} for _ in range(3)]
    ups = [tw.encode_update(old, n, codec="int4:block=64+zstd") for n in news]
    got = tw.aggregate(ups, base=old)["w"]
    want = old["w"] + np.mean([tw.decode(u)["w"] for u in ups], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
