"""A sharded round on Kafka measured: 1 against 2 aggregation workers on the same updates,
the memory each worker needs, and the reducer's cost against the number of partials.

**Workers.** ``UPDATES`` client updates of a BERT-base-shaped model (``bert.shapes_at_scale
(MODEL_SCALE)``, float32) are encoded with each codec of :data:`CODECS`
(``tw.encode_update``, sample counts 1..7 as weights) and published on one topic of
``PARTITIONS`` partitions of one tansu broker (tests/kafka_broker.py) before anything is
timed. Then, for 1 and for 2 workers (runs interleaved), a fresh consumer group of that
many worker processes (``children/shard_worker.py``) reads the topic: each worker joins
at the end of the log and waits until every partition is assigned exactly once, then
seeks its partitions to their start, adds every update there to its own
``tw.Aggregator``, publishes its partial on a partials topic (``partial_chunks``,
streamed out of the sums) and commits.
**The time of a run is from the first record any worker consumed to the moment the last
worker's partial was acknowledged by the broker**; updates/s and MB/s (the records'
bytes, and the float32 bytes of the models they stand for) divide by it. A reducer then
merges the partials; its result must equal one ``tw.aggregate`` over the same updates
within docs/federated.md's float32 bound (bit for bit where the additions are exact).

**Memory per worker**: the resident high-water mark, reset when the worker starts
aggregating, over its RSS then (Python, numpy, confluent-kafka, tensorwire, the base
model, the consumer in its group), in models (the model's float32 bytes); shown while
adding (the sums, one update in flight, librdkafka's bounded prefetch) and in all (also
the partial while it is published: one piece at a time, made from the sums).

**Reducer**: K partial aggregates of the model (one update each) merged into a fresh
``tw.Aggregator`` in a process of its own (``children/shard_reducer.py``), each file read
just before its merge: merge time (fastest of the passes), ``result()`` time, peak RSS
over the RSS before the first merge; the result checked as above.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import bert
import numpy as np
from scaling import fit_exponent

import tensorwire as tw
from tensorwire import fl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

__all__ = [
    "CODECS",
    "MergeMismatch",
    "Sizes",
    "check_merged",
    "make_updates",
    "mean_magnitudes",
    "run",
    "sizes",
]

Tensors = dict[str, np.ndarray]
CHILDREN = Path(__file__).resolve().parent / "children"

#: The update codecs: float32 differences as they are, 8-bit differences (one scale per
#: tensor, 0.25 of raw), and the sparse upload the project recommends (about 0.01 of raw).
CODECS = ("raw", "int8", "delta+topk:0.01+f16+zstd")
#: BERT-base x 0.02: 199 tensors, about 9 MB of float32; 120 updates, about 1 GB raw.
MODEL_SCALE, UPDATES, PARTITIONS = 0.02, 120, 4
WORKERS = (1, 2)
#: Runs of each worker count (interleaved); the median time is the figure.
RUNS = 5
#: Partials merged by the reducer, and its timed passes per count (the fastest is kept).
REDUCER_PARTIALS, REDUCER_PASSES = (1, 2, 4, 8, 16), 5
#: The time exponent is fitted from 4 partials up: below, the first touch of the fresh
#: sums' pages and a merge's fixed costs weigh as much as the merges (a few ms each).
REDUCER_FIT_FROM = 4
#: librdkafka's prefetch per worker (queued.max.messages.kbytes, fetch.max.bytes) and the
#: producer's queue: bounded, so that a worker's memory is its aggregation's.
PREFETCH_KB = 2048
#: The children run with glibc's mmap threshold fixed: with its default (dynamic, rising
#: to the largest block freed), freed payload buffers stay in the heap and count in RSS.
MMAP_THRESHOLD_KB = 256
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_KB * 1024)}
#: message.max.bytes of every producer (librdkafka's default): 1 MB pieces.
MAX_BYTES = 1_000_000
ROUND = 3
#: float32's unit roundoff, for docs/federated.md's bound on |merged - single|.
U32 = 2.0**-24


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run of this part."""

    model_scale: float
    updates: int
    partitions: int
    runs: int
    reducer_partials: tuple[int, ...]
    reducer_passes: int
    reducer_fit_from: int


