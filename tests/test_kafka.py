"""tensorwire.transport.kafka against a real Kafka-protocol broker (tansu, kafka_broker.py):
large payloads through a 1 MB limit, interleaved producers, a consumer group splitting
partitions, a consumer killed mid-payload, bad pieces among good ones, commits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from kafka_broker import consumer_config, create_topic

import tensorwire as tw
from tensorwire.chunking import chunk_info
from tensorwire.transport import kafka as twkafka

if not os.environ.get("CI"):  # `make test` installs it: missing there, this module fails
    pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

pytestmark = pytest.mark.kafka

LIMIT = 1_000_000  # the producers' message.max.bytes: Kafka's default, and the seed's pain


def producer(bootstrap: str, **extra) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "message.max.bytes": LIMIT, **extra})


def model(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal(n, dtype=np.float32), "b": np.arange(7, dtype=np.int64)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> list[int]:
    c = Consumer(consumer_config(bootstrap, group))
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        c.close()


def high_water(bootstrap: str, topic: str, partition: int = 0) -> int:
    c = Consumer(consumer_config(bootstrap))
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])
    finally:
        c.close()


def test_piece_size_leaves_room_for_the_record() -> None:
    assert twkafka.piece_size(LIMIT) == LIMIT - twkafka.RECORD_OVERHEAD
    with pytest.raises(tw.InputError, match="no room"):
        twkafka.piece_size(300)


def test_large_payload_through_a_1mb_limit(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    tensors = model(1, 6_000_000)  # 24 MB
    p = producer(kafka_bootstrap)
    # The limit is real: the whole payload in one record is refused by the client.
    with pytest.raises(KafkaException, match="MSG_SIZE_TOO_LARGE|too large"):
        p.produce(topic, value=tw.encode(tensors))
    pid = twkafka.publish_tensors(p, topic, tensors, metadata={"round": 3})
    config = consumer_config(kafka_bootstrap)
    sub = twkafka.subscribe(Consumer(config), [topic])
    blob = sub.next_payload(timeout=30)
    assert same(tw.decode(blob), tensors) and tw.open(blob).metadata == {"round": 3}
    sub.close()
    # Every piece went as one record under the limit, keyed by the payload id.
    c = Consumer(consumer_config(kafka_bootstrap))
    c.assign([TopicPartition(topic, 0, 0)])
    records = []
    while len(records) < high_water(kafka_bootstrap, topic):
        records += [m for m in c.consume(64, timeout=1) if m.error() is None]
    c.close()
    assert len(records) == len(tw.encode_chunks(tensors, twkafka.piece_size(LIMIT)))
    assert all(len(m.value()) <= twkafka.piece_size(LIMIT) for m in records)
    assert {m.key() for m in records} == {pid.encode()}
    assert committed(kafka_bootstrap, config["group.id"], topic) == [len(records)]


def test_interleaved_producers(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    sent = {(i, j): model(10 * i + j, 400_000) for i in range(3) for j in range(3)}  # 1.6 MB

    def send(i: int) -> None:
        p = producer(kafka_bootstrap, **{"linger.ms": 0})
        for j in range(3):
            twkafka.publish_tensors(
                p, topic, sent[i, j], metadata={"from": [i, j]}, codec="shuffle+zstd"
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sub = twkafka.subscribe(Consumer(consumer_config(kafka_bootstrap)), [topic])
    got = {}
    for _ in range(9):
        blob = sub.next_payload(timeout=30)
        got[tuple(tw.open(blob).metadata["from"])] = tw.decode(blob)
    assert got.keys() == sent.keys() and all(same(got[k], sent[k]) for k in sent)
    with pytest.raises(TimeoutError):
        sub.next_payload(timeout=0.5)
    sub.close()


def test_two_members_of_a_group_split_the_partitions(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, partitions=2)
    group = f"split-{os.getpid()}-{time.monotonic_ns()}"
    consumers = [Consumer(consumer_config(kafka_bootstrap, group)) for _ in range(2)]
    members = [twkafka.subscribe(c, [topic]) for c in consumers]
    deadline = time.monotonic() + 60
    while not all(c.assignment() for c in consumers):  # both joined: one partition each
        assert time.monotonic() < deadline, "the group did not settle"
        for m in members:
            with pytest.raises(TimeoutError):
                m.next_payload(timeout=0.2)
    assert sorted(tp.partition for c in consumers for tp in c.assignment()) == [0, 1]
    p = producer(kafka_bootstrap)
    for i in range(8):  # ids fixed so that the keys land on both partitions
        twkafka.publish(
            p, topic, tw.encode(model(i, 300_000), metadata={"i": i}), payload_id=bytes([i]) * 16
        )
    got: list[list[int]] = [[], []]
    while sum(map(len, got)) < 8 and time.monotonic() < deadline:
        for n, m in enumerate(members):
            try:
                got[n].append(tw.open(m.next_payload(timeout=0.3)).metadata["i"])
            except TimeoutError:
                pass
    assert sorted(got[0] + got[1]) == list(range(8)), got
    assert got[0] and got[1], f"one member had every payload: {got}"
    for m in members:
        m.close()


CONSUMER = textwrap.dedent(
    """
    import json, sys
    from confluent_kafka import Consumer
    from tensorwire.transport import kafka as twkafka
    sys.path.insert(0, sys.argv[4])
    from kafka_broker import consumer_config

    class FileSet(set):
        # content ids of the payloads finished with, kept in a file across restarts
        def __init__(self, path):
            self.path = path
            try:
                super().__init__(open(path).read().split())
            except FileNotFoundError:
                super().__init__()
        def add(self, value):
            super().add(value)
            with open(self.path, "a") as f:
                f.write(value + "\\n")

    bootstrap, group, topic, seen_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5]
    # A short session: the killed member's partitions go to its restart sooner.
    config = consumer_config(bootstrap, group, **{"session.timeout.ms": 6000,
                                                  "heartbeat.interval.ms": 500})
    sub = twkafka.subscribe(Consumer(config), [topic], seen=FileSet(seen_path))
    wait = float(sys.argv[6])  # for the first payload; then 3 s for any other
    while True:
        try:
            blob = sub.next_payload(timeout=wait)
        except TimeoutError:
            break
        wait = 3.0
        print(json.dumps({"len": len(blob), "id": blob[32:64].hex()}), flush=True)
    print(json.dumps({"duplicates": sub.duplicates}), flush=True)
    sub.close()
    """
)


def test_consumer_killed_mid_payload_loses_nothing(kafka_bootstrap: str, tmp_path) -> None:
    topic = create_topic(kafka_bootstrap)
    group = f"crash-{os.getpid()}-{time.monotonic_ns()}"
    seen = tmp_path / "seen"
    p = producer(kafka_bootstrap)
    first = tw.encode(model(1, 100_000))
    second = tw.encode(model(2, 3_000_000))  # 12 pieces
    twkafka.publish(p, topic, first)
    pieces = list(tw.chunk(second, twkafka.piece_size(LIMIT)))
    for piece in pieces[:6]:
        p.produce(topic, value=piece, key=chunk_info(piece)["payload_id"].encode())
    assert p.flush(10) == 0

    def start(wait: float) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONSUMER,
                kafka_bootstrap,
                group,
                topic,
                os.path.dirname(__file__),
                str(seen),
                str(wait),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    proc = start(60)
    line = json.loads(proc.stdout.readline())  # the first payload, handed out
    assert line["id"] == tw.open(first).content_id
    # It now waits for the second payload, half of which it has; let it read that half
    # and commit what it can (the interval is 1 s), then kill it.
    time.sleep(2.5)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    before = committed(kafka_bootstrap, group, topic)[0]
    n_first = len(list(tw.chunk(first, twkafka.piece_size(LIMIT))))
    assert before <= n_first, "an offset of the unfinished payload was committed"
    for piece in pieces[6:]:
        p.produce(topic, value=piece, key=chunk_info(piece)["payload_id"].encode())
    assert p.flush(10) == 0

    proc = start(45)  # the group waits out the killed member's session first
    out, _ = proc.communicate(timeout=90)
    lines = [json.loads(x) for x in out.splitlines()]
    delivered = [x["id"] for x in lines if "id" in x]
    assert delivered == [tw.open(second).content_id], lines
    # The first payload, re-read if its offsets were not committed in time, is skipped.
    assert lines[-1]["duplicates"] == (1 if before < n_first else 0)
    assert committed(kafka_bootstrap, group, topic)[0] == n_first + len(pieces)


def test_bad_pieces_among_good_ones(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    p = producer(kafka_bootstrap)
    good = tw.encode(model(3, 1_000_000))
    pieces = list(tw.chunk(good, twkafka.piece_size(LIMIT)))
    flipped = bytearray(pieces[1])
    flipped[len(flipped) // 2] ^= 1
    bad = [b"", b"not a piece", bytes(flipped), pieces[2][:100]]
    for n, piece in enumerate(pieces):
        p.produce(topic, value=piece)
        if n < len(bad):
            p.produce(topic, value=bad[n])
    assert p.flush(10) == 0
    errors: list[tuple[type, int]] = []
    config = consumer_config(kafka_bootstrap)
    sub = twkafka.subscribe(
        Consumer(config), [topic], on_error=lambda e, msg: errors.append((type(e), msg.offset()))
    )
    assert sub.next_payload(timeout=30) == good
    sub.commit()
    assert len(errors) == len(bad) and all(issubclass(t, tw.TensorwireError) for t, _ in errors)
    # Refused pieces hold nothing back: everything was committed.
    assert committed(kafka_bootstrap, config["group.id"], topic) == [len(pieces) + len(bad)]
    sub.close()


def test_an_unfinished_payload_holds_its_offsets_back(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    p = producer(kafka_bootstrap)
    done = tw.encode(model(4, 10_000))
    unfinished = list(tw.chunk(tw.encode(model(5, 1_000_000)), twkafka.piece_size(LIMIT)))
    twkafka.publish(p, topic, done)
    p.produce(topic, value=unfinished[0])
    twkafka.publish(p, topic, done + b"")  # the same bytes again: its content id was seen
    after = tw.encode(model(6, 10_000))
    twkafka.publish(p, topic, after)
    assert p.flush(10) == 0
    config = consumer_config(kafka_bootstrap)
    sub = twkafka.subscribe(Consumer(config), [topic], commit_interval=0.0)
    assert sub.next_payload(timeout=30) == done
    assert sub.next_payload(timeout=30) == after
    assert sub.duplicates == 1
    sub.commit()
    # Offset 1 is the unfinished payload's first piece: nothing from it on is committed.
    assert committed(kafka_bootstrap, config["group.id"], topic) == [1]
    sub.close()


def test_keyed_subscription_refuses_unkeyed_pieces(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    k = os.urandom(32)
    p = producer(kafka_bootstrap)
    twkafka.publish_tensors(p, topic, model(7, 10_000), metadata={"forged": True})
    sent = model(8, 400_000)
    signer = tw.generate_signing_key()
    twkafka.publish_tensors(p, topic, sent, key=k, signing_key=signer)
    errors: list[BaseException] = []
    sub = twkafka.subscribe(
        Consumer(consumer_config(kafka_bootstrap)),
        [topic],
        key=k,
        trusted_keys=[tw.public_key(signer)],
        on_error=lambda e, msg: errors.append(e),
    )
    blob = sub.next_payload(timeout=30)
    assert same(tw.decode(blob, key=k, trusted_keys=[tw.public_key(signer)]), sent)
    assert errors and all(isinstance(e, tw.AuthenticationError) for e in errors)
    with pytest.raises(tw.InputError, match="not both"):
        twkafka.subscribe(
            Consumer(consumer_config(kafka_bootstrap)), [topic], key=k, reassembler=tw.Reassembler()
        )
    sub.close()


def test_undeliverable_pieces_raise(kafka_bootstrap: str) -> None:
    # A broker that is not there: the pieces time out and publishing says so.
    p = Producer({"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 500})
    with pytest.raises(KafkaException, match="not delivered|timed out"):
        twkafka.publish(p, "nowhere", tw.encode(model(9, 1000)), timeout=5)


def test_kafka_rounds_example(kafka_bootstrap: str) -> None:
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "kafka_rounds.py")
    done = subprocess.run(
        [sys.executable, example, "--bootstrap", kafka_bootstrap, "--clients", "3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "one md5list message through a 1 MB limit: no: MSG_SIZE_TOO_LARGE" in out, out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"])]
    assert [r[0] for r in rows] == ["0", "1", "2"], out
    assert all(float(r[-3]) < 0.02 for r in rows), out  # updates: < 2% of the seed's bytes
    assert "final model equal to the same rounds run without a broker" in out, out


def test_pieces_sent_twice_and_out_of_order_make_one_payload(kafka_bootstrap: str) -> None:
    # What a producer retrying after lost acknowledgements, or two producers resending
    # the same payload, put on the log: every piece twice, in no particular order.
    topic = create_topic(kafka_bootstrap)
    blob = tw.encode(model(11, 1_500_000))
    pieces = list(tw.chunk(blob, twkafka.piece_size(LIMIT)))
    p = producer(kafka_bootstrap)
    for piece in [*reversed(pieces), *pieces[::2], *pieces[1::2]]:
        p.produce(topic, value=piece, key=chunk_info(piece)["payload_id"].encode())
    assert p.flush(10) == 0
    sub = twkafka.subscribe(Consumer(consumer_config(kafka_bootstrap)), [topic])
    assert sub.next_payload(timeout=30) == blob
    with pytest.raises(TimeoutError):
        sub.next_payload(timeout=1.0)
    assert sub.reassembler.stats["duplicates"] == len(pieces)
    sub.close()


def test_an_idempotent_producer_publishes(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    tensors = model(12, 600_000)
    p = producer(kafka_bootstrap, **{"enable.idempotence": True, "acks": "all"})
    twkafka.publish_tensors(p, topic, tensors)
    sub = twkafka.subscribe(Consumer(consumer_config(kafka_bootstrap)), [topic])
    assert same(tw.decode(sub.next_payload(timeout=30)), tensors)
    sub.close()


def test_a_member_joining_mid_stream_loses_and_repeats_nothing(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, partitions=2)
    group = f"join-{os.getpid()}-{time.monotonic_ns()}"
    p = producer(kafka_bootstrap)
    blobs = [tw.encode(model(i, 200_000 * (1 + 2 * (i == 8))), metadata={"i": i}) for i in range(9)]
    for i, blob in enumerate(blobs[:8]):
        twkafka.publish(p, topic, blob, payload_id=bytes([i]) * 16)
    last = list(tw.chunk(blobs[8], twkafka.piece_size(LIMIT) // 2, payload_id=bytes([8]) * 16))
    assert len(last) == 5
    for piece in last[:2]:  # the ninth is half there when the second member joins
        p.produce(topic, value=piece, key=(bytes([8]) * 16).hex().encode())
    assert p.flush(10) == 0
    consumers = [Consumer(consumer_config(kafka_bootstrap, group)) for _ in range(2)]
    first = twkafka.subscribe(consumers[0], [topic])
    got: list[list[int]] = [[], []]
    for _ in range(3):  # alone: it has both partitions
        got[0].append(tw.open(first.next_payload(timeout=30)).metadata["i"])
    second = twkafka.subscribe(consumers[1], [topic])
    members = [first, second]
    deadline = time.monotonic() + 60
    published_rest = False
    while sum(map(len, got)) < 9 and time.monotonic() < deadline:
        if not published_rest and consumers[1].assignment():
            for piece in last[2:]:
                p.produce(topic, value=piece, key=(bytes([8]) * 16).hex().encode())
            assert p.flush(10) == 0
            published_rest = True
        for n, m in enumerate(members):
            try:
                got[n].append(tw.open(m.next_payload(timeout=0.3)).metadata["i"])
            except TimeoutError:
                pass
    for m in members:  # nothing more comes to either
        with pytest.raises(TimeoutError):
            m.next_payload(timeout=1.0)
    assert sorted(got[0] + got[1]) == list(range(9)), got
    # The group did rebalance: one partition each, the first one's revoked on the way.
    assert published_rest and all(len(c.assignment()) == 1 for c in consumers)
    for m in members:
        m.close()


def test_manual_commits_and_the_revoke_hook(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, partitions=2)
    group = f"manual-{os.getpid()}-{time.monotonic_ns()}"
    p = producer(kafka_bootstrap)
    for i in range(4):
        twkafka.publish(p, topic, tw.encode(model(i, 1000)), payload_id=bytes([i]) * 16)
    revoked: list[list[tuple[str, int]]] = []
    consumers = [Consumer(consumer_config(kafka_bootstrap, group)) for _ in range(2)]
    first = twkafka.subscribe(consumers[0], [topic], commit_interval=None,
                              on_revoke=revoked.append)  # fmt: skip
    for _ in range(4):
        first.next_payload(timeout=30)
    with pytest.raises(TimeoutError):
        first.next_payload(timeout=1.5)  # past the default interval: still nothing
    assert committed(kafka_bootstrap, group, topic, 2) == [-1001, -1001]  # OFFSET_INVALID
    first.commit()
    ends = [high_water(kafka_bootstrap, topic, n) for n in range(2)]
    assert committed(kafka_bootstrap, group, topic, 2) == ends
    second = twkafka.subscribe(consumers[1], [topic])
    deadline = time.monotonic() + 60
    while not consumers[1].assignment():
        assert time.monotonic() < deadline, "the group did not settle"
        for m in (first, second):
            with pytest.raises(TimeoutError):
                m.next_payload(timeout=0.2)
    assert revoked and {t for t, _ in revoked[0]} == {topic}, revoked
    first.close()
    second.close()


def test_timeout_zero_takes_what_has_arrived(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap)
    blob = tw.encode(model(13, 1000))
    twkafka.publish(producer(kafka_bootstrap), topic, blob)
    sub = twkafka.subscribe(Consumer(consumer_config(kafka_bootstrap)), [topic])
    deadline = time.monotonic() + 30
    while True:  # each call one look, never blocking for long
        t = time.monotonic()
        try:
            assert sub.next_payload(timeout=0) == blob
            break
        except TimeoutError:
            assert time.monotonic() - t < 0.5 and time.monotonic() < deadline
    with pytest.raises(TimeoutError):
        sub.next_payload(timeout=0)
    sub.close()


def test_kafka_sharded_round_example(kafka_bootstrap: str) -> None:
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "kafka_sharded_round.py")
    done = subprocess.run(
        [sys.executable, example, "--bootstrap", kafka_bootstrap],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "20 updates counted once each" in done.stdout, done.stdout
    assert "result equal to one tw.aggregate over the same updates" in done.stdout, done.stdout
