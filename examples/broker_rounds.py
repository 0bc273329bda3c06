"""Federated rounds over NATS: a server and several clients exchange a model as chunked
tensorwire payloads, each far above NATS's 1 MiB message limit.

Every round the server publishes the global model on ``fl.global``; each client decodes
it, trains locally (simulated: a deterministic step), and publishes its model on
``fl.updates`` with its round, id and example count as metadata; the server reassembles
every update, checks it belongs to this round, and averages them (FedAvg). At the end the
result is compared with the same rounds computed without any transport.

It needs a running NATS server (``make nats-server`` installs one; the tests start
their own, see tests/nats_server.py)::

    nats-server -a 127.0.0.1 -p 4222 &
    python examples/broker_rounds.py                  # nats://127.0.0.1:4222
    python examples/broker_rounds.py --url nats://host:4222 --clients 8 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import time

import nats
import numpy as np

import tensorwire as tw
from tensorwire.transport import nats as twnats

# The one place the wire encoding is chosen.
# The global model travels losslessly compressed; each client's update travels as an
# exact XOR delta against the global model it trained from (bit-identical after decode,
# and small when weights change little).
CODEC = "floatzip"
UPDATE_CODEC = "xor+shuffle+zstd"

Model = dict[str, np.ndarray]


def initial_model() -> Model:
    rng = np.random.default_rng(0)
    shapes = {
        "dense1.kernel": (1024, 512),
        "dense1.bias": (512,),
        "dense2.kernel": (512, 512),
        "dense2.bias": (512,),
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


def fedavg(updates: list[tuple[Model, int]]) -> Model:
    total = sum(n for _, n in updates)
    return {
        k: sum((m[k].astype(np.float64) * (n / total) for m, n in updates)).astype(np.float32)
        for k in updates[0][0]
    }


async def client(url: str, cid: int, rounds: int, ready: asyncio.Event) -> None:
    nc = await nats.connect(url)
    try:
        sub = await twnats.subscribe(nc, "fl.global")
        ready.set()
        for _ in range(rounds):
            reader = tw.open(await sub.next_payload(timeout=60))
            rnd = reader.metadata["round"]
            global_model = reader.tensors()
            model, n = local_training(global_model, cid, rnd)
            await twnats.publish_tensors(
                nc,
                "fl.updates",
                model,
                codec=UPDATE_CODEC,
                base=global_model,
                metadata={"round": rnd, "client": cid, "num_examples": n},
            )
    finally:
        await nc.close()


async def server(url: str, n_clients: int, rounds: int) -> Model:
    nc = await nats.connect(url)
    try:
        updates_sub = await twnats.subscribe(nc, "fl.updates")
        ready = [asyncio.Event() for _ in range(n_clients)]
        clients = [asyncio.create_task(client(url, c, rounds, ready[c])) for c in range(n_clients)]
        await asyncio.gather(*(e.wait() for e in ready))
        model = initial_model()
        print(f"{'round':>5} {'global out':>22} {'updates in':>24} {'seconds':>8}")
        for rnd in range(rounds):
            start = time.perf_counter()
            chunks = tw.encode_chunks(model, nc.max_payload, codec=CODEC, metadata={"round": rnd})
            sent = (chunks.total_len, chunks.count)
            await twnats.publish_chunks(nc, "fl.global", chunks)
            updates, received = [], 0
            while len(updates) < n_clients:
                blob = await updates_sub.next_payload(timeout=60)
                reader = tw.open(blob)
                meta = reader.metadata
                if meta["round"] != rnd:  # a straggler from an earlier round
                    continue
                received += len(blob)
                updates.append(
                    (meta["client"], reader.tensors(base=model, copy=True), meta["num_examples"])
                )
            updates.sort(key=lambda u: u[0])  # a fixed order makes the average reproducible
            model = fedavg([(m, n) for _, m, n in updates])
            seconds = time.perf_counter() - start
            print(
                f"{rnd:>5} {sent[0] / 2**20:>9.2f} MiB {sent[1]:>3} chunks "
                f"{received / 2**20:>9.2f} MiB from {n_clients:>2} {seconds:>8.2f}"
            )
        await asyncio.gather(*clients)
        return model
    finally:
        await nc.close()


def without_transport(n_clients: int, rounds: int) -> Model:
    model = initial_model()
    for rnd in range(rounds):
        model = fedavg([local_training(model, c, rnd) for c in range(n_clients)])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default="nats://127.0.0.1:4222", help="a running NATS server (%(default)s)"
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raw = sum(v.nbytes for v in initial_model().values())
    print(
        f"model: {raw / 2**20:.2f} MiB float32, global {CODEC!r}, updates {UPDATE_CODEC!r}, "
        f"{args.clients} clients"
    )
    final = asyncio.run(server(args.url, args.clients, args.rounds))
    expected = without_transport(args.clients, args.rounds)
    assert all(np.array_equal(final[k], expected[k]) for k in expected), "models differ"
    print("final model identical to the same rounds run without a broker")


if __name__ == "__main__":
    main()
