"""Golden payloads: the block format is pinned (numcodecs' check_backwards_compatibility).

Every fixture under tests/fixtures/golden/ (written once by make.py there, never
rewritten) is decoded on every run and compared bit for bit with the array stored with
it. Pipelines without a compressor must also re-encode to the very same stored bytes;
with one (zstd, lz4, floatzip's zstd planes) the bytes may change with a library
upgrade, but re-encoding must still decode to the same array. Changing what a fixture
decodes to is a format change (docs/FORMAT.md, "Versions").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import spec_reader

import tensorwire as tw

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
FIXTURES: list[dict[str, Any]] = json.loads((GOLDEN / "manifest.json").read_text())["fixtures"]
IDS = [f["name"] for f in FIXTURES]


def numpy_dtype(name: str) -> np.dtype:
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name).newbyteorder("<")


def load(fixture: dict[str, Any]) -> tuple[bytes, dict[str, np.ndarray]]:
    """The payload and the arrays (input, base, expected) of one fixture."""
    name = fixture["name"]
    payload = (GOLDEN / f"{name}.tw").read_bytes()
    dtype, shape = numpy_dtype(fixture["dtype"]), tuple(fixture["shape"])
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as z:
        arrays = {k: z[k].view(dtype).reshape(shape) for k in z.files}
    arrays.setdefault("expected", arrays["input"])
    return payload, arrays


def stored(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """The one tensor entry of ``payload`` and its stored bytes, read from the spec
    (docs/FORMAT.md sections 1-3), not through the library."""
    header_len = int.from_bytes(payload[16:24], "little")
    header = json.loads(payload[64 : 64 + header_len])
    (entry,) = header["tensors"]
    at = 64 + header_len + entry["offset"]
    return entry, payload[at : at + entry["length"]]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_fixture_set_is_complete() -> None:
    """Every fixture's files are present, names are unique, and the set covers every
    stage of docs/FORMAT.md's pipeline table."""
    assert len(set(IDS)) == len(IDS)
    for f in FIXTURES:
        assert (GOLDEN / f"{f['name']}.tw").is_file() and (GOLDEN / f"{f['name']}.npz").is_file()
    stages = {s.split(":")[0] for f in FIXTURES for s in f["codec"].split("+")}
    assert stages >= {
        "raw", "delta", "xor", "topk", "threshold", "f16", "bf16", "int8",
        "shuffle", "floatzip", "zstd", "lz4",
    }  # fmt: skip
    assert any(":channel" in f["codec"] for f in FIXTURES)
    assert any(":stochastic=" in f["codec"] for f in FIXTURES)
    assert any(f["spec"] == "auto" for f in FIXTURES)
    assert any(f["shape"] == [] for f in FIXTURES)
    assert any(0 in f["shape"] for f in FIXTURES)
    assert len({f["dtype"] for f in FIXTURES}) >= 10
    size = sum(p.stat().st_size for p in GOLDEN.iterdir() if p.suffix in (".tw", ".npz"))
    assert size < 1 << 20, f"golden fixtures take {size} bytes: keep them small"


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_decodes_to_the_stored_array(fixture: dict[str, Any]) -> None:
    payload, arrays = load(fixture)
    entry, _ = stored(payload)
    assert entry["codec"] == fixture["codec"]
    assert entry["dtype"] == fixture["dtype"] and entry["shape"] == fixture["shape"]
    base = {"x": arrays["base"]} if fixture["base"] else None
    for copy in (False, True):
        out = tw.decode(payload, base=base, copy=copy)
        assert list(out) == ["x"]
        assert same_bits(out["x"], arrays["expected"]), fixture["name"]
    with tw.open(payload) as r:
        r.verify()
        assert r.info("x").codec == fixture["codec"]
    if fixture["lossless"]:
        assert same_bits(arrays["expected"], arrays["input"])


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_encodes_again_to_the_same(fixture: dict[str, Any]) -> None:
    """Re-encoding the stored input with the stored spec stores the same codec (`auto`
    may pick another, since its pick compares compressed sizes) and decodes to the same
    array; without a compressor, byte for byte the same."""
    payload, arrays = load(fixture)
    base = {"x": arrays["base"]} if fixture["base"] else None
    again = tw.encode({"x": arrays["input"]}, codec=fixture["spec"], base=base)
    entry, data = stored(again)
    if fixture["spec"] != "auto":
        assert entry["codec"] == fixture["codec"]
    assert same_bits(tw.decode(again, base=base)["x"], arrays["expected"])
    if fixture["reencode"]:
        assert data == stored(payload)[1], fixture["name"]


#: The stages tests/spec_reader.py decodes (its ``decode_coded``).
READER_STAGES = {
    "delta", "topk", "threshold", "f16", "bf16", "int8", "int4", "nf4", "shuffle", "zstd", "lz4",
}  # fmt: skip


def _reader_decodes(fixture: dict[str, Any]) -> bool:
    return {s.split(":")[0] for s in fixture["codec"].split("+")} <= READER_STAGES


@pytest.mark.parametrize(
    "fixture",
    [f for f in FIXTURES if f["codec"] != "raw" and _reader_decodes(f)],
    ids=[f["name"] for f in FIXTURES if f["codec"] != "raw" and _reader_decodes(f)],
)
def test_the_spec_reader_decodes_it(fixture: dict[str, Any]) -> None:
    """The independent reader, written from docs/FORMAT.md alone, decodes the fixture to
    the very bits the library does (the blockwise quantizers among them)."""
    payload, arrays = load(fixture)
    entry, data = stored(payload)
    base = arrays.get("base") if fixture["base"] else None
    got = spec_reader.decode_coded(entry, data, base)
    assert same_bits(got, arrays["expected"]), fixture["name"]


def test_the_spec_reader_covers_the_blockwise_quantizers() -> None:
    read = [f for f in FIXTURES if _reader_decodes(f)]
    covered = {s.split(":")[0] for f in read for s in f["codec"].split("+")}
    assert {"int4", "nf4"} <= covered
    assert any("int8:block=" in f["codec"] for f in FIXTURES)
