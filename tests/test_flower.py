"""Flower ArrayRecord adapter, and the Flower example app run end to end on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensorwire as tw

flwr_app = pytest.importorskip("flwr.app")
flower = pytest.importorskip("tensorwire.integrations.flower")

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "flower_app"


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv/w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv/b": np.arange(4, dtype=np.float64),
        "steps": np.array(7, np.int64),
        "empty": np.zeros((0, 2), np.float16),
    }


def test_default_records_are_flowers_own_numpy_arrays():
    t = tensors()
    record = flower.to_array_record(t)
    assert list(record) == list(t)
    for name, a in t.items():
        got = record[name]
        want = flwr_app.Array(a)  # Flower's own serialisation
        assert got.stype == "numpy.ndarray" == want.stype
        assert (got.dtype, tuple(got.shape), got.data) == (want.dtype, tuple(want.shape), want.data)
        np.testing.assert_array_equal(got.numpy(), a)  # Flower reads it
    # And we read what Flower made.
    theirs = flwr_app.ArrayRecord({n: flwr_app.Array(a) for n, a in t.items()})
    back = flower.from_array_record(theirs)
    assert list(back) == list(t)
    for n in t:
        np.testing.assert_array_equal(back[n], t[n])
        assert back[n].dtype == t[n].dtype


def test_encoded_records_carry_one_payload():
    t = tensors()
    nested = {"layers": [t["conv/w"], t["conv/b"]], "steps": t["steps"]}
    record = flower.to_array_record(nested, codec="shuffle+zstd", metadata={"round": 3})
    assert list(record) == [flower.PAYLOAD_KEY]
    assert record[flower.PAYLOAD_KEY].stype == flower.STYPE
    payload = flower.payload_of(record)
    assert tw.open(payload).metadata == {"round": 3}
    back = flower.from_array_record(record)
    np.testing.assert_array_equal(back["layers"][0], t["conv/w"])
    assert isinstance(back["layers"], list)
    assert flower.payload_of(flower.to_array_record(t)) is None
    # Smaller than Flower's default for compressible tensors.
    z = {"w": np.zeros((256, 256), np.float32)}
    assert (
        flower.to_array_record(z, codec="zstd").count_bytes()
        < flower.to_array_record(z).count_bytes() / 10
    )
    # Updates from encode_update travel the same way and aggregate straight from records.
    old = {"w": np.ones(8, np.float32)}
    recs = [
        flower.payload_record(tw.encode_update(old, {"w": old["w"] * k}, num_samples=k))
        for k in (1, 3)
    ]
    avg = tw.aggregate([flower.payload_of(r) for r in recs], "samples", base=old)
    np.testing.assert_allclose(avg["w"], np.full(8, 2.5))


def test_bad_records_raise_format_errors():
    good = flwr_app.Array(np.ones(3, np.float32))
    with pytest.raises(tw.FormatError, match="unsupported stype 'pickle'"):
        flower.from_array_record(
            flwr_app.ArrayRecord(
                {"x": flwr_app.Array(dtype="float32", shape=(3,), stype="pickle", data=b"abc")}
            )
        )
    truncated = flwr_app.Array(
        dtype=good.dtype, shape=tuple(good.shape), stype=good.stype, data=good.data[:-3]
    )
    with pytest.raises(tw.FormatError, match=r"array 'x': not valid np\.save bytes"):
        flower.from_array_record(flwr_app.ArrayRecord({"x": truncated}))
    lying = flwr_app.Array(dtype="float64", shape=(3,), stype=good.stype, data=good.data)
    with pytest.raises(tw.FormatError, match="its Array says float64"):
        flower.from_array_record(flwr_app.ArrayRecord({"x": lying}))
    obj = np.array([{"a": 1}], dtype=object)
    import io

    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    pickled = flwr_app.Array(dtype="object", shape=(1,), stype="numpy.ndarray", data=buf.getvalue())
    with pytest.raises(tw.FormatError, match=r"not valid np\.save bytes"):
        flower.from_array_record(flwr_app.ArrayRecord({"x": pickled}))
    rec = flower.to_array_record({"w": np.ones(2, np.float32)}, codec="zstd")
    rec["extra"] = good
    with pytest.raises(tw.FormatError, match="must hold nothing else"):
        flower.from_array_record(rec)
    bad = flower.payload_record(b"\x89TWR\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(tw.TensorwireError):
        flower.from_array_record(bad)


def test_authenticated_and_signed_records():
    t = tensors()
    key, other = os.urandom(32), os.urandom(32)
    sk = tw.generate_signing_key()
    pk = tw.public_key(sk)
    both = flower.to_array_record(t, "zstd", key=key, signing_key=sk, metadata={"round": 2})
    assert list(both) == [flower.PAYLOAD_KEY]
    payload = flower.payload_of(both)
    with tw.open(payload, key=key, trusted_keys=[pk]) as r:
        assert (r.key_id, r.signer, r.metadata) == (tw.key_id(key), pk, {"round": 2})
    for read in ({"key": key}, {"keys": [other, key], "trusted_keys": [pk]}):
        back = flower.from_array_record(both, **read)
        for n in t:
            np.testing.assert_array_equal(back[n], t[n])
    # A key or a signing key alone makes a payload record, with or without a codec.
    signed = flower.to_array_record(t, signing_key=sk)
    assert flower.payload_of(signed) is not None
    np.testing.assert_array_equal(flower.from_array_record(signed, trusted_keys=[pk])["conv/b"],
                                  t["conv/b"])  # fmt: skip
    keyed = flower.to_array_record(t, key=key)
    np.testing.assert_array_equal(flower.from_array_record(keyed, key=key)["steps"], t["steps"])
    # Refused: the wrong key, no key, an untrusted or missing signer, plain records.
    plain_numpy = flower.to_array_record(t)
    plain_payload = flower.to_array_record(t, "zstd")
    for record, read, match in [
        (both, {"key": other}, "header MAC mismatch|key id"),
        (both, {}, "pass key= or keys="),
        (both, {"key": key, "trusted_keys": [tw.public_key(tw.generate_signing_key())]},
         "not among the trusted keys"),
        (keyed, {"key": key, "trusted_keys": [pk]}, "not signed"),
        (plain_payload, {"key": key}, "not authenticated"),
        (plain_payload, {"trusted_keys": [pk]}, "not signed"),
        (plain_numpy, {"key": key}, "plain numpy arrays"),
        (plain_numpy, {"keys": {tw.key_id(key): key}}, "plain numpy arrays"),
        (plain_numpy, {"trusted_keys": [pk]}, "plain numpy arrays"),
    ]:  # fmt: skip
        with pytest.raises(tw.AuthenticationError, match=match):
            flower.from_array_record(record, **read)
    # Without keys a plain record still reads as before.
    assert list(flower.from_array_record(plain_numpy)) == list(t)


def test_flower_app_end_to_end_on_loopback(tmp_path):
    """SuperLink + 2 SuperNodes + `flwr run`: 2 rounds of tensorwire-encoded FedAvg."""
    r = subprocess.run(
        [
            sys.executable,
            str(APP / "run_local.py"),
            "--rounds",
            "2",
            "--out-dir",
            str(tmp_path),
            "--timeout",
            "240",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rounds = json.loads((tmp_path / "traffic.json").read_text())
    assert [x["round"] for x in rounds] == [1, 2]
    for x in rounds:
        assert x["clients"] == 2
        assert x["bytes_up"] < 0.8 * x["default_bytes_up"]
        assert x["bytes_down"] < x["default_bytes_down"]
    sys.path.insert(0, str(APP))
    try:
        from twflower.task import init_model
    finally:
        sys.path.remove(str(APP))
    final = tw.load(tmp_path / "global.twr", copy=True)
    initial = init_model()
    assert set(final) == set(initial)
    assert np.abs(final["dense/kernel"] - initial["dense/kernel"]).max() > 1e-3
