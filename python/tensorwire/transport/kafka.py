"""Payloads through Kafka (``confluent-kafka``), in pieces under ``message.max.bytes``.

>>> from confluent_kafka import Consumer, Producer                      # doctest: +SKIP
>>> from tensorwire.transport import kafka as twkafka
>>> producer = Producer({"bootstrap.servers": "127.0.0.1:9092"})
>>> twkafka.publish_tensors(producer, "models", {"w": weights}, codec="shuffle+zstd")
>>> consumer = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": "server",
...                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
>>> updates = twkafka.subscribe(consumer, ["models"])
>>> tw.decode(updates.next_payload(timeout=10))["w"]

Each piece is one record, keyed by its payload's id, so the pieces of one payload share a
partition; pieces are sized to ``max_bytes`` (the producer's ``message.max.bytes``)
minus :data:`RECORD_OVERHEAD`. Publishing returns once the broker acknowledged every
piece and raises ``confluent_kafka.KafkaException`` if any piece was not delivered.

Delivery is at least once and nothing is lost to a crash: the subscription commits a
partition's offset only up to the first piece of the oldest payload there that is not
both complete and finished with by the application (it is finished with once the next
payload is asked for, or at :meth:`PayloadSubscription.commit`). A consumer restarted
after a crash re-reads what it had not finished; a payload it had already handed out is
then skipped by its content id when the ``seen`` set it was given remembers it. The
consumer must be made with ``"enable.auto.commit": False``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, MutableSet
from typing import Any, Optional

from .. import _core
from .._chunk import Chunks, Reassembler, chunk, chunk_info, encode_chunks
from .._errors import InputError, TensorwireError
from .._extras import require
from .._trust import Keys
from . import _reassembler

__all__ = [
    "DEFAULT_MAX_BYTES",
    "PayloadSubscription",
    "RECORD_OVERHEAD",
    "RecentIds",
    "piece_size",
    "publish",
    "publish_chunks",
    "publish_tensors",
    "subscribe",
]

log = logging.getLogger("tensorwire.transport.kafka")

#: librdkafka's (and Kafka's) default ``message.max.bytes``.
DEFAULT_MAX_BYTES = 1_000_000
#: Bytes of a record left for what is not the piece: the record batch's header (61), the
#: record's own framing (at most 21), its key (32) and headers, with room to spare.
RECORD_OVERHEAD = 512

# Past this many payloads tracked, those the reassembler dropped are forgotten at once.
_PRUNE_AT = 4096

ErrorHandler = Callable[[TensorwireError, Any], None]
Partition = tuple[str, int]
RevokeHandler = Callable[[list[Partition]], None]


def _kafka() -> Any:
    return require("kafka", "tensorwire.transport.kafka")


def piece_size(max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """The largest piece that fits a record under ``max_bytes`` (``message.max.bytes``)."""
    size = max_bytes - RECORD_OVERHEAD
    if size < 2 * _core.CHUNK_HEADER_LEN:
        raise InputError(f"max_bytes={max_bytes} leaves no room for a piece after the record")
    return size


def publish_chunks(producer: Any, topic: str, chunks: Chunks, *, timeout: float = 60.0) -> str:
    """Produce every chunk of ``chunks`` to ``topic``, keyed by the payload id, and wait
    up to ``timeout`` seconds for the broker to acknowledge them all; returns the payload
    id (hex). Raises ``confluent_kafka.KafkaException`` naming the payload when a piece
    was not delivered or the wait ran out. Pieces are produced as they are made, so the
    producer's queue (``queue.buffering.max.kbytes``) bounds the memory held."""
    kafka = _kafka()
    failed: list[Any] = []

    def report(error: Any, _msg: Any) -> None:
        if error is not None:
            failed.append(error)

    key = chunks.payload_id.encode()
    deadline = time.monotonic() + timeout
    for piece in chunks:
        while True:
            try:
                producer.produce(topic, value=piece, key=key, on_delivery=report)
                break
            except BufferError:  # the local queue is full: let it drain
                if time.monotonic() > deadline:
                    failed.append(kafka.KafkaError(kafka.KafkaError._QUEUE_FULL))
                    break
                producer.poll(0.05)
        producer.poll(0)
        if failed:
            break
    left = producer.flush(max(0.0, deadline - time.monotonic()))
    if failed or left:
        first = failed[0] if failed else kafka.KafkaError(kafka.KafkaError._MSG_TIMED_OUT)
        raise kafka.KafkaException(
            kafka.KafkaError(
                first.code(),
                f"payload {chunks.payload_id}: {len(failed)} of {chunks.count} pieces not "
                f"delivered, {left} still queued after {timeout} s: {first.str()}",
            )
        )
    return chunks.payload_id


