"""What trust costs: keyed and signed payloads against plain ones, and encryption per core.

On the BERT-base-shaped state dict (``bert.weights``) at the run's size, in this process:

- keyed encode and verified decode against plain ones, as a ratio of wall times, the two
  interleaved run by run (so a busy machine slows both alike), median of the runs;
- signing and verifying one payload, in microseconds: a one-tensor payload signed and
  checked against the same payload keyed only (the difference is the Ed25519 work);
- ``encrypt=True`` encode and decode in GB/s of tensor bytes per CPU-second (process CPU
  time over every thread, best of the runs), beside the same work without encryption:
  keyed encode (copy, hash, fresh pages) and unverified copying decode (copy, fresh
  pages). The difference is what encryption itself costs (``*_net_*``): sealing or
  opening every block, the rest of both being the same.
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

_KEY = bytes(range(32))


def _interleaved(a: Callable[[], Any], b: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median wall seconds of ``a`` and of ``b``, run alternately ``runs`` times each."""
    ta, tb = [], []
    a(), b()  # warm-up
    for _ in range(runs):
        for fn, out in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def _cpu_gbps(fn: Callable[[], Any], nbytes: int, runs: int) -> float:
    """GB/s of ``nbytes`` per CPU-second of ``fn``, best of ``runs``."""
    fn()
    best = min(_cpu(fn) for _ in range(runs))
    return nbytes / max(best, 1e-9) / 1e9


def _cpu(fn: Callable[[], Any]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def run(scale: float, smoke: bool) -> dict[str, Any]:
    """The figures above, as a dict for ``Results.trust``."""
    model = bert.weights(bert.shapes_at_scale(0.005 if smoke else 0.25 * scale))
    nbytes = sum(a.nbytes for a in model.values())
    runs = 1 if smoke else 7
    sk = tw.generate_signing_key()
    pk = tw.public_key(sk)
    plain, keyed = tw.encode(model), tw.encode(model, key=_KEY)
    sealed = tw.encode(model, key=_KEY, encrypt=True)
    for blob, read in ((keyed, {"key": _KEY}), (sealed, {"key": _KEY})):
        got = tw.decode(blob, **read)
        assert all(np.array_equal(got[k], model[k]) for k in model), "round trip"
    enc_plain, enc_keyed = _interleaved(
        lambda: tw.encode(model), lambda: tw.encode(model, key=_KEY), runs
    )
    dec_plain, dec_keyed = _interleaved(
        lambda: tw.decode(plain), lambda: tw.decode(keyed, key=_KEY), runs
    )
    # Signing and verifying: one small tensor, so the Ed25519 work is most of it.
    one = {"w": np.zeros(16, np.float32)}
    reps = 20 if smoke else 2000
    small_keyed = tw.encode(one, key=_KEY)
    small_signed = tw.encode(one, key=_KEY, signing_key=sk)

    def each(fn: Callable[[], Any]) -> Callable[[], None]:
        def batch() -> None:
            for _ in range(reps):
                fn()

        return batch

    t_k, t_s = _interleaved(
        each(lambda: tw.encode(one, key=_KEY)),
        each(lambda: tw.encode(one, key=_KEY, signing_key=sk)),
        3,
    )
    v_k, v_s = _interleaved(
        each(lambda: tw.open(small_keyed, key=_KEY)),
        each(lambda: tw.open(small_signed, key=_KEY, trusted_keys=[pk])),
        3,
    )
    cpu_runs = 1 if smoke else 3
    out = {
        "model_mb": nbytes / 1e6,
        "tensors": len(model),
        "threads": os.cpu_count(),
        "keyed_encode_ratio": enc_plain / enc_keyed,
        "keyed_decode_ratio": dec_plain / dec_keyed,
        "plain_encode_s": enc_plain,
        "keyed_encode_s": enc_keyed,
        "plain_decode_s": dec_plain,
        "keyed_decode_s": dec_keyed,
        "sign_us": max(t_s - t_k, 0.0) / reps * 1e6,
        "verify_us": max(v_s - v_k, 0.0) / reps * 1e6,
        "sealed_over_plain_bytes": len(sealed) / len(plain),
        "plain_encode_gbps_core": _cpu_gbps(lambda: tw.encode(model, key=_KEY), nbytes, cpu_runs),
        "plain_decode_gbps_core": _cpu_gbps(
            lambda: tw.decode(keyed, key=_KEY, copy=True, verify=False), nbytes, cpu_runs
        ),
        "encrypt_gbps_core": _cpu_gbps(
            lambda: tw.encode(model, key=_KEY, encrypt=True), nbytes, cpu_runs
        ),
        "decrypt_gbps_core": _cpu_gbps(lambda: tw.decode(sealed, key=_KEY), nbytes, cpu_runs),
    }
    for op, plain_op in (("encrypt", "plain_encode"), ("decrypt", "plain_decode")):
        extra = 1 / out[f"{op}_gbps_core"] - 1 / out[f"{plain_op}_gbps_core"]
        out[f"{op}_net_gbps_core"] = 1 / extra if extra > 0 else float("inf")
    return out
