"""One aggregation worker of a sharded round on Kafka, in a process of its own.

    python benches/children/shard_worker.py SPEC.json WORKER

SPEC.json (written by ``benches/sharded.py``) names the broker, the updates topic, the
consumer group, the partials topic, the model (``bert.shapes_at_scale(scale)``), the
round and a scratch folder. The worker:

1. builds the round's base model, joins the group with ``auto.offset.reset=latest`` (so
   that it reads nothing yet: every update is already on the broker) and writes its
   assignment to ``assigned-WORKER.json`` whenever it changes;
2. once ``go`` appears in the scratch folder (the parent sees every partition assigned
   exactly once), resets the kernel's resident high-water mark and takes the baseline
   RSS (Python, numpy, confluent-kafka, tensorwire, the base, the consumer in its group),
   seeks its partitions to their start and notes their ends;
3. adds every update of its partitions to one ``tw.Aggregator`` (one payload held at a
   time), then publishes its partial on the partials topic, streamed out of the sums
   (``partial_chunks``: never a second model), and commits its offsets;
4. writes ``result-WORKER.json``: when its first record came, when its partial was
   acknowledged, the updates and bytes it took, the CPU time it used, its peak RSS over
   the baseline (while adding, and in all), and any rebalance seen after the start
   (which fails the run); it leaves the group once ``stop`` appears (every worker is
   done).
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bert
import measure
from confluent_kafka import Consumer, Producer, TopicPartition

import tensorwire as tw
from tensorwire.transport import kafka as twkafka


class FirstRecordClock:
    """The consumer, noting when its first record came (the round's clock starts there)
    and the bytes of the records it handed over."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self.first: Optional[float] = None
        self.record_bytes = 0

    def _note(self, messages: list[Any]) -> None:
        for m in messages:
            if m is not None and m.error() is None:
                if self.first is None:
                    self.first = time.monotonic()
                self.record_bytes += len(m.value())

    def poll(self, timeout: float) -> Any:
        m = self._consumer.poll(timeout)
        self._note([m])
        return m

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        ms = self._consumer.consume(num_messages=num_messages, timeout=timeout)
        self._note(ms)
        return ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def consumer_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The worker's consumer: no auto-commit, joining at the end of the log, librdkafka's
    prefetch bounded (its default, 64 MiB, would be several small models)."""
    return {
        "bootstrap.servers": spec["bootstrap"],
        "group.id": spec["group"],
        "enable.auto.commit": False,
        "auto.offset.reset": "latest",
        "fetch.wait.max.ms": 10,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 60000,
        "queued.max.messages.kbytes": spec["prefetch_kb"],
        "fetch.max.bytes": spec["prefetch_kb"] * 1024,
        # with the prefetch full, fetch again as soon as it drains (librdkafka waits 1 s)
        "fetch.queue.backoff.ms": 1,
    }


def write_json(path: Path, value: Any) -> None:
    """``value`` as JSON at ``path``, replaced whole (the parent never reads half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def idle_until(
    flag: Path,
    deadline: float,
    updates: Any,
    who: str,
    what: str,
    each: Callable[[], None] = lambda: None,
) -> None:
    """Keep polling ``updates`` (the group needs it) until ``flag`` exists, calling ``each``
    every turn; an update read meanwhile, or ``deadline`` passed, is an error."""
    while not flag.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{who}: no {what} before its deadline")
        try:
            updates.next_payload(timeout=0.05)
            raise RuntimeError(f"{who} read an update while waiting for the {what}")
        except TimeoutError:
            pass
        each()


def main(spec_path: str, worker: int) -> None:
    spec = json.loads(Path(spec_path).read_text())
    scratch = Path(spec["scratch"])
    base = bert.weights(bert.shapes_at_scale(spec["scale"]))
    clock = FirstRecordClock(Consumer(consumer_config(spec)))
    revoked_after_start: list[str] = []
    started = False

    def on_revoke(partitions: list[tuple[str, int]]) -> None:
        if started:
            revoked_after_start.append(repr(partitions))

    updates = twkafka.subscribe(clock, [spec["topic"]], commit_interval=None, on_revoke=on_revoke)
    producer = Producer({
        "bootstrap.servers": spec["bootstrap"],
        "queue.buffering.max.kbytes": spec["prefetch_kb"],
    })  # fmt: skip

    # 1. join, report the assignment, wait for the start
    shown: Optional[list[int]] = None
    deadline = time.monotonic() + spec["timeout"]

    def show_assignment() -> None:
        nonlocal shown
        mine = sorted(tp.partition for tp in clock.assignment())
        if mine != shown:
            write_json(scratch / f"assigned-{worker}.json", mine)
            shown = mine

    idle_until(scratch / "go", deadline, updates, f"worker {worker}", "start", show_assignment)

    # 2. the baseline, then the start of the log
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    measure.reset_peak_rss()
    baseline = measure.status_bytes("VmRSS") or 0
    cpu_at_start = time.process_time()  # every thread of the process: librdkafka's too
    started = True
    topic = spec["topic"]
    ends: dict[int, int] = {}
    for tp in clock.assignment():
        low, high = clock.get_watermark_offsets(tp, timeout=10, cached=False)
        if high > low:
            ends[tp.partition] = high
            clock.seek(TopicPartition(topic, tp.partition, low))
    watched = [TopicPartition(topic, p) for p in ends]

    def at_the_end() -> bool:
        return all(tp.offset >= ends[tp.partition] for tp in clock.position(watched))

    # 3. aggregate, then the partial
    agg = tw.Aggregator(base=base, round=spec["round"])
    payload_bytes = 0
    while True:
        try:
            blob = updates.next_payload(timeout=0 if at_the_end() else 1.0)
        except TimeoutError:
            if at_the_end():
                break
            if time.monotonic() > deadline + spec["timeout"]:
                raise
            continue
        payload_bytes += len(blob)
        agg.add(blob, weight="samples")
        del blob  # one payload held at a time: not this one while the next is read
    count = agg.count
    adding_peak = measure.status_bytes("VmHWM") or 0  # the sums, a payload, the prefetch
    # the partial streamed out of the sums a piece at a time: no second model held
    chunks = agg.partial_chunks(twkafka.piece_size(spec["max_bytes"]))
    partial_bytes = chunks.total_len
    twkafka.publish_chunks(producer, spec["partials_topic"], chunks)
    acknowledged = time.monotonic()
    cpu_seconds = time.process_time() - cpu_at_start
    del chunks, agg
    peak = measure.status_bytes("VmHWM") or 0
    updates.commit()  # only now: the partial holding them is durable

    # 4. the figures, then stay in the group until every worker is done (leaving would
    # hand this worker's partitions to the others mid-round)
    out = {
        "worker": worker,
        "partitions": sorted(ends),
        "updates": count,
        "payload_bytes": payload_bytes,
        "record_bytes": clock.record_bytes,
        "partial_bytes": partial_bytes,
        "first_record": clock.first,
        "acknowledged": acknowledged,
        "cpu_seconds": cpu_seconds,
        "baseline_rss": baseline,
        "peak_growth": max(0, peak - baseline),
        "adding_growth": max(0, adding_peak - baseline),
        "revoked_after_start": revoked_after_start,
    }
    write_json(scratch / f"result-{worker}.json", out)
    stop_by = deadline + 2 * spec["timeout"]
    idle_until(scratch / "stop", stop_by, updates, f"worker {worker}", "stop")
    updates.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