def publish(
    producer: Any,
    topic: str,
    payload: Any,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    payload_id: Optional[bytes] = None,
    key: Optional[bytes] = None,
    timeout: float = 60.0,
) -> str:
    """Publish ``payload`` (any bytes-like object, usually a tensorwire payload) on
    ``topic`` in pieces that fit ``max_bytes`` (the producer's ``message.max.bytes``),
    each authenticated with ``key`` when one is given (see :func:`tensorwire.chunk`).
    Returns the payload id (hex) once every piece is acknowledged."""
    chunks = chunk(payload, piece_size(max_bytes), payload_id=payload_id, key=key)
    return publish_chunks(producer, topic, chunks, timeout=timeout)


def publish_tensors(
    producer: Any,
    topic: str,
    tensors: Any,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    timeout: float = 60.0,
    **encode_options: Any,
) -> str:
    """Encode ``tensors`` (``encode_options`` as for :func:`tensorwire.encode`) straight
    into pieces (:func:`tensorwire.encode_chunks`, never holding the whole payload) and
    publish them on ``topic``. ``key`` authenticates the payload and every piece,
    ``signing_key`` signs the payload. Returns its id (hex) once every piece is
    acknowledged."""
    chunks = encode_chunks(
        tensors, piece_size(max_bytes), key=key, signing_key=signing_key, **encode_options
    )
    return publish_chunks(producer, topic, chunks, timeout=timeout)


class RecentIds(MutableSet[str]):
    """The last ``maxlen`` ids added, oldest forgotten first: the default ``seen`` set."""

    def __init__(self, maxlen: int = 65536) -> None:
        self.maxlen = maxlen
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, value: str) -> None:
        self._ids[value] = None
        self._ids.move_to_end(value)
        while len(self._ids) > self.maxlen:
            self._ids.popitem(last=False)

    def discard(self, value: str) -> None:
        self._ids.pop(value, None)


def _log_error(error: TensorwireError, msg: Any) -> None:
    log.warning(
        "dropped a piece at %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), error
    )


