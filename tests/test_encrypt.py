"""Encrypted payloads (docs/FORMAT.md section 10, "Encryption"): every writer and reader,
no plaintext in the bytes, and the refusals. The attacker's side is in test_trust.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tensorwire as tw
from tensorwire.chunking import CHUNK_HEADER_LEN, chunk_info

KEY = os.urandom(32)
OTHER = os.urandom(32)
SK = tw.generate_signing_key()
RNG = np.random.default_rng(5)
TENSORS = {
    "encoder.layer.0.weight": RNG.standard_normal((640, 512)).astype(np.float32),  # > 1 MiB
    "encoder.layer.0.bias": RNG.standard_normal(512).astype(np.float32),
    "mask": RNG.integers(0, 2, 100).astype(bool),
    "steps": np.arange(10, dtype=np.int64),
    "empty": np.zeros((0, 3), np.float16),
}
CODECS = {"*.bias": "shuffle+zstd", "steps": "zstd"}


def same(a, b) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def runs_of(a: np.ndarray) -> set[bytes]:
    """The aligned 16-byte runs of ``a``'s bytes: any copy of 31 bytes or more of the
    array, at any offset, holds one of them."""
    raw = a.tobytes()
    return {raw[i : i + 16] for i in range(0, len(raw) - 15, 16)}


def holds_a_run(blob: bytes, runs: set[bytes]) -> bool:
    return any(blob[i : i + 16] in runs for i in range(len(blob) - 15))


@pytest.mark.parametrize("encrypt", [True, "all"])
def test_every_writer_and_reader(encrypt, tmp_path) -> None:
    blob = tw.encode(TENSORS, codec=CODECS, key=KEY, encrypt=encrypt, metadata={"round": 3})
    same(tw.decode(blob, key=KEY), TENSORS)
    path = tmp_path / "m.tw"
    tw.save(TENSORS, path, codec=CODECS, key=KEY, encrypt=encrypt, metadata={"round": 3})
    same(tw.load(path, key=KEY), TENSORS)
    with tw.open(path, key=KEY) as r:
        assert r.encrypted == encrypt and r.metadata == {"round": 3}
        assert r.keys() == list(TENSORS)
        w = r["encoder.layer.0.weight"]
        # Opened into a new array: not a view of the payload (zero-copy cannot apply).
        assert w.flags.owndata and w.flags.writeable
        r.verify()
    with tw.open(blob, key=KEY) as r:
        assert r.info("mask").stored_bytes == 100 + 16  # one block, one tag
    # Chunks made while encoding carry the same payload.
    pieces = tw.encode_chunks(TENSORS, 200_000, codec=CODECS, key=KEY, encrypt=encrypt)
    assert len(pieces) > 1
    laid = bytearray(pieces.total_len)
    for c in pieces:
        info = chunk_info(c)
        body = c[CHUNK_HEADER_LEN:][: info["body_len"]]
        laid[info["offset"] : info["offset"] + len(body)] = body
    same(tw.decode(bytes(laid), key=KEY), TENSORS)


@pytest.mark.parametrize("encrypt", [True, "all"])
def test_no_plaintext_in_the_payload(encrypt) -> None:
    plain = tw.encode(TENSORS, key=KEY)
    blob = tw.encode(TENSORS, key=KEY, encrypt=encrypt, signing_key=SK)
    for name in ("encoder.layer.0.weight", "mask", "steps"):
        runs = runs_of(TENSORS[name])
        assert holds_a_run(plain, runs), "the check finds plaintext"
        assert not holds_a_run(blob, runs), name
    for name in TENSORS:
        assert (name.encode() in blob) == (encrypt is True), name
    # What stays visible: who made it.
    with tw.open(blob, key=KEY, trusted_keys=[tw.public_key(SK)]) as r:
        assert r.key_id == tw.key_id(KEY) and r.signer == tw.public_key(SK)
    assert tw.key_id(KEY).encode() in blob


@pytest.mark.parametrize("encrypt", [True, "all"])
def test_refused_without_the_key(encrypt) -> None:
    blob = tw.encode(TENSORS, key=KEY, encrypt=encrypt)
    for read in ({}, {"key": OTHER}):
        with pytest.raises(tw.AuthenticationError, match="pass key="):
            tw.decode(blob, **read)
    # A data byte flipped: its checksum, and its block's tag, refuse it.
    bad = bytearray(blob)
    bad[len(blob) // 2] ^= 1
    with pytest.raises(tw.IntegrityError):
        tw.decode(bytes(bad), key=KEY)


def test_encrypt_needs_a_key_and_a_known_mode() -> None:
    with pytest.raises(tw.InputError, match="needs key="):
        tw.encode(TENSORS, encrypt=True)
    with pytest.raises(tw.InputError, match="needs key="):
        tw.encode(TENSORS, signing_key=SK, encrypt="all")
    with pytest.raises(tw.InputError, match='"all"'):
        tw.encode(TENSORS, key=KEY, encrypt="header")
    assert tw.open(tw.encode(TENSORS, key=KEY), key=KEY).encrypted is False


def test_aggregation_reads_encrypted_updates() -> None:
    a = {"w": np.ones(300_000, np.float32)}
    b = {"w": np.full(300_000, 3, np.float32)}
    updates = [tw.encode(x, key=KEY, encrypt=e) for x, e in ((a, True), (b, "all"))]
    got = tw.aggregate(updates, keys=[KEY])
    np.testing.assert_array_equal(got["w"], np.full(300_000, 2, np.float32))


LYING_SHAPE = textwrap.dedent(
    """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))  # before anything loads
    import os, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from local_process import peak_mib
    import forge
    import tensorwire as tw

    # An enrolled client holds the key, so it can rewrite and re-authenticate the header:
    # the sealed tensor's shape now claims 1 GB (under max_decoded_bytes for this
    # payload), while what it seals is the zstd frame of 1,000 floats.
    key = bytes(range(32))
    blob = tw.encode({"w": np.zeros(1000, np.float32)}, codec="zstd", key=key, encrypt=True)
    header = forge.header_of(blob)
    header["tensors"][0]["shape"] = [250_000_000]
    evil = forge.with_header(blob, header, key=key)
    before = peak_mib()
    for read in (lambda: tw.decode(evil, key=key), lambda: tw.open(evil, key=key)["w"]):
        try:
            read()
        except MemoryError as e:
            raise SystemExit(f"the output was allocated before the framing was proved: {e}")
        except tw.TensorwireError as e:
            assert e.tensor == "w", e
        else:
            raise SystemExit("decoded a lying payload")
    peak = peak_mib()
    print(f"ok peak {peak} MiB (from {before})")
    """
)


def test_a_sealed_tensor_lying_about_its_shape_costs_no_allocation() -> None:
    # The 1 GB the header claims does not fit beside the interpreter (about 240 MB of
    # address space) under this limit:
    # decoding must refuse the framing before it allocates the output.
    env = dict(os.environ, MALLOC_ARENA_MAX="2", RAYON_NUM_THREADS="2")
    done = subprocess.run(
        [sys.executable, "-c", LYING_SHAPE, os.path.dirname(__file__)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.startswith("ok "), done.stdout
