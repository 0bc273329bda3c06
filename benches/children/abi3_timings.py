"""Timings of one build of the extension, in a process of its own (benches/abi3.py).

    python benches/children/abi3_timings.py SCALE REPEAT EXPECT

The process imports the tensorwire found first on PYTHONPATH and checks that its
extension file ends with EXPECT (``.abi3.so`` or the interpreter's own suffix). Each
workload runs REPEAT times; prints one JSON object: workload -> best seconds, and a
checksum of every result so that the two builds can be compared.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import Any, Callable

import numpy as np

import tensorwire as tw

#: A fixed payload id, so that both builds chunk to the same bytes.
ID = bytes(range(16))


def _model(n_tensors: int, elements: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layer{i}.weight": rng.standard_normal(elements, dtype=np.float32)
            for i in range(n_tensors)}  # fmt: skip


def _best(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def _digest(x: Any) -> str:
    h = hashlib.blake2b(digest_size=8)
    if isinstance(x, (bytes, bytearray)):
        h.update(x)
    elif isinstance(x, dict):
        for k in sorted(x):
            h.update(k.encode())
            h.update(np.ascontiguousarray(x[k]).tobytes())
    else:
        for item in x:
            h.update(bytes(item))
    return h.hexdigest()


def main(argv: list[str]) -> None:
    scale, repeat, expect = float(argv[0]), int(argv[1]), argv[2]
    assert tw._core.__file__.endswith(expect), (tw._core.__file__, expect)
    big = _model(32, max(1, int(scale * 1_000_000)), 0)  # 128 MB at scale 1
    small = _model(max(2, int(scale * 4000)), 64, 1)  # 4,000 tensors of 256 B
    blob, small_blob = tw.encode(big), tw.encode(small)
    pieces = list(tw.chunk(blob, max_bytes=1 << 20, payload_id=ID))
    updates = [tw.encode(_model(8, max(1, int(scale * 250_000)), 10 + i)) for i in range(10)]

    def reassemble() -> bytes:
        r = tw.Reassembler()
        done = [p for p in (r.add(piece) for piece in pieces) if p is not None]
        return done[0]

    work: dict[str, Callable[[], Any]] = {
        "encode raw, 32 large tensors": lambda: tw.encode(big),
        "decode + verify, 32 large tensors": lambda: tw.decode(blob),
        "encode shuffle+zstd, 32 large tensors": lambda: tw.encode(big, codec="shuffle+zstd"),
        "encode raw, 4,000 small tensors": lambda: tw.encode(small),
        "decode + verify, 4,000 small tensors": lambda: tw.decode(small_blob),
        "chunk, 1 MB pieces": lambda: list(tw.chunk(blob, max_bytes=1 << 20, payload_id=ID)),
        "reassemble 1 MB pieces": reassemble,
        "aggregate 10 updates": lambda: tw.aggregate(updates),
    }
    out: dict[str, Any] = {"seconds": {}, "digest": {}}
    for name, run in work.items():
        seconds, result = _best(repeat, run)
        out["seconds"][name] = seconds
        out["digest"][name] = _digest(result)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
