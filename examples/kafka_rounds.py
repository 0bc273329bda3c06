"""The first seed's federated system over Kafka, through a 1 MB message limit.

A server publishes the global model on a model topic; client processes consume it, take
a training step (simulated: a deterministic step per client and round), and publish
their update with ``tw.encode_update`` (``delta+topk:0.01+f16+zstd`` with error
feedback) on an updates topic; the server adds each update to a ``tw.Aggregator`` as
soon as its pieces are complete, and publishes the next model. Every record is at most
``--max-bytes`` (1 MB, Kafka's default ``message.max.bytes``). At the end the result is
compared with the same rounds computed without a broker (equal up to the rounding of
the order the updates arrived in), and the bytes per round with
what the seed's md5list format would send over the same topics: one message per model,
which a 1 MB limit refuses outright once the model is over 1 MB.

It needs a Kafka-protocol broker (the tests start tansu, see tests/kafka_broker.py)::

    python examples/kafka_rounds.py --bootstrap 127.0.0.1:9092 --clients 4 --rounds 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid

import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import tensorwire as tw
from tensorwire.fl import ErrorFeedback
from tensorwire.formats import md5list
from tensorwire.transport import kafka as twkafka

# The one place the wire encoding is chosen: the global model travels losslessly, each
# update as its top 1% of changes in float16 against the model it trained from.
MODEL_CODEC = "shuffle+zstd"
UPDATE_CODEC = "delta+topk:0.01+f16+zstd"

Model = dict[str, np.ndarray]


def initial_model() -> Model:
    rng = np.random.default_rng(0)
    shapes = {
        "conv1.kernel": (3, 3, 3, 64),
        "conv2.kernel": (3, 3, 64, 128),
        "dense1.kernel": (2048, 512),
        "dense1.bias": (512,),
        "head.kernel": (512, 10),
        "head.bias": (10,),
    }
    return {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}


def local_training(model: Model, client: int, rnd: int) -> tuple[Model, int]:
    """A stand-in for local SGD: a deterministic step per (client, round)."""
    rng = np.random.default_rng(1000 * rnd + client)
    stepped = {
        k: (v - 0.01 * rng.standard_normal(v.shape).astype(np.float32)).astype(np.float32)
        for k, v in model.items()
    }
    return stepped, 100 + 10 * client


def client_update(model: Model, client: int, rnd: int, feedback: ErrorFeedback) -> bytes:
    local, samples = local_training(model, client, rnd)
    return tw.encode_update(
        model,
        local,
        codec=UPDATE_CODEC,
        round=rnd,
        client_id=str(client),
        num_samples=samples,
        error_feedback=feedback,
    )


def consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )


def run_client(args: argparse.Namespace) -> None:
    producer = Producer({"bootstrap.servers": args.bootstrap, "message.max.bytes": args.max_bytes})
    models = twkafka.subscribe(
        consumer(args.bootstrap, f"client-{args.client}-{args.run}"), [f"model-{args.run}"]
    )
    feedback = ErrorFeedback()
    for _ in range(args.rounds):
        reader = tw.open(models.next_payload(timeout=120))
        rnd = reader.metadata["round"]
        update = client_update(reader.tensors(), args.client, rnd, feedback)
        twkafka.publish(producer, f"updates-{args.run}", update, max_bytes=args.max_bytes)
    models.close()


def aggregate_round(model: Model, rnd: int, updates: list[bytes]) -> Model:
    agg = tw.Aggregator(base=model, round=rnd, accumulate="float64")
    for blob in updates:
        agg.add(blob, weight="samples")
    return agg.result()


def without_broker(n_clients: int, rounds: int) -> Model:
    model, feedback = initial_model(), [ErrorFeedback() for _ in range(n_clients)]
    for rnd in range(rounds):
        updates = [client_update(model, c, rnd, feedback[c]) for c in range(n_clients)]
        model = aggregate_round(model, rnd, updates)
    return model


def run_server(args: argparse.Namespace) -> Model:
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    topics = [f"model-{args.run}", f"updates-{args.run}"]
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": args.bootstrap, "message.max.bytes": args.max_bytes})
    updates = twkafka.subscribe(consumer(args.bootstrap, f"server-{args.run}"), [topics[1]])
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--bootstrap",
                args.bootstrap,
                "--run",
                args.run,
                "--rounds",
                str(args.rounds),
                "--max-bytes",
                str(args.max_bytes),
                "--client",
                str(c),
            ]
        )
        for c in range(args.clients)
    ]
    model = initial_model()
    seed = len(md5list.dumps(list(model.values())))
    try:
        producer.produce(topics[0], value=md5list.dumps(list(model.values())))
        seed_passes = "yes"
    except KafkaException as e:
        seed_passes = f"no: {e.args[0].name()}"
    print(
        f"model {seed / 1e6:.2f} MB as md5list; one md5list message through a "
        f"{args.max_bytes / 1e6:g} MB limit: {seed_passes}"
    )
    print(
        f"{'round':>5} {'model out':>12} {'updates in':>12} {'records':>8} "
        f"{'md5list in':>11} {'updates/md5list':>16} {'all/md5list':>12} {'seconds':>8}"
    )
    try:
        for rnd in range(args.rounds):
            start = time.perf_counter()
            chunks = tw.encode_chunks(
                model,
                twkafka.piece_size(args.max_bytes),
                codec=MODEL_CODEC,
                metadata={"round": rnd},
            )
            out, records = chunks.total_len, chunks.count
            twkafka.publish_chunks(producer, topics[0], chunks)
            agg = tw.Aggregator(base=model, round=rnd, accumulate="float64")
            received = []
            while len(received) < args.clients:
                blob = updates.next_payload(timeout=120)
                if tw.fl.update_info(blob).round != rnd:
                    continue  # a straggler from an earlier round
                agg.add(blob, weight="samples")  # as soon as its pieces are complete
                received.append(blob)
                records += -(-len(blob) // twkafka.piece_size(args.max_bytes))
            model = agg.result()
            update_bytes = sum(map(len, received))
            md5_in = seed * args.clients  # the seed sends every client's whole model
            print(
                f"{rnd:>5} {out / 1e6:>9.3f} MB {update_bytes / 1e6:>9.3f} MB {records:>8} "
                f"{md5_in / 1e6:>8.2f} MB {update_bytes / md5_in:>16.4f} "
                f"{(out + update_bytes) / (md5_in + seed):>12.3f} "
                f"{time.perf_counter() - start:>8.2f}"
            )
        for c in clients:
            if c.wait(timeout=60) != 0:
                raise SystemExit(f"a client exited with {c.returncode}")
    finally:
        for c in clients:
            c.kill()
        updates.close()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="a Kafka broker")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-bytes", type=int, default=twkafka.DEFAULT_MAX_BYTES)
    parser.add_argument("--run", default=uuid.uuid4().hex[:8], help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        run_client(args)
        return
    final = run_server(args)
    expected = without_broker(args.clients, args.rounds)
    # The broker's arrival order decides the order of the sums (float64), so the two may
    # differ by the float32 rounding of that order, no more.
    diff = max(float(np.max(np.abs(final[k] - expected[k]))) for k in expected)
    assert all(np.allclose(final[k], expected[k], rtol=1e-6, atol=1e-7) for k in expected), diff
    print(f"final model equal to the same rounds run without a broker (max difference {diff:.1e})")


if __name__ == "__main__":
    main()
