"""One aggregation over a round's payload files, in a process of its own.

    python benches/children/aggregate.py METHOD LISTING REPEAT

METHOD is a key of ``aggregation.RUNS``; LISTING is a JSON file naming the payload files
(tensorwire's ``paths``, Flower's ``flower_paths``) and the ``weights``. The payloads are
read into memory before the clock starts. Prints one JSON object: the best ``seconds`` of
REPEAT runs, ``peak_growth`` (the kernel's resident high-water mark, reset after loading,
over the RSS with the payloads loaded) and the result's ``checksum``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aggregation
import measure
import peers


def main(argv: list[str]) -> None:
    method, listing, repeat = argv[0], json.loads(Path(argv[1]).read_text()), int(argv[2])
    run = aggregation.RUNS[method]
    weights = listing["weights"]
    if method.startswith("flower"):
        payloads = [aggregation.read_flower_update(p) for p in listing["flower_paths"]]
    else:
        payloads = [Path(p).read_bytes() for p in listing["paths"]]
    # what each method imports or starts once is not the aggregation's memory
    aggregation.warm_up_tensorwire()
    if method.startswith("flower"):
        peers.import_flower()
    # loading the payloads can briefly hold more than it keeps: reset the peak here
    measure.reset_peak_rss()
    before = measure.status_bytes("VmRSS")
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None
        t = time.perf_counter()
        out = run(payloads, weights)
        best = min(best, time.perf_counter() - t)
    peak = measure.status_bytes("VmHWM")
    assert out is not None and peak is not None and before is not None
    result = {"seconds": best, "peak_growth": peak - before, "checksum": aggregation.checksum(out)}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
