"""FedAvg of N updates of a BERT-base-shaped model: tw.aggregate vs a numpy loop and Flower.

The numpy loop is what a server writes by hand: ``tw.decode`` each update, then
``acc[k] += w * update[k]`` per tensor, then divide. Flower's own aggregations are run on
Flower's own payloads (``np.save`` per array): ``aggregate_arrayrecords`` (what
``flwr.serverapp.strategy.FedAvg`` calls) and ``aggregate_inplace`` (the legacy
``flwr.server.strategy.FedAvg`` default). Each method runs in its own
subprocess (so peak RSS is its own) over the same payloads, read from files into memory
before the clock starts; reported: best wall time of ``--repeat`` runs and the growth of
peak RSS over the RSS with the payloads loaded, as ratios tw / numpy.

    python benches/bench_aggregate.py --hidden 768 --updates 50     # full BERT-base
    python benches/bench_aggregate.py --hidden 384 --updates 50     # 1/4 size

``benches/bench.py`` calls :func:`compare` and :func:`round_bytes` (bytes of a simulated
round against Flower's ``np.save`` per array) for the report's federated section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers

import tensorwire as tw


def bert_shaped(hidden: int, seed: int = 0) -> dict[str, np.ndarray]:
    """199 float32 tensors named and shaped like BERT-base's (438 MB at hidden=768)."""
    vocab = 30522 * hidden // 768
    inter = 4 * hidden
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (512, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    for i in range(12):
        p = f"encoder.layer.{i}."
        for m in ("query", "key", "value"):
            shapes[p + f"attention.self.{m}.weight"] = (hidden, hidden)
            shapes[p + f"attention.self.{m}.bias"] = (hidden,)
        shapes[p + "attention.output.dense.weight"] = (hidden, hidden)
        shapes[p + "attention.output.dense.bias"] = (hidden,)
        shapes[p + "attention.output.LayerNorm.weight"] = (hidden,)
        shapes[p + "attention.output.LayerNorm.bias"] = (hidden,)
        shapes[p + "intermediate.dense.weight"] = (inter, hidden)
        shapes[p + "intermediate.dense.bias"] = (inter,)
        shapes[p + "output.dense.weight"] = (hidden, inter)
        shapes[p + "output.dense.bias"] = (hidden,)
        shapes[p + "output.LayerNorm.weight"] = (hidden,)
        shapes[p + "output.LayerNorm.bias"] = (hidden,)
    shapes["pooler.dense.weight"] = (hidden, hidden)
    shapes["pooler.dense.bias"] = (hidden,)
    rng = np.random.default_rng(seed)
    return {k: (0.02 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}


CHILD = r"""
import json, sys, time
import numpy as np
import tensorwire as tw

method, listing, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = json.loads(open(listing).read())
weights = spec["weights"]

if method.startswith("flower"):
    # Flower's wire state: one np.save'd Array per tensor, as ArrayRecord holds them.
    from flwr.common import Array, ArrayRecord, MetricRecord, RecordDict

    def flower_arrays(path):
        blob = open(path, "rb").read()
        out, pos = {}, 0
        for name, dtype, shape, n in json.loads(open(path + ".json").read()):
            out[name] = Array(dtype=dtype, shape=tuple(shape), stype="numpy.ndarray",
                              data=blob[pos:pos + n])
            pos += n
        return out

    payloads = [flower_arrays(p) for p in spec["flower_paths"]]
else:
    payloads = [open(p, "rb").read() for p in spec["paths"]]
# Warm up what each method imports or starts once (Flower's modules, tensorwire's
# thread pool and allocator arenas), so the peak below is the aggregation's own.
warm = [tw.encode({"w": np.ones(4096, np.float32)}, metadata=i) for i in range(2)]
tw.aggregate(warm); tw.decode(warm[0])
if method.startswith("flower"):
    from flwr.common import Code, FitRes, Parameters, Status
    from flwr.server.strategy.aggregate import (
        aggregate_inplace, aggregate_median, aggregate_trimmed_avg,
    )
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
del warm

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

# The kernel's resident high-water mark, reset here (Linux): loading the payloads can
# briefly hold more than it keeps, and that is not the aggregation's memory.
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")

def numpy_loop():
    acc = None
    for p, w in zip(payloads, weights):
        update = tw.decode(p)
        if acc is None:
            acc = {k: np.zeros(v.shape, np.float32) for k, v in update.items()}
        for k, v in update.items():
            acc[k] += w * v
        del update
    total = sum(weights)
    for v in acc.values():
        v /= total
    return acc

def tensorwire():
    return tw.aggregate(payloads, weights)

def flower_fedavg():
    # flwr.serverapp.strategy.FedAvg's aggregation (Flower's message API)
    records = [
        RecordDict({"arrays": ArrayRecord(p), "metrics": MetricRecord({"n": int(w)})})
        for p, w in zip(payloads, weights)
    ]
    out = aggregate_arrayrecords(records, "n")
    return {k: v.numpy() for k, v in out.items()}

def flower_legacy():
    # flwr.server.strategy.FedAvg(inplace=True), the legacy default: aggregate_inplace
    results = [
        (None, FitRes(Status(Code.OK, ""), Parameters([a.data for a in p.values()],
                      "numpy.ndarray"), int(w), {}))
        for p, w in zip(payloads, weights)
    ]
    return dict(zip(payloads[0], aggregate_inplace(results)))

def tw_median():
    return tw.aggregate(payloads, method="median")

def tw_trimmed():
    return tw.aggregate(payloads, method="trimmed_mean:0.1")

def flower_robust(combine):
    # Flower's FedMedian / FedTrimmedAvg: every update decoded, then each layer stacked
    names = list(payloads[0])
    results = [([a.numpy() for a in p.values()], 1) for p in payloads]
    return dict(zip(names, combine(results)))

run = {"numpy": numpy_loop, "tensorwire": tensorwire, "flower_fedavg": flower_fedavg,
       "flower_legacy": flower_legacy, "tw_median": tw_median, "tw_trimmed": tw_trimmed,
       "flower_median": lambda: flower_robust(aggregate_median),
       "flower_trimmed": lambda: flower_robust(lambda r: aggregate_trimmed_avg(r, 0.1)),
       }[method]
best, out = float("inf"), None
for _ in range(repeat):
    out = None
    t = time.perf_counter()
    out = run()
    best = min(best, time.perf_counter() - t)
peak = status("VmHWM")
check = float(sum(float(np.asarray(v).astype(np.float64).sum()) for v in out.values()))
print(json.dumps({"seconds": best, "peak_growth": peak - before, "checksum": check}))
"""

#: The methods compared, in the order they run: label -> what it is.
METHODS = {
    "numpy": "numpy loop over `tw.decode`d updates",
    "tensorwire": "`tw.aggregate`",
    "flower_fedavg": "Flower FedAvg (`aggregate_arrayrecords`, np.save Arrays)",
    "flower_legacy": "Flower legacy FedAvg (`aggregate_inplace`, np.save Parameters)",
}


#: The robust aggregators compared: label -> (tensorwire's method, Flower's strategy).
ROBUST = {
    "median": ("tw_median", "flower_median", "FedMedian (`aggregate_median`)"),
    "trimmed_mean:0.1": (
        "tw_trimmed",
        "flower_trimmed",
        "FedTrimmedAvg(beta=0.1) (`aggregate_trimmed_avg`)",
    ),
}


STREAM_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[5])
import tensorwire as tw
from bench_aggregate import bert_shaped, update_weights

method, hidden, updates, codec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base, noise = bert_shaped(hidden), bert_shaped(hidden, seed=1)
buf = {k: np.empty_like(v) for k, v in base.items()}
weights = update_weights(updates)
warm = [tw.encode({"w": np.ones(4096, np.float32)}, metadata=i) for i in range(2)]
tw.aggregate(warm); tw.decode(warm[0]); del warm

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

class NumpyLoop:
    def __init__(self):
        self.acc, self.total = None, 0.0
    def add(self, payload, w):
        update = tw.decode(payload)
        if self.acc is None:
            self.acc = {k: np.zeros(v.shape, np.float32) for k, v in update.items()}
        for k, v in update.items():
            self.acc[k] += w * v
        self.total += w
    def result(self):
        for v in self.acc.values():
            v /= self.total
        return self.acc

agg = tw.Aggregator() if method == "tensorwire" else NumpyLoop()
seconds, peak, before = 0.0, 0, None
for i, w in enumerate(weights):
    # the update a client sends, made in place (untimed)
    for k, v in buf.items():
        np.multiply(noise[k], 0.05 * (i + 1), out=v)
        v += base[k]
    payload = tw.encode(buf, codec=codec)
    if before is None:
        before = status("VmRSS")  # one payload in flight: what both methods start from
    open("/proc/self/clear_refs", "w").write("5")
    t = time.perf_counter()
    agg.add(payload, w)
    seconds += time.perf_counter() - t
    peak = max(peak, status("VmHWM"))
    del payload
t = time.perf_counter()
out = agg.result()
seconds += time.perf_counter() - t
peak = max(peak, status("VmHWM"))
check = float(sum(float(np.asarray(v).astype(np.float64).sum()) for v in out.values()))
print(json.dumps({"seconds": seconds, "peak_growth": peak - before, "checksum": check}))
"""


def compare_stream(hidden: int, updates: int, codecs: list[str]) -> dict:
    """A server receiving ``updates`` BERT-shaped updates one at a time: ``tw.Aggregator``
    (``add`` per update) against the numpy loop, each in its own subprocess.

    Each update is made and encoded in the child just before it is added (untimed), so
    only one payload is ever in memory and full-size models fit; time is the sum of the
    ``add`` calls and the final ``result``; peak growth is over the RSS with the first
    payload in flight (reset before every ``add``).
    """
    model_bytes = sum(v.nbytes for v in bert_shaped(hidden).values())
    out: dict = {"hidden": hidden, "model_mb": model_bytes / 1e6, "updates": updates, "runs": []}
    here = os.path.dirname(os.path.abspath(__file__))
    for codec in codecs:
        row: dict = {"codec": codec}
        for method in ("numpy", "tensorwire"):
            args = [method, str(hidden), str(updates), codec, here]
            r = subprocess.run(
                [sys.executable, "-c", STREAM_CHILD, *args],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                raise RuntimeError(f"{method} streaming subprocess failed: {r.stderr[-2000:]}")
            row[method] = json.loads(r.stdout)
        n, t = row["numpy"], row["tensorwire"]
        assert abs(n["checksum"] - t["checksum"]) <= 1e-4 * max(1.0, abs(n["checksum"])), (
            f"{codec}: checksums differ: numpy {n['checksum']}, tw {t['checksum']}"
        )
        row["speedup"] = n["seconds"] / t["seconds"]
        row["memory_ratio"] = t["peak_growth"] / max(1, n["peak_growth"])
        row["numpy_peak_models"] = n["peak_growth"] / model_bytes
        row["tensorwire_peak_models"] = t["peak_growth"] / model_bytes
        out["runs"].append(row)
    return out


def update_weights(n: int) -> list[float]:
    """Unequal FedAvg weights (sample counts) for ``n`` updates."""
    return [float(i % 7 + 1) for i in range(n)]


def numpy_reference(payloads: list[bytes], weights: list[float]) -> dict[str, np.ndarray]:
    """FedAvg as a server writes it today: decode each update, accumulate in float64."""
    acc: dict[str, np.ndarray] = {}
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


def write_updates(
    base: dict[str, np.ndarray],
    noise: dict[str, np.ndarray],
    n: int,
    codec: str,
    directory: str,
) -> list[str]:
    """Save ``n`` updates ``base + c_i * noise`` encoded with ``codec``; return the paths."""
    paths = []
    for i in range(n):
        update = {k: v + (0.05 * (i + 1)) * noise[k] for k, v in base.items()}
        p = Path(directory) / f"u{i}.twr"
        tw.save(update, p, codec=codec)
        paths.append(str(p))
        del update
    return paths


def write_flower_updates(
    base: dict[str, np.ndarray], noise: dict[str, np.ndarray], n: int, directory: str
) -> list[str]:
    """The same ``n`` updates as Flower sends them (``np.save`` per array): one file of
    the concatenated bytes per update, its index (name, dtype, shape, length) beside it."""
    paths = []
    for i in range(n):
        update = {k: v + (0.05 * (i + 1)) * noise[k] for k, v in base.items()}
        blobs = peers.npsave_encode(update)
        p = Path(directory) / f"u{i}.flwr"
        p.write_bytes(b"".join(blobs))
        index = [
            [k, str(v.dtype), list(v.shape), len(b)] for (k, v), b in zip(update.items(), blobs)
        ]
        Path(str(p) + ".json").write_text(json.dumps(index))
        paths.append(str(p))
        del update, blobs
    return paths


def run_method(
    method: str, paths: list[str], weights: list[float], repeat: int, flower_paths: list[str]
) -> dict:
    """Run one of :data:`METHODS` in its own subprocess (own peak RSS)."""
    listing = Path(paths[0]).parent / "listing.json"
    listing.write_text(
        json.dumps({"paths": paths, "flower_paths": flower_paths, "weights": weights})
    )
    r = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(listing), str(repeat)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{method} aggregation subprocess failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def compare(hidden: int, updates: int, codecs: list[str], repeat: int) -> dict:
    """tw.aggregate against the numpy loop and Flower's two FedAvg aggregations over
    ``updates`` BERT-shaped updates.

    Each codec's row: payload MB, every method's best seconds and peak-RSS growth,
    ``speedup`` (numpy / tw time), ``memory_ratio`` (tw / numpy peak growth), the same
    against each Flower method (``vs``), and the largest difference of tw.aggregate
    against the float64 numpy reference on the first updates (an AssertionError when
    beyond float32 tolerance). Flower's methods read Flower's own payloads (np.save per
    array), which do not depend on the tensorwire codec: they run once and appear in
    every row.
    """
    base = bert_shaped(hidden)
    model_bytes = sum(v.nbytes for v in base.values())
    noise = bert_shaped(hidden, seed=1)
    weights = update_weights(updates)
    results: dict = {
        "tensors": len(base),
        "hidden": hidden,
        "model_mb": model_bytes / 1e6,
        "updates": updates,
        "methods": METHODS,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="tw-bench-agg-") as tmp:
        flower_dir = Path(tmp) / "flower"
        flower_dir.mkdir()
        flower_paths = write_flower_updates(base, noise, updates, str(flower_dir))
        flower: dict = {}
        for codec in codecs:
            paths = write_updates(base, noise, updates, codec, tmp)
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
                row[method] = run_method(method, paths, weights, repeat, flower_paths)
                if method.startswith("flower"):
                    flower[method] = row[method]
            t = row["tensorwire"]
            for method in METHODS:
                m = row[method]
                assert abs(m["checksum"] - t["checksum"]) <= 1e-4 * max(1.0, abs(t["checksum"])), (
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
    FedMedian and FedTrimmedAvg aggregations (on Flower's own payloads, np.save per
    array) over ``updates`` BERT-shaped updates, each in its own subprocess: seconds,
    peak-RSS growth, and the ratios. Flower's results must equal tw's (checksums)."""
    base = bert_shaped(hidden)
    model_bytes = sum(v.nbytes for v in base.values())
    noise = bert_shaped(hidden, seed=1)
    weights = [1.0] * updates
    out: dict = {"hidden": hidden, "model_mb": model_bytes / 1e6, "updates": updates, "runs": []}
    with tempfile.TemporaryDirectory(prefix="tw-bench-robust-") as tmp:
        flower_dir = Path(tmp) / "flower"
        flower_dir.mkdir()
        flower_paths = write_flower_updates(base, noise, updates, str(flower_dir))
        flower: dict = {}
        for codec in codecs:
            paths = write_updates(base, noise, updates, codec, tmp)
            for label, (ours, theirs, what) in ROBUST.items():
                if label not in flower:
                    flower[label] = run_method(theirs, paths, weights, repeat, flower_paths)
                t = run_method(ours, paths, weights, repeat, flower_paths)
                f = flower[label]
                assert abs(f["checksum"] - t["checksum"]) <= 1e-4 * max(1.0, abs(t["checksum"])), (
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


def npsave_bytes(tensors: dict[str, np.ndarray]) -> int:
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
    old = bert_shaped(hidden)
    rng = np.random.default_rng(7)
    down_flower = npsave_bytes(old)
    down_tw = len(tw.encode(old, codec=lossless))
    up_flower = 0
    up = {lossless: 0, lossy: 0}
    for c in range(clients):
        new = {
            k: v + (1e-3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in old.items()
        }
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--codecs", default="raw,shuffle+zstd")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument(
        "--stream",
        action="store_true",
        help="updates made one at a time, tw.Aggregator vs the numpy loop (full size fits)",
    )
    args = ap.parse_args()
    if args.stream:
        st = compare_stream(args.hidden, args.updates, args.codecs.split(","))
        for row in st["runs"]:
            print(
                f"{row['codec']}: numpy {row['numpy']['seconds']:.2f} s, tensorwire "
                f"{row['tensorwire']['seconds']:.2f} s ({row['speedup']:.2f}x); peak growth "
                f"numpy {row['numpy_peak_models']:.2f} models, tw "
                f"{row['tensorwire_peak_models']:.2f} (ratio {row['memory_ratio']:.2f})",
                flush=True,
            )
        print(json.dumps(st, indent=1))
        return
    results = compare(args.hidden, args.updates, args.codecs.split(","), args.repeat)
    for row in results["runs"]:
        t = row["tensorwire"]
        print(
            f"{row['codec']}: tensorwire {t['seconds']:.2f} s, peak growth "
            f"{row['tensorwire_peak_models']:.2f} models",
            flush=True,
        )
        for method, v in row["vs"].items():
            print(
                f"  vs {METHODS[method]}: {row[method]['seconds']:.2f} s "
                f"(tw {v['speedup']:.1f}x faster), peak {v['peak_models']:.2f} models "
                f"(tw / it {v['memory_ratio']:.2f})",
                flush=True,
            )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
