"""Write the committed seed corpora of the atheris targets: small valid files of each format.

``python fuzz/python/make_corpus.py`` (re)writes ``fuzz/python/corpus/<name>/`` (one per
target; ``tensorwire`` seeds both ``decode`` and ``open``); the files are deterministic,
a few hundred bytes each.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys

import ml_dtypes
import numpy as np

import tensorwire as tw
from tensorwire.formats import md5list, npz, ptth, safetensors

__all__ = ["corpora", "main"]

HERE = os.path.dirname(os.path.abspath(__file__))
_RNG = np.random.default_rng(2024)


def _f32(*shape: int) -> np.ndarray:
    return _RNG.standard_normal(shape).astype(np.float32)


def _mixed() -> dict[str, np.ndarray]:
    return {
        "w": _f32(3, 4),
        "b": np.arange(4, dtype=np.int64),
        "h": np.ones(3, np.float16),
        "bf": np.ones(2, ml_dtypes.bfloat16),
        "f8": np.zeros(2, ml_dtypes.float8_e4m3fn),
        "flag": np.array([True, False]),
        "empty": np.zeros((0, 3), np.uint8),
        "scalar": np.array(2.5),
    }


def _numpy_only(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if v.dtype.__class__.__module__.startswith("numpy")}


def _tw_payloads() -> dict[str, bytes]:
    w, b = _f32(4, 4), _f32(4)
    base = {"w": w, "b": b}
    new = {"w": w + np.float32(1e-3), "b": b}
    out = {
        "raw": tw.encode({"w": w, "b": b}, metadata={"round": 1, "note": "seed"}),
        "nested": tw.encode({"enc": {"w": w[:2], "b": [b[:2], np.int32(3)]}, "t": (b[:1],)}),
        "empty": tw.encode({}),
        "dtypes": tw.encode({k: v for k, v in _mixed().items() if k != "bf"}),
        "delta": tw.encode(new, codec="delta+topk:0.1+f16+zstd", base=base),
        "xor": tw.encode(new, codec="xor+floatzip", base=base),
    }
    for codec in [
        "zstd",
        "lz4",
        "shuffle+zstd:3",
        "floatzip",
        "f16",
        "bf16+lz4",
        "int8:channel+zstd",
        "int8:stochastic=7",
        "topk:0.25",
        "threshold:0.5+f16",
    ]:
        name = codec.replace(":", "_").replace("+", "-").replace("=", "")
        out[name] = tw.encode({"w": w, "b": b}, codec=codec)
    return out


def corpora() -> dict[str, dict[str, bytes]]:
    """Seed files by corpus name, then by file name."""
    mixed, plain = _mixed(), _numpy_only(_mixed())
    ptth_set = {"conv.w": _f32(2, 3), "fc.b": np.arange(3, dtype=np.float64), "n": np.int32([7])}
    st = {
        "mixed": safetensors.dumps(mixed, metadata={"format": "pt", "step": "3"}),
        "one": safetensors.dumps({"x": np.ones(1, np.float32)}),
        "empty": safetensors.dumps({}),
    }
    nz = {
        "stored": npz.dumps(plain),
        "deflate": npz.dumps(plain, compressed=True),
        "fortran": npz.dumps({"f": np.asfortranarray(_f32(2, 3)), "be": np.arange(3, dtype=">i4")}),
        "empty": npz.dumps({}),
    }
    md = {
        "mixed": md5list.dumps(list(mixed.values())),
        "big-endian": md5list.dumps([np.arange(4, dtype=">f8")]),
        "empty": md5list.dumps([]),
    }
    pt = {"three": ptth.dumps(ptth_set), "empty": ptth.dumps({})}
    payloads = _tw_payloads()
    cli_seeds: dict[str, bytes] = {}
    for prefix, group in ((0, st), (1, nz), (2, md), (3, pt), (4, payloads)):
        first = next(iter(group))
        cli_seeds[f"{prefix}-{first}"] = bytes([prefix]) + group[first]
    cli_seeds["5-sniffed-ptth"] = bytes([5]) + pt["three"]
    return {
        "safetensors": st,
        "npz": nz,
        "md5list": md,
        "ptth": pt,
        "tensorwire": payloads,  # the decode and open targets' seeds
        "cli": cli_seeds,
    }


def main(argv: list[str]) -> int:
    """Write every corpus under ``fuzz/python/corpus/``; print a summary."""
    root = os.path.join(HERE, "corpus")
    for target, files in corpora().items():
        folder = os.path.join(root, target)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        size = sum(map(len, files.values()))
        digest = hashlib.sha256(b"".join(files.values())).hexdigest()[:12]
        print(f"{target:12} {len(files):3} files {size:7} bytes  {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