def sizes(scale: float, smoke: bool) -> Sizes:
    """Full sizes times ``scale`` (the model's bytes), or tiny ones for the smoke run."""
    if smoke:
        return Sizes(0.0005, 6, 2, 1, (1, 2, 4), 1, 1)
    return Sizes(
        MODEL_SCALE * scale,
        UPDATES,
        PARTITIONS,
        RUNS,
        REDUCER_PARTIALS,
        REDUCER_PASSES,
        REDUCER_FIT_FROM,
    )


class MergeMismatch(AssertionError):
    """The merged partials differ from one tw.aggregate by more than the documented bound."""


# -- the inputs and the check ----------------------------------------------------------
def make_updates(base: Tensors, codec: str, n: int, seed: int = 0) -> list[bytes]:
    """``n`` client updates against ``base``: each client moved every weight by N(0,
    1e-3), sample counts 1..7."""
    rng = np.random.default_rng(1000 + seed)
    out = []
    for i in range(n):
        step = bert.normal_like(base, 1e-3, rng)
        local = {k: v + step[k] for k, v in base.items()}
        del step
        out.append(
            tw.encode_update(base, local, codec=codec, round=ROUND, client_id=f"c{i}",
                             num_samples=i % 7 + 1)
        )  # fmt: skip
    return out


def mean_magnitudes(base: Tensors, updates: list[bytes], codec: str) -> Tensors:
    """``m`` of the bound: the sample-weighted mean of the decoded differences'
    magnitudes, element by element (float64)."""
    weights = [fl.update_info(u).samples for u in updates]
    mags = {k: np.zeros(v.shape, np.float64) for k, v in base.items()}
    for w, u in zip(weights, updates):
        got = tw.decode(u, base=base) if "delta" in codec else tw.decode(u)
        for k, acc in mags.items():
            d = got[k].astype(np.float64)
            if "delta" in codec:
                d -= base[k]
            acc += w * np.abs(d)
    total = float(sum(weights))
    return {k: v / total for k, v in mags.items()}


def check_merged(got: Tensors, want: Tensors, m: Tensors, n: int) -> dict[str, Any]:
    """``got`` (merged partials) against ``want`` (one tw.aggregate of the same ``n``
    updates): bit-identical, or within docs/federated.md's float32 bound
    ``2.01 u (n m + max(|got|, |want|))`` element by element; MergeMismatch otherwise.
    Returns whether every tensor is identical, the largest difference and the largest
    difference over its bound."""
    if set(got) != set(want):
        raise MergeMismatch(f"the merged result has tensors {sorted(set(got) ^ set(want))}")
    identical, max_diff, worst = True, 0.0, 0.0
    for k, w in want.items():
        g = got[k]
        if g.dtype != w.dtype or g.shape != w.shape:
            raise MergeMismatch(f"{k!r}: {g.dtype}{g.shape}, not {w.dtype}{w.shape}")
        if g.tobytes() == w.tobytes():
            continue
        identical = False
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        diff = np.abs(g64 - w64)
        bound = 2.01 * U32 * (n * m[k] + np.maximum(np.abs(g64), np.abs(w64)))
        max_diff = max(max_diff, float(diff.max()))
        over = float(np.max(diff / np.maximum(bound, np.finfo(np.float64).tiny)))
        worst = max(worst, over)
        if over > 1.0:
            raise MergeMismatch(
                f"{k!r}: the merged partials differ from tw.aggregate by up to "
                f"{diff.max():.3g}, {over:.3g}x the documented float32 bound"
            )
    return {"identical": identical, "max_abs_diff": max_diff, "worst_over_bound": worst}


