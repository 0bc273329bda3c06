"""Federated rounds: FedAvg and robust aggregation against the numpy loop and Flower, and
the bytes of one round against Flower's default serialization.

The updates are BERT-base-shaped (``bert.shapes_at_hidden``): update ``i`` is
``base + 0.05 * (i + 1) * direction``, with unequal FedAvg weights. Each aggregation
method runs in a process of its own (``children/aggregate.py``, or
``children/aggregate_stream.py`` for a server receiving one update at a time), so that
its peak RSS is its own; the methods are the rows of :data:`RUNS`. The numpy loop is what
a server writes by hand (``tw.decode`` each update, ``acc[k] += w * update[k]``, divide);
Flower's aggregations run on Flower's own payloads (``np.save`` per array):
``aggregate_arrayrecords`` (what ``flwr.serverapp.strategy.FedAvg`` calls),
``aggregate_inplace`` (the legacy ``flwr.server.strategy.FedAvg`` default) and the
robust ``aggregate_median`` / ``aggregate_trimmed_avg``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import bert
import blake3
import numpy as np
import peers

import tensorwire as tw

__all__ = [
    "CODECS",
    "METHODS",
    "ROBUST",
    "ROBUST_CODECS",
    "ROUND_CODECS",
    "RUNS",
    "STREAM_CODECS",
    "Sizes",
    "check_matches_numpy",
    "checksum",
    "compare",
    "compare_robust",
    "compare_stream",
    "model",
    "npsave_bytes",
    "read_flower_update",
    "round_bytes",
    "sizes",
    "update_weights",
    "warm_up_tensorwire",
]

Tensors = dict[str, np.ndarray]

CHILDREN = Path(__file__).resolve().parent / "children"

#: Batch aggregation at scale 1: 50 updates at hidden 384 (1/4 of BERT-base's 438 MB,
#: 110 MB; 5.5 GB of payloads), so that a round's payloads fit in memory for every
#: method, which all take them as a list...
HIDDEN, UPDATES = 384, 50
CODECS = ("raw", "shuffle+zstd")
#: tw.aggregate(method="median" | "trimmed_mean:0.1") against Flower's robust strategies.
ROBUST_CODECS = ("raw", "shuffle+zstd")
#: ...and the same 50 updates of the full BERT-base (hidden 768) received one at a time,
#: tw.Aggregator against the numpy loop (one payload in memory at a time).
STREAM_HIDDEN, STREAM_CODECS = 768, ("raw",)
#: Bytes per round: hidden 192 (28 MB model), 10 clients; the ratios do not depend on size.
ROUND_HIDDEN, CLIENTS = 192, 10
ROUND_CODECS = ("shuffle+zstd", "delta+topk:0.01+f16+zstd")

#: Every aggregation a child process can run: name -> f(payloads, weights). Names starting
#: with "flower" take Flower's payloads ({name: flwr Array}), the others tensorwire's.
RUNS: dict[str, Callable[[list[Any], list[float]], Tensors]] = {
    "numpy": peers.numpy_fedavg,
    "tensorwire": lambda p, w: tw.aggregate(p, w),
    "flower_fedavg": peers.flower_fedavg,
    "flower_legacy": peers.flower_legacy_fedavg,
    "tw_median": lambda p, w: tw.aggregate(p, method="median"),
    "tw_trimmed": lambda p, w: tw.aggregate(p, method="trimmed_mean:0.1"),
    "flower_median": peers.flower_median,
    "flower_trimmed": peers.flower_trimmed_mean,
    # the bound: every payload's bytes hashed once, on as many threads as tw.aggregate
    "blake3": lambda p, w: {
        "digests": np.frombuffer(
            b"".join(blake3.blake3(x, max_threads=blake3.blake3.AUTO).digest() for x in p),
            np.uint8,
        )
    },
}

#: The FedAvg methods compared, in the order they run: name -> what it is.
METHODS = {
    "numpy": "numpy loop over `tw.decode`d updates",
    "tensorwire": "`tw.aggregate`",
    "flower_fedavg": "Flower FedAvg (`aggregate_arrayrecords`, np.save Arrays)",
    "flower_legacy": "Flower legacy FedAvg (`aggregate_inplace`, np.save Parameters)",
}

#: The robust aggregators compared: label -> (tensorwire's run, Flower's run, what it is).
ROBUST = {
    "median": ("tw_median", "flower_median", "FedMedian (`aggregate_median`)"),
    "trimmed_mean:0.1": (
        "tw_trimmed",
        "flower_trimmed",
        "FedTrimmedAvg(beta=0.1) (`aggregate_trimmed_avg`)",
    ),
}


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run of this part."""

    hidden: int  # batch and robust aggregation
    updates: int
    repeat: int  # runs per batch method (best kept)
    stream_hidden: int
    round_hidden: int
    clients: int


