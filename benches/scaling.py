"""How encode and decode cost grows with payload bytes and with tensor count.

Linearity figure: the exponent ``k`` of a least-squares fit ``time ~ size**k`` (log-log)
over the upper part of the range, where fixed per-call overheads no longer dominate.
``k`` near 1 is linear cost; near 0 is flat (the zero-copy decode must be flat in bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from measure import PeakRSS, timed

import tensorwire as tw

__all__ = ["ScalingSeries", "fit_exponent", "scale_by_bytes", "scale_by_count"]

#: Linear cost: exponent within this band. Flat: exponent below FLAT_MAX, or the slowest
#: point within FLAT_SPREAD of the fastest (sub-ms timings jitter more than they grow).
LINEAR_BAND = (0.8, 1.2)
FLAT_MAX = 0.2
FLAT_SPREAD = 2.0


@dataclass
class ScalingSeries:
    """Median seconds of one operation at each point of a sweep."""

    label: str
    xs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    expect: str = "linear"  # or "flat"

    def exponent(self, fit_from: float) -> float:
        pts = [(x, t) for x, t in zip(self.xs, self.seconds) if x >= fit_from]
        return fit_exponent([p[0] for p in pts], [p[1] for p in pts])

    def spread(self, fit_from: float) -> float:
        """Slowest over fastest time in the fitted range (1.0 is perfectly flat)."""
        ts = [t for x, t in zip(self.xs, self.seconds) if x >= fit_from]
        return max(ts) / min(ts) if ts and min(ts) > 0 else float("inf")

    def verdict(self, fit_from: float) -> str:
        k = self.exponent(fit_from)
        if math.isnan(k):
            return "too few points"
        if self.expect == "flat":
            return "flat" if k < FLAT_MAX or self.spread(fit_from) < FLAT_SPREAD else "NOT flat"
        lo, hi = LINEAR_BAND
        return "linear" if lo <= k <= hi else ("sub-linear" if k < lo else "SUPER-linear")


def fit_exponent(xs: list[float], ts: list[float]) -> float:
    """Slope of log(t) against log(x) by least squares (NaN with fewer than 2 points)."""
    if len(xs) < 2:
        return float("nan")
    lx = np.log(np.asarray(xs, dtype=np.float64))
    lt = np.log(np.maximum(np.asarray(ts, dtype=np.float64), 1e-9))
    slope, _ = np.polyfit(lx, lt, 1)
    return float(slope)


def _ops() -> list[tuple[str, str, Callable[[Any], Any], Callable[[Any], Any]]]:
    """(label, expectation, encode, decode-of-blob) per measured operation."""

    def st_enc(t: Any) -> bytes:
        from safetensors.numpy import save

        return save(t)

    def st_dec(b: bytes) -> Any:
        from safetensors.numpy import load

        return load(b)

    return [
        ("tw encode raw", "linear", tw.encode, None),
        ("tw decode verify=True", "linear", None, lambda b: tw.decode(b, verify=True)),
        ("tw decode verify=False (zero-copy)", "flat", None, lambda b: tw.decode(b, verify=False)),
        (
            "tw decode copy=True, verify=False",
            "linear",
            None,
            lambda b: tw.decode(b, verify=False, copy=True),
        ),
        ("safetensors save", "linear", st_enc, None),
        ("safetensors load", "linear", None, st_dec),
    ]


def _sweep(
    points: list[tuple[float, dict[str, np.ndarray]]],
    *,
    repeats: int,
    budget_s: float,
    rss: PeakRSS,
    flat_ok: bool,
) -> list[ScalingSeries]:
    series = {label: ScalingSeries(label, expect=e) for label, e, _, _ in _ops()}
    if not flat_ok:  # in tensor count, even a zero-copy decode makes one array per tensor
        for s in series.values():
            s.expect = "linear"
    for x, tensors in points:
        blob = tw.encode(tensors)
        st_blob = None
        for label, _, enc, dec in _ops():
            if enc is not None:
                fn = (lambda e, ts: lambda: e(ts))(enc, tensors)
            else:
                if label.startswith("safetensors"):
                    if st_blob is None:
                        from safetensors.numpy import save

                        st_blob = save(tensors)
                    src = st_blob
                else:
                    src = blob
                fn = (lambda d, s: lambda: d(s))(dec, src)
            _, t = timed(fn, repeats=repeats, budget_s=budget_s, rss=rss, keep=False)
            series[label].xs.append(x)
            series[label].seconds.append(t.median_s)
        del blob, st_blob
    return list(series.values())


def scale_by_bytes(
    sizes_mb: list[float], *, tensors: int, repeats: int, budget_s: float, rss: PeakRSS
) -> list[ScalingSeries]:
    """Payloads of ``sizes_mb`` (1e6 bytes), each ``tensors`` equal float32 tensors."""
    biggest = int(max(sizes_mb) * 1e6) // 4
    pool = np.random.default_rng(5).standard_normal(biggest, dtype=np.float32)
    points = []
    for mb in sizes_mb:
        n = int(mb * 1e6) // 4 // tensors
        points.append((mb, {f"t{i}": pool[i * n : (i + 1) * n] for i in range(tensors)}))
    return _sweep(points, repeats=repeats, budget_s=budget_s, rss=rss, flat_ok=True)


def scale_by_count(
    counts: list[int], *, elements: int, repeats: int, budget_s: float, rss: PeakRSS
) -> list[ScalingSeries]:
    """Dicts of ``counts`` float32 tensors of ``elements`` values each."""
    pool = np.random.default_rng(6).standard_normal(max(counts) * elements, dtype=np.float32)
    points = []
    for c in counts:
        t = {f"layer.{i}.w": pool[i * elements : (i + 1) * elements] for i in range(c)}
        points.append((float(c), t))
    return _sweep(points, repeats=repeats, budget_s=budget_s, rss=rss, flat_ok=False)