def balanced_id(i: int, partitions: int, rng: np.random.Generator) -> bytes:
    """A payload id for update ``i`` that librdkafka's default partitioner (CRC-32 of the
    key, the id in hex, modulo the partition count) puts in partition ``i % partitions``:
    every partition then holds as many updates, and a worker's share is its partitions'."""
    while True:
        pid = rng.bytes(16)
        if zlib.crc32(pid.hex().encode()) % partitions == i % partitions:
            return pid


def _records_per_partition(bootstrap: str, topic: str, partitions: int) -> list[int]:
    import kafka_broker
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(kafka_broker.consumer_config(bootstrap))
    try:
        ends = [
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)
        ]
    finally:
        c.close()
    return [high - low for low, high in ends]


# -- one round of N workers ------------------------------------------------------------
def _wait_for_split(scratch: Path, procs: list[subprocess.Popen], partitions: int) -> None:
    """Until every worker holds partitions and together they hold each exactly once,
    unchanged for a second (one generation of the group)."""
    deadline = time.monotonic() + 90
    stable_since: Optional[float] = None
    while True:
        for w, p in enumerate(procs):
            if p.poll() is not None:
                raise RuntimeError(f"worker {w} exited with {p.returncode}: {_stderr(scratch, w)}")
        held = []
        for w in range(len(procs)):
            f = scratch / f"assigned-{w}.json"
            held.append(json.loads(f.read_text()) if f.exists() else [])
        split = all(held) and sorted(p for h in held for p in h) == list(range(partitions))
        now = time.monotonic()
        if not split:
            stable_since = None
        elif stable_since is None:
            stable_since = now
        elif now - stable_since >= 1.0:
            return
        if now > deadline:
            raise TimeoutError(f"the group did not split {partitions} partitions: {held}")
        time.sleep(0.05)


def _wait_for_results(scratch: Path, procs: list[subprocess.Popen]) -> None:
    """Until every worker wrote its figures (its partial is published)."""
    deadline = time.monotonic() + 600
    while not all((scratch / f"result-{w}.json").exists() for w in range(len(procs))):
        for w, p in enumerate(procs):
            if p.poll() is not None and not (scratch / f"result-{w}.json").exists():
                raise RuntimeError(f"worker {w} exited with {p.returncode}: {_stderr(scratch, w)}")
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not finish within 600 s")
        time.sleep(0.02)


def broker_pid(bootstrap: str) -> Optional[int]:
    """The pid of the tansu process listening at ``bootstrap`` (None if not found)."""
    url = f"tcp://{bootstrap}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if url in args and any(a.endswith(b"tansu") for a in args[:1]):
                return int(entry.name)
    return None


def cpu_seconds(pid: Optional[int]) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stderr(scratch: Path, w: int) -> str:
    f = scratch / f"worker-{w}.err"
    return f.read_text()[-2000:] if f.exists() else ""


def _reduce(bootstrap: str, topic: str, partials: int, base: Tensors) -> tw.Aggregator:
    """What the reducer does: merge ``partials`` partials from ``topic``."""
    import kafka_broker
    from confluent_kafka import Consumer

    from tensorwire.transport import kafka as twkafka

    sub = twkafka.subscribe(Consumer(kafka_broker.consumer_config(bootstrap)), [topic])
    top = tw.Aggregator(base=base, round=ROUND)
    try:
        for _ in range(partials):
            if not top.merge(sub.next_payload(timeout=60)):
                raise MergeMismatch(f"the reducer refused a partial: {top.skipped[-1]}")
    finally:
        sub.close()
    return top


