"""Memory reused across a training loop: encoding into one buffer, decoding into arrays.

On the BERT-base-shaped state dict (``bert.weights``) at the run's size, in this process:

- a training loop's send step, ``tw.encode_into`` the same-shaped state dict into one
  buffer sized once by ``tw.encoded_size`` (raw: copy and hash, no fresh page), against
  blake3 hashing the same bytes (one contiguous copy of them, on as many threads as the
  encoder, which runs one rayon thread per core), and against ``tw.encode`` into new
  ``bytes`` (the kernel zeroes each fresh page first);
- the receiving step, ``tw.decode(out=arrays)`` into arrays allocated once, against
  ``tw.decode(copy=True)`` into new ones, both verifying every checksum.

Each pair runs interleaved, run by run (a busy machine slows both alike); the figures
are medians, speeds as GB/s of tensor bytes.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

import bert
import numpy as np

import tensorwire as tw

__all__ = ["run"]


def _interleaved(fns: list[Callable[[], Any]], runs: int) -> list[float]:
    """Median wall seconds of each of ``fns``, run in turn ``runs`` times (after a warm-up)."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(runs):
        for fn, out in zip(fns, times):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def run(scale: float, smoke: bool) -> dict[str, Any]:
    """The figures above, as a dict for ``Results.reuse``."""
    import blake3

    model = bert.weights(bert.shapes_at_scale(0.005 if smoke else scale))
    nbytes = sum(a.nbytes for a in model.values())
    runs = 1 if smoke else 9
    size = tw.encoded_size(model)
    buffer = np.empty(size, np.uint8)
    buffer.fill(0)  # fault its pages in once, as a loop's first step would
    n = tw.encode_into(buffer, model)
    assert n == size, "encoded_size is exact for raw"
    assert buffer[:n].tobytes() == tw.encode(model), "encode_into writes what encode does"
    same_bytes = np.concatenate([a.reshape(-1).view(np.uint8) for a in model.values()])
    threads = os.cpu_count() or 1

    def hash_them() -> bytes:
        return blake3.blake3(same_bytes, max_threads=threads).digest()

    t_into, t_hash, t_fresh = _interleaved(
        [lambda: tw.encode_into(buffer, model), hash_them, lambda: tw.encode(model)], runs
    )
    payload = buffer[:n].tobytes()
    arrays = {k: np.empty_like(v) for k, v in model.items()}
    got = tw.decode(payload, out=arrays)
    assert all(got[k] is arrays[k] and np.array_equal(arrays[k], model[k]) for k in model)
    t_out, t_copy = _interleaved(
        [lambda: tw.decode(payload, out=arrays), lambda: tw.decode(payload, copy=True)], runs
    )
    gbps = lambda s: nbytes / max(s, 1e-9) / 1e9  # noqa: E731
    return {
        "model_mb": nbytes / 1e6,
        "tensors": len(model),
        "threads": threads,
        "payload_bytes": n,
        "encode_into_gbps": gbps(t_into),
        "blake3_gbps": gbps(t_hash),
        "encode_fresh_gbps": gbps(t_fresh),
        "encode_into_over_blake3": t_hash / t_into,
        "encode_into_over_fresh": t_fresh / t_into,
        "decode_out_gbps": gbps(t_out),
        "decode_copy_gbps": gbps(t_copy),
        "decode_out_over_copy": t_copy / t_out,
    }
