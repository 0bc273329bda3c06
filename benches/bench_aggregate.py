"""FedAvg of N updates of a BERT-base-shaped model: tw.aggregate vs a numpy loop.

The numpy loop is what a server writes today: ``tw.decode`` each update, then
``acc[k] += w * update[k]`` per tensor, then divide. Each method runs in its own
subprocess (so peak RSS is its own) over the same payloads, read from files into memory
before the clock starts; reported: best wall time of ``--repeat`` runs and the growth of
peak RSS over the RSS with the payloads loaded, as ratios tw / numpy.

    python benches/bench_aggregate.py --hidden 768 --updates 50     # full BERT-base
    python benches/bench_aggregate.py --hidden 384 --updates 50     # 1/4 size
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

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
import json, resource, sys, time
import numpy as np
import tensorwire as tw

method, listing, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
paths = json.loads(open(listing).read())
payloads = [open(p, "rb").read() for p in paths]
weights = [float(i % 7 + 1) for i in range(len(payloads))]
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()

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

run = {"numpy": numpy_loop, "tensorwire": tensorwire}[method]
best, out = float("inf"), None
for _ in range(repeat):
    out = None
    t = time.perf_counter()
    out = run()
    best = min(best, time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
check = float(sum(float(v.astype(np.float64).sum()) for v in out.values()))
print(json.dumps({"seconds": best, "peak_growth": peak - before, "checksum": check}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--codecs", default="raw,shuffle+zstd")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    base = bert_shaped(args.hidden)
    model_bytes = sum(v.nbytes for v in base.values())
    noise = bert_shaped(args.hidden, seed=1)
    results = {
        "tensors": len(base),
        "model_mb": model_bytes / 1e6,
        "updates": args.updates,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="tw-bench-agg-") as tmp:
        for codec in args.codecs.split(","):
            paths = []
            for i in range(args.updates):
                update = {k: v + (0.05 * (i + 1)) * noise[k] for k, v in base.items()}
                p = Path(tmp) / f"u{i}.twr"
                tw.save(update, p, codec=codec)
                paths.append(str(p))
                del update
            listing = Path(tmp) / "paths.json"
            listing.write_text(json.dumps(paths))
            row = {"codec": codec, "payload_mb": sum(Path(p).stat().st_size for p in paths) / 1e6}
            for method in ("numpy", "tensorwire"):
                r = subprocess.run(
                    [sys.executable, "-c", CHILD, method, str(listing), str(args.repeat)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row[method] = json.loads(r.stdout)
            n, t = row["numpy"], row["tensorwire"]
            assert abs(n["checksum"] - t["checksum"]) <= 1e-4 * max(1.0, abs(n["checksum"]))
            row["speedup"] = n["seconds"] / t["seconds"]
            row["memory_ratio"] = t["peak_growth"] / n["peak_growth"]
            row["numpy_peak_models"] = n["peak_growth"] / model_bytes
            row["tensorwire_peak_models"] = t["peak_growth"] / model_bytes
            results["runs"].append(row)
            print(
                f"{codec:>14}: numpy {n['seconds']:.2f}s, tensorwire {t['seconds']:.2f}s "
                f"({row['speedup']:.1f}x); peak growth numpy {row['numpy_peak_models']:.2f} "
                f"models, tensorwire {row['tensorwire_peak_models']:.2f} models "
                f"(ratio {row['memory_ratio']:.2f})",
                flush=True,
            )
            for p in paths:
                Path(p).unlink()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