def run_round(
    bootstrap: str,
    topic: str,
    workers: int,
    z: Sizes,
    scratch: Path,
    base: Tensors,
) -> tuple[dict[str, Any], tw.Aggregator]:
    """One round: ``workers`` worker processes in a fresh group over ``topic``; their
    figures, and the reducer's aggregator holding their merged partials."""
    import kafka_broker

    scratch.mkdir(parents=True)
    partials_topic = kafka_broker.create_topic(bootstrap, 1)
    spec = {
        "bootstrap": bootstrap,
        "topic": topic,
        "group": f"shard-{uuid.uuid4().hex[:12]}",
        "partials_topic": partials_topic,
        "scale": z.model_scale,
        "round": ROUND,
        "scratch": str(scratch),
        "prefetch_kb": PREFETCH_KB,
        "max_bytes": MAX_BYTES,
        "timeout": 120,
    }
    spec_path = scratch / "spec.json"
    spec_path.write_text(json.dumps(spec))
    procs = []
    for w in range(workers):
        with open(scratch / f"worker-{w}.err", "w") as err:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(CHILDREN / "shard_worker.py"), str(spec_path), str(w)],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env={**os.environ, **CHILD_ENV},
                )
            )
    try:
        _wait_for_split(scratch, procs, z.partitions)
        broker = broker_pid(bootstrap)
        broker_cpu, started = cpu_seconds(broker), time.monotonic()
        (scratch / "go").touch()
        _wait_for_results(scratch, procs)
        window = time.monotonic() - started
        broker_cpu = cpu_seconds(broker) - broker_cpu
        (scratch / "stop").touch()
        for w, p in enumerate(procs):
            if p.wait(timeout=60) != 0:
                raise RuntimeError(f"worker {w} exited with {p.returncode}: {_stderr(scratch, w)}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    per = [json.loads((scratch / f"result-{w}.json").read_text()) for w in range(workers)]
    for r in per:
        if r["revoked_after_start"]:
            raise RuntimeError(f"the group rebalanced during the run: {r['revoked_after_start']}")
    first = min(r["first_record"] for r in per if r["first_record"] is not None)
    seconds = max(r["acknowledged"] for r in per) - first
    top = _reduce(bootstrap, partials_topic, workers, base)
    workers_cpu = sum(r["cpu_seconds"] for r in per)
    return {
        "workers": workers,
        "seconds": seconds,
        "per_worker": per,
        "workers_cpu_seconds": workers_cpu,
        "broker_cpu_seconds": broker_cpu,
        # the CPU the round used, of all the machine's cores, from the start to the last
        # partial (workers: from their start to their partial; the broker: all of it)
        "cpu_use": (workers_cpu + broker_cpu) / (window * (os.cpu_count() or 1)),
    }, top


def _codec_rounds(
    bootstrap: str, codec: str, z: Sizes, base: Tensors, tmp: Path, log: Any
) -> dict[str, Any]:
    """Every run of :data:`WORKERS` on one topic holding the updates made with ``codec``."""
    import kafka_broker
    from confluent_kafka import Producer

    from tensorwire.transport import kafka as twkafka

    model_bytes = sum(v.nbytes for v in base.values())
    updates = make_updates(base, codec, z.updates)
    want = tw.aggregate(updates, "samples", base=base, round=ROUND)
    m = mean_magnitudes(base, updates, codec)
    topic = kafka_broker.create_topic(bootstrap, z.partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": MAX_BYTES})
    ids = np.random.default_rng(7)
    for i, u in enumerate(updates):
        pid = balanced_id(i, z.partitions, ids)
        twkafka.publish(producer, topic, u, max_bytes=MAX_BYTES, payload_id=pid)
    piece = twkafka.piece_size(MAX_BYTES)
    expected = [0] * z.partitions
    for i, u in enumerate(updates):
        expected[i % z.partitions] += -(-len(u) // piece)
    records = _records_per_partition(bootstrap, topic, z.partitions)
    if records != expected:
        raise RuntimeError(f"records per partition {records}, not {expected}")
    payload_bytes = sum(len(u) for u in updates)
    del updates
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in WORKERS}
    checks = []
    for r in range(z.runs):
        for n in WORKERS:
            fig, top = run_round(bootstrap, topic, n, z, tmp / f"{r}-{n}", base)
            counted = sum(w["updates"] for w in fig["per_worker"])
            if (top.count, counted) != (z.updates, z.updates):
                raise MergeMismatch(
                    f"{n} workers counted {counted} updates, the reducer {top.count}, "
                    f"of {z.updates}"
                )
            checks.append(check_merged(top.result(), want, m, z.updates))
            runs[n].append(fig)
            log(
                f"  {codec:<26} {n} worker(s): {fig['seconds']:.2f} s, "
                f"{z.updates / fig['seconds']:.1f} updates/s, peak "
                + ", ".join(f"{w['peak_growth'] / model_bytes:.2f}" for w in fig["per_worker"])
                + " models"
            )
    by: dict[str, Any] = {}
    for n, figs in runs.items():
        seconds = statistics.median(f["seconds"] for f in figs)
        workers = [w for f in figs for w in f["per_worker"]]
        by[str(n)] = {
            "seconds": seconds,
            "all_seconds": [f["seconds"] for f in figs],
            "updates_per_s": z.updates / seconds,
            "wire_mbps": payload_bytes / seconds / 1e6,
            "model_mbps": z.updates * model_bytes / seconds / 1e6,
            "peak_models": max(w["peak_growth"] for w in workers) / model_bytes,
            "adding_models": max(w["adding_growth"] for w in workers) / model_bytes,
            "baseline_mb": statistics.median(w["baseline_rss"] for w in workers) / 1e6,
            "updates_per_worker": [w["updates"] for w in figs[0]["per_worker"]],
            "workers_cpu_s": statistics.median(f["workers_cpu_seconds"] for f in figs),
            "broker_cpu_s": statistics.median(f["broker_cpu_seconds"] for f in figs),
            "cpu_use": statistics.median(f["cpu_use"] for f in figs),
            "partial_mb": figs[0]["per_worker"][0]["partial_bytes"] / 1e6,
        }
    one, two = by[str(WORKERS[0])], by[str(WORKERS[-1])]
    return {
        "payload_mb": payload_bytes / z.updates / 1e6,
        "payload_over_model": payload_bytes / z.updates / model_bytes,
        "workers": by,
        "scaling": two["updates_per_s"] / one["updates_per_s"],
        "peak_models": max(v["peak_models"] for v in by.values()),
        "adding_models": max(v["adding_models"] for v in by.values()),
        "identical": all(c["identical"] for c in checks),
        "max_abs_diff": max(c["max_abs_diff"] for c in checks),
        "worst_over_bound": max(c["worst_over_bound"] for c in checks),
    }


# -- the reducer against the number of partials ----------------------------------------
def reducer_cost(z: Sizes, base: Tensors, tmp: Path, log: Any) -> dict[str, Any]:
    """K partials (one raw update each) merged in a child process, for each K of
    ``z.reducer_partials``: seconds, peak growth, the result checked."""
    model_bytes = sum(v.nbytes for v in base.values())
    kmax = max(z.reducer_partials)
    updates = make_updates(base, "raw", kmax, seed=1)
    folder = tmp / "reducer"
    folder.mkdir()
    paths = []
    for j, u in enumerate(updates):
        agg = tw.Aggregator(base=base, round=ROUND)
        agg.add(u, "samples")
        paths.append(folder / f"p{j}.twp")
        paths[-1].write_bytes(agg.partial())
        del agg
    partial_bytes = paths[0].stat().st_size
    rows = []
    for k in z.reducer_partials:
        listing = folder / f"k{k}.json"
        result_path = folder / f"result-{k}.tw"
        listing.write_text(json.dumps({
            "scale": z.model_scale, "round": ROUND, "passes": z.reducer_passes,
            "paths": [str(p) for p in paths[:k]], "result_path": str(result_path),
        }))  # fmt: skip
        r = subprocess.run(
            [sys.executable, str(CHILDREN / "shard_reducer.py"), str(listing)],
            capture_output=True,
            text=True,
            env={**os.environ, **CHILD_ENV},
        )
        if r.returncode != 0:
            raise RuntimeError(f"shard_reducer.py failed on {k} partials: {r.stderr[-2000:]}")
        got = json.loads(r.stdout)
        if got["count"] != k:
            raise MergeMismatch(f"the reducer counted {got['count']} updates of {k}")
        want = tw.aggregate(updates[:k], "samples", base=base, round=ROUND)
        check = check_merged(
            tw.load(result_path, copy=True), want, mean_magnitudes(base, updates[:k], "raw"), k
        )
        result_path.unlink()
        rows.append({
            "partials": k,
            "merge_seconds": got["merge_seconds"],
            "result_seconds": got["result_seconds"],
            "ms_per_merge": got["merge_seconds"] / k * 1e3,
            "merge_gbps": k * partial_bytes / got["merge_seconds"] / 1e9,
            "peak_growth": got["peak_growth"],
            "peak_models": got["peak_growth"] / model_bytes,
            "identical": check["identical"],
        })  # fmt: skip
        log(
            f"  reducer, {k:>2} partials: {got['merge_seconds'] * 1e3:.1f} ms merging, "
            f"peak {got['peak_growth'] / model_bytes:.2f} models"
        )
    shutil.rmtree(folder)
    fit = [r for r in rows if r["partials"] >= z.reducer_fit_from]
    ks = np.array([r["partials"] for r in rows], np.float64)
    per_merge = (
        float(np.polyfit(ks, [r["merge_seconds"] for r in rows], 1)[0])
        if len(rows) > 1
        else rows[0]["merge_seconds"]
    )
    return {
        "partial_mb": partial_bytes / 1e6,
        "passes": z.reducer_passes,
        "rows": rows,
        "time_exponent": fit_exponent(
            [float(r["partials"]) for r in fit], [r["merge_seconds"] for r in fit]
        ),
        "fit_from": fit[0]["partials"],
        "peak_models": max(r["peak_models"] for r in rows),
        # the slope of merge time against partials (least squares): one more partial's cost
        "seconds_per_merge": per_merge,
        "merge_gbps": partial_bytes / per_merge / 1e9 if per_merge > 0 else float("nan"),
    }


def run(scale: float, smoke: bool, log: Any = print) -> dict[str, Any]:
    """The figures above, as a dict for ``Results.sharded``."""
    import tempfile

    import kafka_broker

    if kafka_broker.find_broker_binary() is None:
        raise FileNotFoundError("the tansu broker is missing: `make kafka-broker`")
    z = sizes(scale, smoke)
    shapes = bert.shapes_at_scale(z.model_scale)
    base = bert.weights(shapes)
    model_bytes = sum(v.nbytes for v in base.values())
    out: dict[str, Any] = {
        "model_mb": model_bytes / 1e6,
        "tensors": len(base),
        "largest_tensor_mb": max(v.nbytes for v in base.values()) / 1e6,
        "updates": z.updates,
        "partitions": z.partitions,
        "runs": z.runs,
        "workers": list(WORKERS),
        "prefetch_kb": PREFETCH_KB,
        "mmap_threshold_kb": MMAP_THRESHOLD_KB,
        "cores": os.cpu_count() or 1,
        "codecs": {},
    }
    with tempfile.TemporaryDirectory(prefix="tw-sharded-") as tmp:
        with kafka_broker.local_broker() as bootstrap:
            for codec in CODECS:
                folder = Path(tmp) / codec.replace("+", "_").replace(":", "_")
                out["codecs"][codec] = _codec_rounds(bootstrap, codec, z, base, folder, log)
        out["reducer"] = reducer_cost(z, base, Path(tmp), log)
    return out
