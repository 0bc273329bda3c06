"""A hostile producer on the subscription's topic, the subscriber under an address-space
limit: a flood of pieces claiming 1 GiB payloads under fresh ids, forged pieces under the
victim's id, and garbage, around one genuine payload, which still arrives intact."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from kafka_broker import create_topic

pytestmark = pytest.mark.kafka

ATTACK = textwrap.dedent(
    """
    import os, random, struct, sys, zlib
    from confluent_kafka import Producer
    import tensorwire as tw
    from tensorwire.transport import kafka as twkafka

    bootstrap, topic = sys.argv[1], sys.argv[2]
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    victim = b"victim-payload!!"
    payload = random.Random(6).randbytes(8 << 20)
    genuine = list(tw.chunk(payload, 256 << 10, payload_id=victim))

    def forged(pid, index, total, piece=256 << 10):
        # A valid header and CRC: anyone who knows the framing can write one.
        count = -(-total // piece)
        body = os.urandom(16) * (piece // 16)
        head = bytearray(88)
        head[0:8] = b"\\x89TWC\\x01\\x00\\x00\\x00"
        head[8:24] = pid
        struct.pack_into("<IIQQI", head, 24, index % count, count, total,
                         (index % count) * piece, piece)
        head[84:88] = struct.pack("<I", zlib.crc32(body, zlib.crc32(bytes(head[:84]))))
        return bytes(head) + body

    n = 0
    for i, piece in enumerate(genuine):
        for k in range(60):
            if k % 3 == 0:
                bad = forged(os.urandom(16), k, 1 << 30)        # fresh id, claims 1 GiB
            elif k % 3 == 1:
                bad = forged(victim, i, len(payload))           # the victim's id and size
            else:
                bad = os.urandom(random.randrange(1, 400))      # garbage
            p.produce(topic, value=bad)
            n += 1
            p.poll(0)
        p.produce(topic, value=piece)
    assert p.flush(30) == 0
    print(n, len(genuine), tw.open(tw.encode({})).content_id, flush=True)
    """
)

VICTIM = textwrap.dedent(
    """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # before anything is loaded
    import random, sys
    from confluent_kafka import Consumer
    import tensorwire as tw
    from tensorwire.transport import kafka as twkafka
    sys.path.insert(0, sys.argv[3])
    from kafka_broker import consumer_config
    from local_process import peak_mib

    refused = []
    sub = twkafka.subscribe(
        Consumer(consumer_config(sys.argv[1])), [sys.argv[2]],
        reassembler=tw.Reassembler(max_pending_bytes=64 << 20, max_payload_bytes=1 << 30),
        on_error=lambda e, msg: refused.append(type(e).__name__),
    )
    blob = sub.next_payload(timeout=120)
    assert blob == random.Random(6).randbytes(8 << 20), "the genuine payload is damaged"
    sub.commit()
    tracked, pending = len(sub._pending_at), len(sub.reassembler.pending())
    peak = peak_mib()
    print(f"ok {len(refused)} refused, {tracked} tracked, {pending} pending, peak {peak} MiB",
          flush=True)
    sub.close()
    """
)


def test_a_hostile_producer_cannot_stop_or_bloat_the_subscriber(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    attack = subprocess.run(
        [sys.executable, "-c", ATTACK, kafka_bootstrap, topic],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert attack.returncode == 0, attack.stderr[-2000:]
    n_bad = int(attack.stdout.split()[0])

    env = dict(os.environ, MALLOC_ARENA_MAX="2")  # librdkafka's threads, one arena each
    done = subprocess.run(
        [sys.executable, "-c", VICTIM, kafka_bootstrap, topic, os.path.dirname(__file__)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok "), done.stdout
    words = done.stdout.split()
    refused, tracked, pending, peak = int(words[1]), int(words[3]), int(words[5]), int(words[8])
    # Every garbage piece is refused; forged ones are refused or held as pending bodies
    # the limits bound; the subscription tracks no more than the reassembler holds.
    assert refused >= n_bad // 3
    assert tracked <= pending
    assert peak < 1500, f"peak RSS {peak} MiB"
