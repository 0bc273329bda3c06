"""``Aggregator.partial_chunks()``: the partial aggregate streamed chunk by chunk out of
the running sums, equal byte for byte to ``partial()`` once reassembled, refusing changes
to the sums while it reads them, and costing no second model of memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest
from test_partial import CODECS, round_of

import tensorwire as tw
from tensorwire import chunking, fl


def reassembled(chunks: Iterable[bytes]) -> bytes:
    r = tw.Reassembler()
    done = [p for c in chunks if (p := r.add(c)) is not None]
    assert len(done) == 1
    return bytes(done[0])


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("sums_codec", ["raw", "shuffle+zstd"])
def test_streamed_partial_is_partial_byte_for_byte(codec: str, sums_codec: str) -> None:
    base, updates = round_of(codec, n=5)
    agg = tw.Aggregator(base=base, round=1)
    for u in updates:
        assert agg.add(u, "samples")
    whole = agg.partial(codec=sums_codec)
    for max_bytes in [200, 1000, 4096, len(whole) + 200]:
        chunks = agg.partial_chunks(max_bytes, codec=sums_codec)
        assert chunks.total_len == len(whole)
        pieces = list(chunks)
        assert len(pieces) == chunks.count and len(chunks) == 0
        assert all(len(p) <= max_bytes for p in pieces)
        assert reassembled(pieces) == whole, max_bytes
    # the partial merges like the whole one
    top = tw.Aggregator(base=base, round=1)
    assert top.merge(reassembled(agg.partial_chunks(1000, codec=sums_codec)))
    assert top.count == agg.count == len(updates)


def test_keyed_and_signed_streamed_partials_merge() -> None:
    base, updates = round_of("int8", n=3)
    key, sk = bytes(range(32)), tw.generate_signing_key()
    agg = tw.Aggregator(base=base, round=1)
    for u in updates:
        assert agg.add(u, "samples")
    blob = reassembled_keyed(agg.partial_chunks(700, key=key, signing_key=sk), key)
    top = tw.Aggregator(base=base, round=1)
    assert top.merge(blob, key=key, trusted_keys=[tw.public_key(sk)])
    with pytest.raises(tw.AuthenticationError):
        tw.Aggregator(base=base, round=1).merge(blob, trusted_keys=[tw.public_key(sk)])
    # the payload id is the one asked for, in every chunk
    pid = bytes(range(16))
    chunks = agg.partial_chunks(700, payload_id=pid)
    assert chunks.payload_id == pid.hex()
    assert {chunking.chunk_info(c)["payload_id"] for c in chunks} == {pid.hex()}


def reassembled_keyed(chunks: Iterable[bytes], key: bytes) -> bytes:
    r = tw.Reassembler(key=key)
    done = [p for c in chunks if (p := r.add(c)) is not None]
    assert len(done) == 1
    return bytes(done[0])


def test_sums_cannot_change_while_a_streamed_partial_reads_them() -> None:
    base, updates = round_of("raw", n=4)
    agg = tw.Aggregator(base=base, round=1, on_mismatch="skip")
    assert agg.add(updates[0])
    other = tw.Aggregator(base=base, round=1)
    assert other.add(updates[3])
    before = agg.partial()
    chunks = agg.partial_chunks(300)
    first = next(chunks)
    with pytest.raises(tw.TensorwireError, match="being streamed"):
        agg.add(updates[1])
    with pytest.raises(tw.TensorwireError, match="being streamed"):
        agg.merge(other.partial())
    assert agg.partial() == before  # reading is fine, and nothing changed
    rest = list(chunks)
    assert reassembled([first, *rest]) == before
    # the last chunk made lets go of the sums
    assert agg.add(updates[1])
    # so does dropping a stream half read
    half = agg.partial_chunks(300)
    next(half)
    with pytest.raises(tw.TensorwireError, match="being streamed"):
        agg.add(updates[2])
    del half
    assert agg.add(updates[2])
    assert agg.merge(other.partial())
    assert agg.count == 4


def test_streamed_partial_refusals() -> None:
    with pytest.raises(tw.TensorwireError, match="no partial aggregate yet"):
        tw.Aggregator().partial_chunks(1000)
    base, updates = round_of("raw", n=1)
    agg = tw.Aggregator(base=base, round=1)
    assert agg.add(updates[0])
    with pytest.raises(tw.TensorwireError, match="lossless"):
        agg.partial_chunks(1000, codec="int8")
    with pytest.raises(tw.TensorwireError):
        agg.partial_chunks(10)  # no room for a chunk header
    with pytest.raises(tw.TensorwireError, match="payload_id"):
        agg.partial_chunks(1000, payload_id=b"short")
    # none of these left a stream holding the sums
    assert agg.add(tw.encode_update(base, base, round=1))


MEMORY = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import tensorwire as tw

    n = 16 << 20  # float32 elements: a 64 MiB model
    base = {"w": np.zeros(n, np.float32)}
    agg = tw.Aggregator(base=base)
    agg.add({"w": np.ones(n, np.float32)})
    del base

    def rss():
        with open("/proc/self/status") as f:
            return {l.split(":")[0]: int(l.split()[1]) << 10 for l in f if l.startswith("Vm")}

    def growth(publish):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = rss()["VmRSS"]
        size = publish()
        return (rss()["VmHWM"] - start) / (4 * n), size

    def streamed():
        size = 0
        for c in agg.partial_chunks(1 << 20):
            size += len(c)  # a broker would take it here; one chunk held at a time
        return size

    def whole():
        p = agg.partial()
        return len(p)

    s, s_size = growth(streamed)
    w, w_size = growth(whole)
    print(json.dumps({"streamed": s, "whole": w, "sizes": [s_size, w_size]}))
    """
)


def test_streamed_partial_holds_no_second_model(tmp_path: Path) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak")
    script = tmp_path / "memory.py"
    script.write_text(MEMORY)
    out = subprocess.run(
        [sys.executable, str(script), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figures = json.loads(out.stdout)
    assert figures["sizes"][0] > 64 << 20  # chunk headers on top of the payload
    # partial(): the payload is a second model; the stream holds one chunk (1 MiB) at a time
    assert figures["whole"] > 0.9, figures
    assert figures["streamed"] < 0.1, figures


def test_mismatch_error_still_names_partials() -> None:
    # the stream and the whole partial share their arguments: a foreign round refuses both
    base, updates = round_of("raw", n=1)
    agg = tw.Aggregator(base=base, round=1)
    assert agg.add(updates[0])
    other = tw.Aggregator(base=base, round=2)
    with pytest.raises(fl.MismatchError, match="round 1"):
        other.merge(reassembled(agg.partial_chunks(500)))
