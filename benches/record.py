"""What one run measured: a row per (workload, method), each part's figures, and their JSON.

``results.json`` beside the report holds all of it (``write_json``), and ``read_json``
gives it back, so the markdown, the goals and the plots can be produced again from it
without measuring (``bench.py --from-json``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from measure import Timing
from scaling import ScalingSeries

__all__ = ["Results", "Row", "read_json", "write_json"]


@dataclass
class Row:
    """One method on one workload."""

    workload: str
    method: str
    group: str
    raw_bytes: int
    status: str = "ok"  # "ok", "not available", "skipped", "FAILED"
    note: str = ""
    size: Optional[int] = None
    encode: Optional[Timing] = None
    decoders: dict[str, Timing] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)

    def gbps(self, op: str = "encode") -> Optional[float]:
        """GB/s of raw tensor bytes of ``op`` ("encode" or a decoder's label)."""
        t = self.encode if op == "encode" else self.decoders.get(op)
        if t is None or t.median_s <= 0:
            return None
        return self.raw_bytes / t.median_s / 1e9

    def primary_decode(self) -> Optional[str]:
        """The label of "the" decode of the method (its first decoder)."""
        return next(iter(self.decoders), None)

    @property
    def size_ratio(self) -> Optional[float]:
        return None if self.size is None or not self.raw_bytes else self.size / self.raw_bytes


@dataclass
class Results:
    """Everything one run measured."""

    args: str
    smoke: bool
    started: str
    machine: dict[str, str]
    versions: dict[str, str]
    parts: list[str] = field(default_factory=list)
    refs: dict[str, float] = field(default_factory=dict)
    refs_bytes: int = 0
    workloads: dict[str, str] = field(default_factory=dict)  # name -> description
    workload_notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    scaling_bytes: list[ScalingSeries] = field(default_factory=list)
    scaling_count: list[ScalingSeries] = field(default_factory=list)
    bytes_fit_from: float = 0.0
    count_fit_from: float = 0.0
    scaling_bytes_tensors: int = 0
    scaling_count_elements: int = 0
    chunk_figures: dict[str, float] = field(default_factory=dict)
    #: aggregation.compare(): tw.aggregate vs the numpy loop and Flower, per codec
    aggregation: dict = field(default_factory=dict)
    #: aggregation.compare_robust(): tw.aggregate(method=median|trimmed_mean) vs Flower's
    aggregation_robust: dict = field(default_factory=dict)
    #: aggregation.compare_stream(): tw.Aggregator vs the numpy loop, one update at a time
    aggregation_stream: dict = field(default_factory=dict)
    #: aggregation.round_bytes(): one simulated round, tensorwire vs Flower's default
    round_bytes: dict = field(default_factory=dict)
    #: codec_ratios.run(): per-core size and speed of the codec stages on real weights
    codec_ratios: dict = field(default_factory=dict)
    #: trust.run(): keyed and signed against plain payloads, encryption per core
    trust: dict = field(default_factory=dict)
    #: reuse.run(): encode_into a reused buffer against blake3, decode(out=) against copies
    reuse: dict = field(default_factory=dict)
    #: kafka.run(): tensorwire's Kafka transport against plain confluent-kafka
    kafka: dict = field(default_factory=dict)
    #: sharded.run(): 1 vs 2 aggregation workers on Kafka, memory per worker, the reducer
    sharded: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    note: str = ""

    def row(self, workload: str, method: str) -> Optional[Row]:
        """The measured (status "ok") row of ``method`` on ``workload``, if any."""
        for r in self.rows:
            if r.workload == workload and r.method == method and r.status == "ok":
                return r
        return None


def write_json(res: Results, path: str) -> None:
    """Every field of ``res`` as JSON (infinities as JSON's ``Infinity``)."""
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(res), f, indent=1)
        f.write("\n")


def _timing(d: Optional[dict[str, Any]]) -> Optional[Timing]:
    return None if d is None else Timing(**d)


def read_json(path: str) -> Results:
    """The :class:`Results` that :func:`write_json` wrote."""
    with open(path) as f:
        d = json.load(f)
    rows = []
    for r in d.pop("rows"):
        r["encode"] = _timing(r["encode"])
        r["decoders"] = {k: Timing(**v) for k, v in r["decoders"].items()}
        rows.append(Row(**r))
    for key in ("scaling_bytes", "scaling_count"):
        d[key] = [ScalingSeries(**s) for s in d[key]]
    return Results(rows=rows, **d)
