"""Size ratio and per-core speed of the codec stages on real trained weights.

On the float32 tensors of all-MiniLM-L6-v2 (``workloads.REAL_MODEL_PACKAGE``), per codec:
stored / raw size, the largest and the RMS absolute error of the decoded weights (0 for
lossless codecs), and encode / decode GB/s of tensor bytes per CPU-second (process CPU
time, best of a few runs, so a busy machine skews the figures less than wall time would).
:func:`run` measures in a child process (``children/codec_ratios.py``) with
``RAYON_NUM_THREADS=1``, so the figures are per core. Against zstandard level 3 over the
raw bytes from Python, and on a simulated update (every weight moves by 1e-3 of its
tensor's spread) for the delta codecs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import tensorwire as tw

__all__ = ["CODECS", "UPDATE_CODECS", "measure", "run"]

CODECS = [
    "zstd:3",
    "shuffle+zstd:3",
    "shuffle+zstd:1",
    "floatzip",
    "auto",
    "f16",
    "f16+zstd",
    "bf16+floatzip",
    "int8",
    "int8:channel",
    "int8:channel+zstd",
    # blockwise, one float32 scale per 64 weights (NVFlare's blockwise8 and nf4)
    "int8:block=64",
    "int4:block=64",
    "nf4:block=64",
    "nf4:block=64+zstd",
]
#: Measured on the simulated update, against the weights as base.
UPDATE_CODECS = ["delta+topk:0.01+f16+zstd", "delta+topk:0.01+int8+zstd", "xor+floatzip"]

_CHILD = Path(__file__).resolve().parent / "children" / "codec_ratios.py"


def _best_cpu_seconds(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def _errors(weights: dict[str, np.ndarray], decoded: dict[str, np.ndarray]) -> dict:
    """The largest and the RMS absolute error of ``decoded`` against ``weights``."""
    worst, squares, count = 0.0, 0.0, 0
    for k, v in weights.items():
        d = np.abs(decoded[k].astype(np.float64) - v)
        worst = max(worst, float(d.max(initial=0.0)))
        squares += float(np.square(d).sum())
        count += d.size
    return {"max error": worst, "RMS error": (squares / max(count, 1)) ** 0.5}


def _row(codec: str, stored: int, raw: int, t_enc: float, t_dec: float) -> dict:
    return {
        "codec": codec,
        "ratio": stored / raw,
        "encode GB/s": raw / max(t_enc, 1e-9) / 1e9,
        "decode GB/s": raw / max(t_dec, 1e-9) / 1e9,
    }


def measure(weights: dict[str, np.ndarray], repeat: int = 5, update_repeat: int = 3) -> dict:
    """Every codec of :data:`CODECS` on ``weights``, zstandard over the raw bytes, and the
    :data:`UPDATE_CODECS` on a simulated update; one row each."""
    import zstandard

    raw = sum(a.nbytes for a in weights.values())
    rows = []
    for codec in CODECS:
        blob = tw.encode(weights, codec=codec)
        t_enc = _best_cpu_seconds(lambda c=codec: tw.encode(weights, codec=c), repeat)
        t_dec = _best_cpu_seconds(lambda b=blob: tw.decode(b, verify=False), repeat)
        rows.append(_row(codec, len(blob), raw, t_enc, t_dec) | _errors(weights, tw.decode(blob)))
    flat = b"".join(a.tobytes() for a in weights.values())
    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    z = cctx.compress(flat)
    rows.append(
        _row(
            "python zstandard:3 (raw bytes)",
            len(z),
            raw,
            _best_cpu_seconds(lambda: cctx.compress(flat), repeat),
            _best_cpu_seconds(lambda: dctx.decompress(z), repeat),
        )
    )
    rng = np.random.default_rng(0)
    new = {
        k: (v + rng.normal(0, 1e-3, v.shape) * v.std()).astype(np.float32)
        for k, v in weights.items()
    }
    for codec in UPDATE_CODECS:
        blob = tw.encode(new, codec=codec, base=weights)
        t_enc = _best_cpu_seconds(
            lambda c=codec: tw.encode(new, codec=c, base=weights), update_repeat
        )
        t_dec = _best_cpu_seconds(
            lambda b=blob: tw.decode(b, base=weights, verify=False), update_repeat
        )
        errors = _errors(new, tw.decode(blob, base=weights))
        rows.append(_row(codec + " (update)", len(blob), raw, t_enc, t_dec) | errors)
    return {"tensors": len(weights), "raw_mb": raw / 1e6, "rows": rows}


def run(path: str, what: str, smoke: bool, max_tensors: int = 0) -> dict:
    """:func:`measure` on the float32 tensors of the safetensors file ``path`` (the
    ``max_tensors`` smallest when > 0), in a child process on one rayon thread."""
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    args = [path, "1" if smoke else "5", "1" if smoke else "3", str(max_tensors)]
    r = subprocess.run(
        [sys.executable, str(_CHILD), *args], capture_output=True, text=True, env=env
    )
    if r.returncode != 0:
        raise RuntimeError(f"codec ratios failed in their subprocess: {r.stderr[-2000:]}")
    out = json.loads(r.stdout)
    out["weights"] = what
    out["threads"] = "one thread (`RAYON_NUM_THREADS=1`)"
    return out
