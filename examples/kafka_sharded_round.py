"""A federated round aggregated by several workers on Kafka, one of them killed mid-round.

Clients publish their updates on an updates topic of P partitions. Aggregation workers,
members of one consumer group, split its partitions: each adds the updates of its
partitions to a ``tw.Aggregator`` and, whenever no update has come for a moment,
publishes what it holds as a partial aggregate (``Aggregator.partial_chunks()``) on a partials
topic, then commits the offsets the partial covers, and starts a fresh partial. A reducer
merges the partials (``Aggregator.merge``) until every expected update is counted, and
publishes the global model.

A worker killed mid-round loses nothing: the offsets of the updates it had not yet
published are not committed, so once its partitions are handed out again (its session
expires, and a replacement joins) their new owners read those updates again. Nothing
is counted twice: a worker skips an update already held by a published partial of the
round (it reads the partials topic too), which covers a worker dying between publishing
a partial and committing it, and the reducer's merge refuses a partial holding an update
already counted.

The result is checked against one ``tw.aggregate`` over the same updates::

    python examples/kafka_sharded_round.py --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import tensorwire as tw
from tensorwire import fl
from tensorwire.transport import kafka as twkafka

UPDATE_CODEC = "delta+topk:0.05+f16+zstd"
ROUND = 7


def base_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"conv.kernel": (3, 3, 32, 64), "dense.kernel": (1024, 256), "dense.bias": (256,)}
    return {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}


def client_update(base: dict[str, np.ndarray], client: int) -> bytes:
    rng = np.random.default_rng(100 + client)
    local = {k: v - 0.01 * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
    return tw.encode_update(base, local, codec=UPDATE_CODEC, round=ROUND,
                            client_id=str(client), num_samples=10 + client)  # fmt: skip


def consumer(bootstrap: str, group: str, **extra: object) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10,
        # A short session and rebalance timeout (librdkafka sends max.poll.interval.ms as
        # the latter): a dead worker's partitions move on within seconds. Every consumer
        # here is polled at least every second.
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 10000, **extra,
    })  # fmt: skip


def run_worker(args: argparse.Namespace) -> None:
    """One aggregation worker: see the module docstring."""
    base = base_model()
    producer = Producer({"bootstrap.servers": args.bootstrap})
    held_elsewhere: set[str] = set()  # content ids in the round's published partials
    reader = consumer(args.bootstrap, f"worker-{args.worker}-{args.run}")
    partials = twkafka.subscribe(reader, [f"partials-{args.run}"])
    log = TopicPartition(f"partials-{args.run}", 0)

    def read_partials() -> None:
        """Every partial published so far: up to the topic's end as of now."""
        end = reader.get_watermark_offsets(log, timeout=10, cached=False)[1]
        while end > 0:
            try:
                blob = partials.next_payload(timeout=0.05)
                held_elsewhere.update(fl.partial_info(blob).content_ids)
            except TimeoutError:
                if reader.assignment() and reader.position([log])[0].offset >= end:
                    return

    agg = tw.Aggregator(base=base, round=ROUND, accumulate="float64")
    added = 0

    def flush(_revoked: object = None) -> None:
        nonlocal agg
        if agg.count:
            # straight from the sums, a piece at a time: never a second model in memory
            chunks = agg.partial_chunks(twkafka.piece_size())
            twkafka.publish_chunks(producer, f"partials-{args.run}", chunks)
            agg = tw.Aggregator(base=base, round=ROUND, accumulate="float64")
        updates.commit()  # only now: what the partial holds is durable

    updates = twkafka.subscribe(consumer(args.bootstrap, f"workers-{args.run}"),
                                [f"updates-{args.run}"], commit_interval=None,
                                on_revoke=flush)  # fmt: skip
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:  # until the reducer stops it (or a safety limit)
        try:
            blob = updates.next_payload(timeout=0.5)
        except TimeoutError:
            flush()  # quiet for a moment: publish what is held
            read_partials()  # and keep the partials reader polled
            continue
        read_partials()  # before counting: is it in a partial already published?
        if tw.open(blob).content_id in held_elsewhere:
            continue  # a dead worker published it before its offsets were committed
        agg.add(blob, weight="samples")
        del blob  # not held while the next update is read (one payload in memory)
        added += 1
        if added == args.die_after:
            os._exit(1)  # killed mid-round: added, not published, not committed
    flush()
    updates.close()
    partials.close()