class PayloadSubscription:
    """Complete, verified payloads (``bytes``) from a consumer's topics.

    ``next_payload(timeout)`` returns the next one, iteration yields them forever. Pieces
    the reassembler refuses (corrupt, forged, over a limit) go to ``on_error(error,
    msg)`` (default: a warning on ``tensorwire.transport.kafka``) and are passed over: one
    bad producer cannot stop the subscription. ``duplicates`` counts payloads skipped
    because their content id was in ``seen``.
    """

    def __init__(
        self,
        consumer: Any,
        reassembler: Reassembler,
        on_error: ErrorHandler,
        seen: MutableSet[str],
        commit_interval: Optional[float],
        on_revoke: Optional[RevokeHandler],
    ) -> None:
        self._consumer = consumer
        self.reassembler = reassembler
        self.seen = seen
        self.duplicates = 0
        self._on_error = on_error
        self._commit_interval = commit_interval
        self._on_revoke = on_revoke
        # Per partition: the offset after the last record read, and the last committed.
        self._read: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        # Pending payload id -> the offset of its first piece, per partition.
        self._pending_at: dict[str, dict[Partition, int]] = {}
        self._prune_at = _PRUNE_AT
        # Complete payloads not yet handed out, and the one handed out last, with the
        # offsets of their first pieces: committed past only once finished with.
        self._ready: deque[tuple[bytes, str, dict[Partition, int]]] = deque()
        self._handed: dict[Partition, int] = {}
        self._handed_id: Optional[str] = None
        self._last_commit = time.monotonic()

    # -- reading -------------------------------------------------------------------
    def __iter__(self) -> PayloadSubscription:
        return self

    def __next__(self) -> bytes:
        return self._next(None)

    def next_payload(self, timeout: Optional[float] = None) -> bytes:
        """The next complete payload; ``TimeoutError`` after ``timeout`` seconds (0: take
        only what has already arrived). Asking for it marks the previous one as finished
        with (its offsets may be committed)."""
        return self._next(timeout)

    def _finished(self) -> None:
        """The payload handed out last is finished with: remembered in ``seen``, and its
        offsets no longer held back."""
        if self._handed_id is not None:
            self.seen.add(self._handed_id)
        self._handed, self._handed_id = {}, None

    def _next(self, timeout: Optional[float]) -> bytes:
        self._finished()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 and timeout:
                raise TimeoutError(f"no complete payload within {timeout} s")
            # Block for one record at most `wait`, then take what else is already here
            # (consume() alone would wait out its timeout for a full batch).
            first = self._consumer.poll(0.1 if left is None else max(0.0, min(0.1, left)))
            if first is not None:
                for msg in (first, *self._consumer.consume(num_messages=255, timeout=0)):
                    self._take(msg)
            self._commit(force=False)
            if not self._ready and timeout is not None and timeout <= 0:
                raise TimeoutError("no complete payload has arrived")  # timeout=0: one look
        blob, self._handed_id, self._handed = self._ready.popleft()
        return blob

    def _take(self, msg: Any) -> None:
        error = msg.error()
        if error is not None:
            if error.code() == _kafka().KafkaError._PARTITION_EOF:
                return
            if error.fatal():
                raise _kafka().KafkaException(error)
            log.warning("consumer error: %s", error)
            return
        where = (msg.topic(), msg.partition())
        offset = msg.offset()
        self._read[where] = offset + 1
        value = msg.value()
        try:
            blob = self.reassembler.add(value)
        except TensorwireError as e:
            self._on_error(e, msg)
            return
        info = chunk_info(value, check_crc=False)  # accepted: the CRC was just checked
        pid = info["payload_id"]
        if len(self._pending_at) >= self._prune_at and pid not in self._pending_at:
            self._prune()  # a flood of one-piece payloads: keep only what is pending
            self._prune_at = max(_PRUNE_AT, 2 * len(self._pending_at))
        firsts = self._pending_at.setdefault(pid, {})
        firsts.setdefault(where, offset)
        if blob is None:
            return
        del self._pending_at[pid]
        ident = _core.preamble_content_id(blob) if info["kind"] != "bytes" else None
        ident = ident or info["digest"]
        if (
            ident in self.seen
            or ident == self._handed_id
            or any(i == ident for _, i, _ in self._ready)
        ):
            self.duplicates += 1
            log.info("skipped payload %s: content id %s was handed out before", pid, ident)
            return
        self._ready.append((blob, ident, firsts))

    # -- committing ----------------------------------------------------------------
    def _safe_offsets(
        self, partitions: Optional[Iterable[Partition]] = None
    ) -> dict[Partition, int]:
        """Per partition, the offset below which everything is finished with."""
        self._prune()
        wanted = set(self._read) if partitions is None else set(partitions) & set(self._read)
        safe = {where: self._read[where] for where in wanted}
        pins = [*self._pending_at.values(), *(f for _, _, f in self._ready), self._handed]
        for firsts in pins:
            for where, offset in firsts.items():
                if where in safe and offset < safe[where]:
                    safe[where] = offset
        return safe

    def _prune(self) -> None:
        """Forget the first offsets of payloads the reassembler no longer holds (expired,
        evicted, or pieces of one already finished)."""
        pending = {p[0] for p in self.reassembler.pending()}
        for pid in [pid for pid in self._pending_at if pid not in pending]:
            del self._pending_at[pid]

    def _commit(self, force: bool, partitions: Optional[Iterable[Partition]] = None) -> None:
        now = time.monotonic()
        interval = self._commit_interval
        if not force and (interval is None or now - self._last_commit < interval):
            return
        self._last_commit = now
        kafka = _kafka()
        moved = [
            kafka.TopicPartition(topic, partition, offset)
            for (topic, partition), offset in self._safe_offsets(partitions).items()
            if self._committed.get((topic, partition)) != offset
        ]
        if not moved:
            return
        self._consumer.commit(offsets=moved, asynchronous=False)
        for tp in moved:
            self._committed[(tp.topic, tp.partition)] = tp.offset

    def commit(self) -> None:
        """Mark the payload handed out last as finished with and commit every offset that
        is safe to commit now (the subscription also does so on its own, at most every
        ``commit_interval`` seconds while it reads, unless that is None)."""
        self._finished()
        self._commit(force=True)

    def close(self) -> None:
        """:meth:`commit`, then close the consumer (it leaves its group)."""
        self.commit()
        self._consumer.close()

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        if self._on_revoke is not None:
            self._on_revoke(sorted(gone))
        try:
            self._commit(force=True, partitions=gone)
        except _kafka().KafkaException as e:  # the group moved on: the next owner re-reads
            log.warning("could not commit revoked partitions: %s", e)
        self._forget(gone)

    def _lost(self, _consumer: Any, partitions: list[Any]) -> None:
        # Already someone else's: nothing may be committed for them.
        self._forget({(tp.topic, tp.partition) for tp in partitions})

    def _forget(self, gone: set[Partition]) -> None:
        # Their new owner reads on from what was committed; what was read here from them
        # and not handed out is dropped, so it is not handed out twice.
        self._ready = deque(entry for entry in self._ready if not set(entry[2]) & gone)
        for where in gone:
            self._read.pop(where, None)
            self._committed.pop(where, None)


