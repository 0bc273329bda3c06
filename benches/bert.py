"""The BERT-base-shaped state dict every bench that needs a model uses: names, shapes, values.

BERT-base (uncased) has 199 tensors, 438 MB of float32 at hidden size 768. The benches use
it at other sizes (a tenth of the run, a quarter for a round that must fit in memory), so
the sizes are parameters and the names and roles stay. Values are N(0, 0.02) float32 (the
usual initialisation scale), LayerNorm weights 1 + N(0, 0.02).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "HIDDEN",
    "POSITIONS",
    "VOCAB",
    "Shapes",
    "normal_like",
    "shapes",
    "shapes_at_hidden",
    "shapes_at_scale",
    "weights",
]

Tensors = dict[str, np.ndarray]
Shapes = list[tuple[str, tuple[int, ...]]]

#: BERT-base's sizes: hidden width, vocabulary, position embeddings (12 layers, FFN 4x).
HIDDEN, VOCAB, POSITIONS = 768, 30522, 512
_LAYERS = 12


def shapes(hidden: int = HIDDEN, vocab: int = VOCAB, positions: int = POSITIONS) -> Shapes:
    """State-dict names and shapes of BERT-base with these sizes (always 199 tensors)."""
    h, ffn = hidden, 4 * hidden
    out: Shapes = [
        ("embeddings.word_embeddings.weight", (vocab, h)),
        ("embeddings.position_embeddings.weight", (positions, h)),
        ("embeddings.token_type_embeddings.weight", (2, h)),
        ("embeddings.LayerNorm.weight", (h,)),
        ("embeddings.LayerNorm.bias", (h,)),
    ]
    for i in range(_LAYERS):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            out += [
                (f"{p}attention.self.{m}.weight", (h, h)),
                (f"{p}attention.self.{m}.bias", (h,)),
            ]
        out += [
            (f"{p}attention.output.dense.weight", (h, h)),
            (f"{p}attention.output.dense.bias", (h,)),
            (f"{p}attention.output.LayerNorm.weight", (h,)),
            (f"{p}attention.output.LayerNorm.bias", (h,)),
            (f"{p}intermediate.dense.weight", (ffn, h)),
            (f"{p}intermediate.dense.bias", (ffn,)),
            (f"{p}output.dense.weight", (h, ffn)),
            (f"{p}output.dense.bias", (h,)),
            (f"{p}output.LayerNorm.weight", (h,)),
            (f"{p}output.LayerNorm.bias", (h,)),
        ]
    out += [("pooler.dense.weight", (h, h)), ("pooler.dense.bias", (h,))]
    return out


def shapes_at_scale(scale: float) -> Shapes:
    """About ``scale`` times BERT-base's bytes: hidden size (a multiple of 16), vocabulary
    and positions all shrink by ``sqrt(scale)``, so the matrices shrink by about ``scale``."""
    r = math.sqrt(scale)
    return shapes(
        hidden=max(16, round(HIDDEN * r / 16) * 16),
        vocab=max(64, round(VOCAB * r)),
        positions=max(16, round(POSITIONS * r)),
    )


def shapes_at_hidden(hidden: int) -> Shapes:
    """BERT-base at hidden size ``hidden``: the vocabulary scales with it, 512 positions."""
    return shapes(hidden=hidden, vocab=VOCAB * hidden // HIDDEN)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    a = rng.standard_normal(shape, dtype=np.float32)
    a *= np.float32(std)
    return a


def weights(model: Shapes, seed: int = 0) -> Tensors:
    """Float32 tensors of these shapes, N(0, 0.02); LayerNorm weights 1 + N(0, 0.02)."""
    rng = np.random.default_rng(seed)
    out: Tensors = {}
    for name, shape in model:
        a = _normal(rng, shape, 0.02)
        if "LayerNorm.weight" in name:
            a += np.float32(1.0)
        out[name] = a
    return out


def normal_like(tensors: Tensors, std: float, rng: np.random.Generator) -> Tensors:
    """N(0, ``std``) float32 tensors with the names and shapes of ``tensors`` (a client's
    local step, or the direction of a family of updates)."""
    return {k: _normal(rng, a.shape, std) for k, a in tensors.items()}