def run_round(args: argparse.Namespace) -> None:
    topics = {
        "updates": f"updates-{args.run}", "partials": f"partials-{args.run}",
        "model": f"model-{args.run}",
    }  # fmt: skip
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    made = admin.create_topics([NewTopic(topics["updates"], args.partitions, 1),
                                NewTopic(topics["partials"], 1, 1),
                                NewTopic(topics["model"], 1, 1)])  # fmt: skip
    for future in made.values():
        future.result(timeout=30)
    base = base_model()
    updates = [client_update(base, c) for c in range(args.clients)]
    worker_args = [sys.executable, __file__, "--bootstrap", args.bootstrap, "--run", args.run,
                   "--seconds", str(args.seconds)]  # fmt: skip
    workers = [
        subprocess.Popen([*worker_args, "--worker", str(w), "--die-after", str(2 * (w == 0))])
        for w in range(args.workers)
    ]
    reducer = twkafka.subscribe(consumer(args.bootstrap, f"reducer-{args.run}"),
                                [topics["partials"]])  # fmt: skip
    time.sleep(3)  # let the workers join their group, so that each takes partitions
    producer = Producer({"bootstrap.servers": args.bootstrap})
    for c, blob in enumerate(updates):
        twkafka.publish(producer, topics["updates"], blob, payload_id=bytes([c]) * 16)
    refused: list[str] = []
    total = tw.Aggregator(base=base, round=ROUND, accumulate="float64",
                          on_mismatch=lambda i, why: refused.append(why))  # fmt: skip
    n_partials = 0
    start = time.monotonic()
    died = None
    while total.count < args.clients:
        if died is None and workers[0].poll() is not None:
            # A supervisor's restart: the replacement joins the group, which hands the
            # dead worker's partitions out again (tansu rebalances on a join, not on a
            # session's expiry alone; Apache Kafka does both).
            died = workers[0].returncode
            workers.append(subprocess.Popen([*worker_args, "--worker", str(len(workers))]))
        try:
            blob = reducer.next_payload(timeout=1.0)
        except TimeoutError:
            if time.monotonic() - start > args.seconds:
                raise
            continue
        total.merge(blob)
        n_partials += 1
    took = time.monotonic() - start
    result = total.result()
    twkafka.publish_tensors(producer, topics["model"], result, codec="shuffle+zstd",
                            metadata={"round": ROUND + 1})  # fmt: skip
    reducer.close()
    for w in workers[1:]:  # every update is counted: the others can stop
        w.terminate()
        w.wait(timeout=30)
    assert not refused, refused
    expected = tw.aggregate(updates, base=base, weights="samples", accumulate="float64")
    diff = max(float(np.max(np.abs(result[k] - expected[k]))) for k in expected)
    assert all(np.allclose(result[k], expected[k], rtol=1e-6, atol=1e-7) for k in expected), diff
    print(f"{args.clients} updates over {args.partitions} partitions, {args.workers} workers "
          f"(worker 0 killed after adding 2, exit {died}, and replaced); {n_partials} "
          f"partials merged in {took:.1f} s; {total.count} updates counted once each")  # fmt: skip
    print(f"result equal to one tw.aggregate over the same updates (max difference {diff:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=120.0, help="a limit on each wait")
    parser.add_argument("--run", default=uuid.uuid4().hex[:8], help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--die-after", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        run_worker(args)
    else:
        run_round(args)


if __name__ == "__main__":
    main()