def subscribe(
    consumer: Any,
    topics: Iterable[str],
    *,
    reassembler: Optional[Reassembler] = None,
    on_error: Optional[ErrorHandler] = None,
    seen: Optional[MutableSet[str]] = None,
    commit_interval: Optional[float] = 1.0,
    on_revoke: Optional[RevokeHandler] = None,
    key: Optional[bytes] = None,
    keys: Optional[Keys] = None,
    trusted_keys: Any = None,
) -> PayloadSubscription:
    """Subscribe ``consumer`` (a ``confluent_kafka.Consumer`` made with
    ``"enable.auto.commit": False``) to ``topics`` and reassemble the pieces read there.

    ``reassembler`` sets the limits (default: ``tensorwire.Reassembler(key=key,
    keys=keys, trusted_keys=trusted_keys)``; the trust arguments mean what they mean for
    :func:`tensorwire.transport.nats.subscribe`). ``seen`` holds the content ids of the
    payloads handed out (default: the last 65,536, in memory); pass a set kept across
    restarts to skip, after a crash, a payload finished with but not yet committed (a
    payload is added to it once finished with, as its offsets are released). The
    content id is a tensorwire payload's ``content_id``, or for other bytes the blake3
    digest its pieces carry. Two members of one consumer group split the partitions;
    when partitions are taken away, what is safe is committed first.

    ``commit_interval`` (seconds) is how often the subscription commits on its own while
    it reads; None: only at :meth:`~PayloadSubscription.commit` and ``close()``, for an
    application that must first make what it took from the payloads durable (a sharded
    aggregator publishing its partial). ``on_revoke(partitions)``, given the ``(topic,
    partition)`` pairs being taken away, runs before what is safe for them is committed:
    the last moment to finish with what was read from them.
    """
    reassembler = _reassembler(reassembler, key=key, keys=keys, trusted_keys=trusted_keys)
    subscription = PayloadSubscription(
        consumer,
        reassembler,
        on_error or _log_error,
        seen if seen is not None else RecentIds(),
        commit_interval,
        on_revoke,
    )
    consumer.subscribe(list(topics), on_revoke=subscription._revoked, on_lost=subscription._lost)
    return subscription
