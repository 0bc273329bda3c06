"""What chunking and reassembly cost on Kafka: tensorwire's transport against
confluent-kafka moving the same bytes, through one tansu broker (tests/kafka_broker.py).

One payload (a raw tensorwire payload of the BERT-base-shaped state dict at the run's
size), sent and received three ways, each on a fresh topic, runs interleaved:

- ``tw``: ``twkafka.publish`` in pieces under a 1 MB ``message.max.bytes``, then
  ``twkafka.subscribe(...).next_payload()``: framing, CRCs, reassembly and verification
  of every tensor's checksum included;
- ``unchunked``: confluent-kafka producing the payload as one record (the producer's and
  consumer's size limits raised to fit it) and consuming it: what the issue compares with;
- ``sliced``: confluent-kafka producing the same bytes cut into 1 MB records with no
  framing, and a consumer joining them: the cost of many records without tensorwire's.

Each run times producing (until every record is acknowledged) plus consuming (until the
payload is whole), with the consumer already in its group before the clock starts.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from typing import Any, Callable

import bert

import tensorwire as tw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

__all__ = ["run"]

LIMIT = 1_000_000


def _consumer(bootstrap: str, **extra: Any) -> Any:
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
        **extra,
    })  # fmt: skip


def _joined(consumer: Any, poll: Callable[[], Any]) -> None:
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError("the consumer did not join its group")
        poll()


def _tw(bootstrap: str, topic: str, blob: bytes) -> float:
    from confluent_kafka import Producer

    from tensorwire.transport import kafka as twkafka

    consumer = _consumer(bootstrap)
    sub = twkafka.subscribe(consumer, [topic])

    def idle() -> None:
        try:
            sub.next_payload(timeout=0.1)
        except TimeoutError:
            pass

    _joined(consumer, idle)
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": LIMIT})
    t = time.perf_counter()
    twkafka.publish(producer, topic, blob, max_bytes=LIMIT)
    got = sub.next_payload(timeout=120)
    took = time.perf_counter() - t
    assert got == blob, "tw: the payload came back different"
    sub.close()
    return took


def _plain(bootstrap: str, topic: str, blob: bytes, record: int) -> float:
    from confluent_kafka import Producer

    big = {"message.max.bytes": max(LIMIT, 2 * record)}
    consumer = _consumer(
        bootstrap, **{"fetch.max.bytes": 2 * len(blob), "max.partition.fetch.bytes": 2 * len(blob)}
    )
    consumer.subscribe([topic])
    _joined(consumer, lambda: consumer.poll(0.1))
    producer = Producer({"bootstrap.servers": bootstrap, **big})
    t = time.perf_counter()
    for start in range(0, len(blob), record):
        value = blob if record >= len(blob) else blob[start : start + record]
        while True:
            try:
                producer.produce(topic, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    parts, have = [], 0
    while have < len(blob):
        first = consumer.poll(1)  # as the subscription reads: one, then what is here
        for m in () if first is None else (first, *consumer.consume(255, timeout=0)):
            if m.error() is None:
                parts.append(m.value())
                have += len(parts[-1])
    got = parts[0] if len(parts) == 1 else b"".join(parts)
    took = time.perf_counter() - t
    assert got == blob, "confluent-kafka: the payload came back different"
    consumer.close()
    return took


def run(scale: float, smoke: bool) -> dict[str, Any]:
    """The figures above, as a dict for ``Results.kafka``."""
    import kafka_broker

    from tensorwire.transport import kafka as twkafka

    if kafka_broker.find_broker_binary() is None:
        raise FileNotFoundError("the tansu broker is missing: `make kafka-broker`")
    model = bert.weights(bert.shapes_at_scale(0.01 if smoke else 0.15 * scale))
    blob = tw.encode(model)
    runs = 1 if smoke else 5
    piece = twkafka.piece_size(LIMIT)
    times: dict[str, list[float]] = {"tw": [], "unchunked": [], "sliced": []}
    with kafka_broker.local_broker() as bootstrap:
        methods: dict[str, Callable[[str], float]] = {
            "tw": lambda topic: _tw(bootstrap, topic, blob),
            "unchunked": lambda topic: _plain(bootstrap, topic, blob, len(blob)),
            "sliced": lambda topic: _plain(bootstrap, topic, blob, piece),
        }
        for n in range(runs + 1):  # the first round warms the broker and the clients
            for name, method in methods.items():
                took = method(kafka_broker.create_topic(bootstrap))
                if n:
                    times[name].append(took)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "payload_mb": len(blob) / 1e6,
        "records": -(-len(blob) // piece),
        "runs": runs,
        "tw_s": med["tw"],
        "unchunked_s": med["unchunked"],
        "sliced_s": med["sliced"],
        "tw_mbps": len(blob) / med["tw"] / 1e6,
        "unchunked_mbps": len(blob) / med["unchunked"] / 1e6,
        "sliced_mbps": len(blob) / med["sliced"] / 1e6,
        "overhead_vs_unchunked": med["tw"] / med["unchunked"] - 1,
        "overhead_vs_sliced": med["tw"] / med["sliced"] - 1,
    }
