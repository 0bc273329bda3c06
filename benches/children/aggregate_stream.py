"""A server receiving a round's updates one at a time, in a process of its own.

    python benches/children/aggregate_stream.py METHOD HIDDEN UPDATES CODEC

METHOD is ``tensorwire`` (``tw.Aggregator``) or ``numpy`` (``peers.NumpyFedAvg``). Each
update (``aggregation.make_update``) is made and encoded with CODEC just before it is
added, untimed, so one payload is in memory at a time. Prints one JSON object: ``seconds``
(the adds and the result), ``peak_growth`` (the resident high-water mark, reset before
every add, over the RSS with the first payload in flight) and the result's ``checksum``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aggregation
import measure
import numpy as np
import peers

import tensorwire as tw


def main(argv: list[str]) -> None:
    method, hidden, updates, codec = argv[0], int(argv[1]), int(argv[2]), argv[3]
    base, direction = aggregation.model(hidden)
    buf = {k: np.empty_like(v) for k, v in base.items()}
    aggregation.warm_up_tensorwire()
    agg = tw.Aggregator() if method == "tensorwire" else peers.NumpyFedAvg()
    seconds, peak, before = 0.0, 0, None
    for i, w in enumerate(aggregation.update_weights(updates)):
        payload = tw.encode(aggregation.make_update(base, direction, i, buf), codec=codec)
        if before is None:
            before = measure.status_bytes("VmRSS")  # one payload in flight: where both start
        measure.reset_peak_rss()
        t = time.perf_counter()
        agg.add(payload, w)
        seconds += time.perf_counter() - t
        peak = max(peak, measure.status_bytes("VmHWM") or 0)
        del payload
    t = time.perf_counter()
    out = agg.result()
    seconds += time.perf_counter() - t
    peak = max(peak, measure.status_bytes("VmHWM") or 0)
    assert before is not None
    result = {
        "seconds": seconds,
        "peak_growth": peak - before,
        "checksum": aggregation.checksum(out),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