def sizes(scale: float, smoke: bool) -> Sizes:
    """Sizes at ``scale`` (hidden sizes shrink by ``sqrt(scale)``, multiples of 32)."""

    def at(hidden: int) -> int:
        return 16 if smoke else max(32, int(hidden * scale**0.5) // 32 * 32)

    return Sizes(
        hidden=at(HIDDEN),
        updates=3 if smoke else UPDATES,
        repeat=1 if smoke else 2,
        stream_hidden=at(STREAM_HIDDEN),
        round_hidden=at(ROUND_HIDDEN),
        clients=2 if smoke else CLIENTS,
    )


# -- the inputs ----------------------------------------------------------------------------
def model(hidden: int) -> tuple[Tensors, Tensors]:
    """The global model at ``hidden`` and the direction its updates move in."""
    base = bert.weights(bert.shapes_at_hidden(hidden))
    return base, bert.normal_like(base, 0.02, np.random.default_rng(1))


def update_weights(n: int) -> list[float]:
    """Unequal FedAvg weights (sample counts) for ``n`` updates."""
    return [float(i % 7 + 1) for i in range(n)]


def make_update(base: Tensors, direction: Tensors, i: int, out: Tensors) -> Tensors:
    """Update ``i``, ``base + 0.05 * (i + 1) * direction``, written into ``out``."""
    for k, v in out.items():
        np.multiply(direction[k], 0.05 * (i + 1), out=v)
        v += base[k]
    return out


def write_updates(base: Tensors, direction: Tensors, n: int, codec: str, folder: str) -> list[str]:
    """Save ``n`` updates encoded with ``codec``; return the paths."""
    buf = {k: np.empty_like(v) for k, v in base.items()}
    paths = []
    for i in range(n):
        p = Path(folder) / f"u{i}.twr"
        tw.save(make_update(base, direction, i, buf), p, codec=codec)
        paths.append(str(p))
    return paths


def write_flower_updates(base: Tensors, direction: Tensors, n: int, folder: str) -> list[str]:
    """The same ``n`` updates as Flower sends them (``np.save`` per array): one file of
    the concatenated bytes per update, its index (name, dtype, shape, length) beside it."""
    buf = {k: np.empty_like(v) for k, v in base.items()}
    paths = []
    for i in range(n):
        update = make_update(base, direction, i, buf)
        blobs = peers.npsave_encode(update)
        p = Path(folder) / f"u{i}.flwr"
        p.write_bytes(b"".join(blobs))
        index = [
            [k, str(v.dtype), list(v.shape), len(b)] for (k, v), b in zip(update.items(), blobs)
        ]
        Path(str(p) + ".json").write_text(json.dumps(index))
        paths.append(str(p))
        del blobs
    return paths


def read_flower_update(path: str) -> dict[str, Any]:
    """One file of :func:`write_flower_updates` as Flower holds it: ``{name: Array}``."""
    from flwr.common import Array

    blob = Path(path).read_bytes()
    out, pos = {}, 0
    for name, dtype, shape, n in json.loads(Path(path + ".json").read_text()):
        out[name] = Array(
            dtype=dtype, shape=tuple(shape), stype="numpy.ndarray", data=blob[pos : pos + n]
        )
        pos += n
    return out


# -- what a child process shares -----------------------------------------------------------
def warm_up_tensorwire() -> None:
    """Start what tensorwire starts once (its thread pool, allocator arenas), so that a
    peak measured afterwards is the aggregation's own."""
    warm = [tw.encode({"w": np.ones(4096, np.float32)}, metadata=i) for i in range(2)]
    tw.aggregate(warm)
    tw.decode(warm[0])


def checksum(result: Tensors) -> float:
    """The sum of every value of an aggregate, in float64: two methods must agree on it."""
    return float(sum(float(np.asarray(v).astype(np.float64).sum()) for v in result.values()))


def _run_child(script: str, *args: str) -> dict:
    r = subprocess.run(
        [sys.executable, str(CHILDREN / script), *args], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(f"{script} {args[0]} failed in its subprocess: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def _same_checksum(a: dict, b: dict) -> bool:
    return abs(a["checksum"] - b["checksum"]) <= 1e-4 * max(1.0, abs(b["checksum"]))


# -- the reference every result is checked against -----------------------------------------
def numpy_reference(payloads: list[bytes], weights: list[float]) -> Tensors:
    """FedAvg in float64: decode each update, accumulate, divide."""
    acc: Tensors = {}
    for p, w in zip(payloads, weights):
        for k, v in tw.decode(p).items():
            acc.setdefault(k, np.zeros(v.shape, np.float64))
            acc[k] += w * v.astype(np.float64)
    total = sum(weights)
    return {k: v / total for k, v in acc.items()}


def check_matches_numpy(paths: list[str], weights: list[float]) -> float:
    """Raise AssertionError unless ``tw.aggregate`` equals the numpy reference (float32
    tolerance) over these payload files; return the largest absolute difference."""
    payloads = [Path(p).read_bytes() for p in paths]
    ref = numpy_reference(payloads, weights)
    got = tw.aggregate(payloads, weights)
    assert set(got) == set(ref), f"tw.aggregate returned tensors {sorted(got)[:3]}..."
    worst = 0.0
    for k, r in ref.items():
        g = np.asarray(got[k])
        assert g.shape == r.shape, f"{k}: shape {g.shape} != {r.shape}"
        scale = max(1.0, float(np.abs(r).max()))
        diff = float(np.abs(g.astype(np.float64) - r).max())
        assert diff <= 1e-5 * scale, f"tw.aggregate differs from numpy on {k!r} by {diff:.3g}"
        worst = max(worst, diff)
    return worst


# -- the measurements ----------------------------------------------------------------------
@contextmanager
def _round_on_disk(
    base: Tensors, direction: Tensors, updates: int
) -> Iterator[tuple[str, list[str]]]:
    """A temporary folder holding Flower's payloads of the round; yields (folder, their
    paths). Each codec's payloads are written into the folder by the caller."""
    with tempfile.TemporaryDirectory(prefix="tw-bench-round-") as tmp:
        flower_dir = Path(tmp) / "flower"
        flower_dir.mkdir()
        yield tmp, write_flower_updates(base, direction, updates, str(flower_dir))


def _run_batch(
    method: str, paths: list[str], weights: list[float], repeat: int, flower_paths: list[str]
) -> dict:
    """Run one of :data:`RUNS` over these payload files in its own subprocess."""
    listing = Path(paths[0]).parent / "listing.json"
    listing.write_text(
        json.dumps({"paths": paths, "flower_paths": flower_paths, "weights": weights})
    )
    return _run_child("aggregate.py", method, str(listing), str(repeat))


def compare(hidden: int, updates: int, codecs: list[str], repeat: int) -> dict:
    """``tw.aggregate`` against the numpy loop and Flower's two FedAvg aggregations.

    Each codec's row: payload MB, every method's best seconds and peak-RSS growth,
    ``speedup`` (numpy / tw time), ``memory_ratio`` (tw / numpy peak growth), the same
    against each Flower method (``vs``), and the largest difference of tw.aggregate
    against the float64 numpy reference on the first updates (an AssertionError when
    beyond float32 tolerance). Flower's methods read Flower's own payloads, which do not
    depend on the tensorwire codec: they run once and appear in every row.
    """
    base, direction = model(hidden)
    model_bytes = sum(v.nbytes for v in base.values())
    weights = update_weights(updates)
    results: dict = {
        "tensors": len(base),
        "hidden": hidden,
        "model_mb": model_bytes / 1e6,
        "updates": updates,
        "methods": METHODS,
        "runs": [],
    }
    with _round_on_disk(base, direction, updates) as (tmp, flower_paths):
        flower: dict = {}
        for codec in codecs:
            paths = write_updates(base, direction, updates, codec, tmp)
            row: dict = {
                "codec": codec,
                "payload_mb": sum(Path(p).stat().st_size for p in paths) / 1e6,
            }
            k = min(updates, 4)
            row["max_abs_diff"] = check_matches_numpy(paths[:k], weights[:k])
            for method in METHODS:
                if method.startswith("flower") and method in flower:
                    row[method] = flower[method]
                    continue
                row[method] = _run_batch(method, paths, weights, repeat, flower_paths)
                if method.startswith("flower"):
                    flower[method] = row[method]
            t = row["tensorwire"]
            row["blake3"] = _run_batch("blake3", paths, weights, repeat, flower_paths)
            for method in METHODS:
                m = row[method]
                assert _same_checksum(m, t), (
                    f"{codec}: checksums differ: {method} {m['checksum']}, tw {t['checksum']}"
                )
            row["vs"] = {
                method: {
                    "speedup": row[method]["seconds"] / t["seconds"],
                    "memory_ratio": t["peak_growth"] / max(1, row[method]["peak_growth"]),
                    "peak_models": row[method]["peak_growth"] / model_bytes,
                }
                for method in METHODS
                if method != "tensorwire"
            }
            row["speedup"] = row["vs"]["numpy"]["speedup"]
            row["memory_ratio"] = row["vs"]["numpy"]["memory_ratio"]
            row["numpy_peak_models"] = row["vs"]["numpy"]["peak_models"]
            row["tensorwire_peak_models"] = t["peak_growth"] / model_bytes
            results["runs"].append(row)
            for p in paths:
                Path(p).unlink()
    return results


def compare_robust(hidden: int, updates: int, codecs: list[str], repeat: int) -> dict:
    """``tw.aggregate(..., method="median" | "trimmed_mean:0.1")`` against Flower's
    FedMedian and FedTrimmedAvg (on Flower's own payloads), each in its own subprocess:
    seconds, peak-RSS growth, and the ratios. Flower's results must equal tw's."""
    base, direction = model(hidden)
    model_bytes = sum(v.nbytes for v in base.values())
    weights = [1.0] * updates
    out: dict = {"hidden": hidden, "model_mb": model_bytes / 1e6, "updates": updates, "runs": []}
    with _round_on_disk(base, direction, updates) as (tmp, flower_paths):
        flower: dict = {}
        for codec in codecs:
            paths = write_updates(base, direction, updates, codec, tmp)
            for label, (ours, theirs, what) in ROBUST.items():
                if label not in flower:
                    flower[label] = _run_batch(theirs, paths, weights, repeat, flower_paths)
                t = _run_batch(ours, paths, weights, repeat, flower_paths)
                f = flower[label]
                assert _same_checksum(f, t), (
                    f"{label}: Flower {f['checksum']} != tw {t['checksum']}"
                )
                out["runs"].append(
                    {
                        "codec": codec,
                        "method": label,
                        "flower": what,
                        "tensorwire": t,
                        "flower_run": f,
                        "speedup": f["seconds"] / t["seconds"],
                        "memory_ratio": t["peak_growth"] / max(1, f["peak_growth"]),
                        "tw_peak_models": t["peak_growth"] / model_bytes,
                        "flower_peak_models": f["peak_growth"] / model_bytes,
                    }
                )
            for p in paths:
                Path(p).unlink()
    return out


def compare_stream(hidden: int, updates: int, codecs: list[str]) -> dict:
    """A server receiving ``updates`` updates one at a time: ``tw.Aggregator`` (``add``
    per update) against the numpy loop, each in its own subprocess.

    Each update is made and encoded in the child just before it is added (untimed), so
    only one payload is ever in memory and full-size models fit; time is the sum of the
    ``add`` calls and the final ``result``; peak growth is over the RSS with the first
    payload in flight (reset before every ``add``).
    """
    model_bytes = sum(int(np.prod(s)) * 4 for _, s in bert.shapes_at_hidden(hidden))
    out: dict = {"hidden": hidden, "model_mb": model_bytes / 1e6, "updates": updates, "runs": []}
    for codec in codecs:
        row: dict = {"codec": codec}
        for method in ("numpy", "tensorwire"):
            row[method] = _run_child(
                "aggregate_stream.py", method, str(hidden), str(updates), codec
            )
        n, t = row["numpy"], row["tensorwire"]
        assert _same_checksum(n, t), (
            f"{codec}: checksums differ: numpy {n['checksum']}, tw {t['checksum']}"
        )
        row["speedup"] = n["seconds"] / t["seconds"]
        row["memory_ratio"] = t["peak_growth"] / max(1, n["peak_growth"])
        row["numpy_peak_models"] = n["peak_growth"] / model_bytes
        row["tensorwire_peak_models"] = t["peak_growth"] / model_bytes
        out["runs"].append(row)
    return out


def npsave_bytes(tensors: Tensors) -> int:
    """Bytes of Flower's default serialization (one ``np.save`` per array)."""
    return sum(len(b) for b in peers.npsave_encode(tensors))


def round_bytes(hidden: int, clients: int, lossless: str, lossy: str) -> dict:
    """Bytes of one simulated round: the global model down to ``clients`` clients and their
    updates up (new = old + N(0, 1e-3)), tensorwire against Flower's default.

    Flower sends the global model and each client's full model as ``np.save`` per array.
    tensorwire sends the global model encoded with ``lossless`` and each update with
    :func:`tensorwire.encode_update` (``lossless``, then ``lossy``). Each lossy update is
    checked: aggregating it against the global model must stay within the codec's error of
    the client's model (a top-k delta keeps the largest 1% of the changes).
    """
    old = bert.weights(bert.shapes_at_hidden(hidden))
    rng = np.random.default_rng(7)
    down_flower = npsave_bytes(old)
    down_tw = len(tw.encode(old, codec=lossless))
    up_flower = 0
    up = {lossless: 0, lossy: 0}
    for c in range(clients):
        step = bert.normal_like(old, 1e-3, rng)
        new = {k: v + step.pop(k) for k, v in old.items()}
        up_flower += npsave_bytes(new)
        for codec in (lossless, lossy):
            payload = tw.encode_update(old, new, codec=codec, round=1, client_id=str(c))
            up[codec] += len(payload)
            if c == 0:
                back = tw.aggregate([payload], base=old)
                for k, v in new.items():
                    err = float(np.abs(np.asarray(back[k]) - v).max())
                    bound = 1e-6 if codec == lossless else 2 * float(np.abs(v - old[k]).max())
                    assert err <= bound + 1e-6, f"{codec}: {k!r} off by {err:.3g}"
        del new
    flower = down_flower * clients + up_flower
    out: dict = {
        "hidden": hidden,
        "model_mb": sum(v.nbytes for v in old.values()) / 1e6,
        "clients": clients,
        "flower_bytes": flower,
        "codecs": {},
    }
    for codec in (lossless, lossy):
        total = down_tw * clients + up[codec]
        out["codecs"][codec] = {
            "down_bytes": down_tw * clients,
            "up_bytes": up[codec],
            "total_bytes": total,
            "ratio": total / flower,
            "up_ratio": up[codec] / up_flower,
        }
    return out
