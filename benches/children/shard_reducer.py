"""The reducer of a sharded round merging K partial aggregates, in a process of its own.

    python benches/children/shard_reducer.py LISTING.json

LISTING.json (written by ``benches/sharded.py``) gives the model (``bert.shapes_at_scale``),
the round, the partial files in merge order, the passes to time and where to save the
result. Each pass merges every partial into a fresh ``tw.Aggregator(base=...)``, reading
each file just before its merge (untimed), so one partial is in memory at a time, then
takes ``result()``. Prints one JSON object: ``merge_seconds`` (the merges of the fastest
pass), ``result_seconds`` (its ``result()``), ``peak_growth`` (the resident high-water
mark of the first pass, reset before it, over the RSS before it: Python, numpy,
tensorwire and the base model) and ``count``; the first pass's result is saved for the
parent to check.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bert
import measure

import tensorwire as tw


def main(listing_path: str) -> None:
    spec = json.loads(Path(listing_path).read_text())
    base = bert.weights(bert.shapes_at_scale(spec["scale"]))
    best_merge = best_result = float("inf")
    peak_growth = count = 0
    for n in range(spec["passes"]):
        if n == 0:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            measure.reset_peak_rss()
            before = measure.status_bytes("VmRSS") or 0
        top = tw.Aggregator(base=base, round=spec["round"])
        merging = 0.0
        for path in spec["paths"]:
            partial = Path(path).read_bytes()
            t = time.perf_counter()
            merged = top.merge(partial)
            merging += time.perf_counter() - t
            del partial
            if not merged:
                raise RuntimeError(f"the reducer refused {path}: {top.skipped[-1:]}")
        t = time.perf_counter()
        result = top.result()
        finishing = time.perf_counter() - t
        if n == 0:
            peak_growth = max(0, (measure.status_bytes("VmHWM") or 0) - before)
            count = top.count
            tw.save(result, spec["result_path"])
        best_merge, best_result = min(best_merge, merging), min(best_result, finishing)
        del top, result
    print(json.dumps({
        "merge_seconds": best_merge,
        "result_seconds": best_result,
        "peak_growth": peak_growth,
        "count": count,
    }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
