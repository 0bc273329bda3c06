"""Resending lost pieces over an at-most-once transport (core NATS): the sender's
:class:`RetransmitWindow` of recently published pieces, the request a receiver sends for
the pieces it lacks (:func:`retransmit_request`, docs/FORMAT.md "Retransmit requests"),
and the receiver's schedule of such requests (:class:`RetransmitRequests`).

A request travels as a one-piece chunk, so ``key=`` authenticates it with the same piece
tag as the payloads, and a replayed request is ignored as a duplicate. Nothing here knows
a broker: ``tensorwire.transport.nats`` moves the requests and the pieces.

>>> import tensorwire as tw
>>> from tensorwire.transport import retransmit
>>> chunks = tw.chunk(bytes(10_000), 1_000)
>>> pieces = list(chunks)
>>> window = retransmit.RetransmitWindow()
>>> window.keep(chunks.payload_id, pieces)          # the sender keeps what it published
True
>>> r = tw.Reassembler()                            # the receiver lost pieces 3 and 5
>>> [r.add(p) for i, p in enumerate(pieces) if i not in (3, 5)][-1] is None
True
>>> ((pid, received, count, idle, missing),) = r.missing()
>>> missing
[3, 5]
>>> resent = window.answer(retransmit.retransmit_request(pid, count, missing))
>>> [r.add(p) for p in resent][-1] == bytes(10_000)
True
"""

from __future__ import annotations

import math
import struct
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from .._chunk import CHUNK_HEADER_LEN, Chunks, Reassembler, chunk
from .._errors import FormatError, InputError, IntegrityError, TensorwireError
from .._trust import Keys

__all__ = [
    "MAX_REQUEST_INDICES",
    "MAX_REQUEST_LEN",
    "RetransmitRequests",
    "RetransmitWindow",
    "parse_request",
    "retransmit_request",
]

#: Most chunk indices one request names (a receiver missing more asks again once these
#: arrived).
MAX_REQUEST_INDICES = 1024
_MAGIC = b"\x89TWX"
_VERSION = 1
_HEAD = struct.Struct("<4sB3s16sII")  # magic, version, reserved, payload id, count, n
_MAX_BODY = _HEAD.size + 4 * MAX_REQUEST_INDICES
#: Longest request, as sent: a chunk header, the longest body and a piece tag.
MAX_REQUEST_LEN = CHUNK_HEADER_LEN + _MAX_BODY + 16
#: What a window charges per piece beyond its bytes (the bytes object, its list slot, its
#: resend time) and per payload.
_PIECE_OVERHEAD = 64
_ENTRY_OVERHEAD = 512


def _seconds(value: Any) -> bool:
    """Whether ``value`` is a finite non-negative number of seconds."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def _payload_id(payload_id: Any) -> bytes:
    try:
        raw = bytes.fromhex(payload_id)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 16:
        raise InputError(f"payload_id must be 32 hex digits, got {payload_id!r}")
    return raw


def retransmit_request(
    payload_id: str, count: int, missing: Sequence[int], *, key: Optional[bytes] = None
) -> bytes:
    """The request, one chunk of at most :data:`MAX_REQUEST_LEN` bytes, that asks the
    sender of payload ``payload_id`` (hex), cut into ``count`` pieces, to resend the
    pieces ``missing`` (1 to :data:`MAX_REQUEST_INDICES` indices, ascending, each below
    ``count``; what :meth:`tensorwire.Reassembler.missing` reports). With ``key`` the
    chunk is authenticated with it, for a window made with the same key."""
    indices = [int(i) for i in missing]
    if not 1 <= len(indices) <= MAX_REQUEST_INDICES:
        raise InputError(f"a request names 1 to {MAX_REQUEST_INDICES} pieces, got {len(indices)}")
    if not 1 <= count < 1 << 32:
        raise InputError(f"count must be 1 to 2**32 - 1, got {count}")
    if indices[0] < 0 or indices[-1] >= count or any(b <= a for a, b in zip(indices, indices[1:])):
        raise InputError(f"missing must be ascending indices below count={count}")
    head = _HEAD.pack(_MAGIC, _VERSION, bytes(3), _payload_id(payload_id), count, len(indices))
    body = head + struct.pack(f"<{len(indices)}I", *indices)
    return next(chunk(body, MAX_REQUEST_LEN, key=key))


def parse_request(body: bytes) -> tuple[str, int, list[int]]:
    """The payload id (hex), piece count and piece indices of a request's body (the
    payload of its chunk), checked: ``FormatError`` unless it is exactly a request as
    docs/FORMAT.md specifies, its indices ascending and below its count."""
    if len(body) < _HEAD.size or len(body) > _MAX_BODY:
        raise FormatError(
            f"a retransmit request is {_HEAD.size} to {_MAX_BODY} bytes, got {len(body)}"
        )
    magic, version, reserved, pid, count, n = _HEAD.unpack_from(body)
    if magic != _MAGIC or version != _VERSION or reserved != bytes(3):
        raise FormatError("not a retransmit request of version 1 (magic, version, reserved bytes)")
    if not 1 <= n <= MAX_REQUEST_INDICES or len(body) != _HEAD.size + 4 * n:
        raise FormatError(f"a request of {len(body)} bytes cannot name {n} pieces")
    indices = list(struct.unpack_from(f"<{n}I", body, _HEAD.size))
    if any(b <= a for a, b in zip(indices, indices[1:])) or indices[-1] >= count:
        raise FormatError(f"the pieces named are not ascending indices below count={count}")
    return pid.hex(), count, indices


@dataclass
class _Held:
    pieces: list[bytes]
    resent: array  # type: ignore[type-arg]  # when each piece was last resent
    kept_at: float
    cost: int


class RetransmitWindow:
    """The pieces of the payloads a sender published recently, kept to answer
    retransmit requests by handing back exactly the pieces asked for.

    Bounded by ``max_bytes`` (default 256 MiB; each piece is charged its length and 64
    bytes, each payload 512 more) and ``max_age`` (seconds, default 60, the
    reassembler's default timeout): the oldest payloads are dropped first, and a payload
    that alone exceeds ``max_bytes`` is not kept. A piece is resent at most once per
    ``resend_interval`` seconds (default 0.2): the resent piece reaches every receiver
    of the subject, so requests from several of them are served by one resend, and a
    stranger's requests cannot make the sender send more than the window once per
    interval. With ``key=`` (or ``keys=``) only requests authenticated with one of the
    keys are answered; use it wherever strangers can publish requests.

    A request is hostile input: it is refused before anything is looked up unless it is
    one chunk of at most :data:`MAX_REQUEST_LEN` bytes that passes the chunk checks (and
    the tag check, with keys) and holds a well-formed request; answering it allocates
    nothing beyond its at most :data:`MAX_REQUEST_INDICES` indices and a list of
    references to pieces the window already holds.
    """

    def __init__(
        self,
        *,
        max_bytes: int = 256 << 20,
        max_age: float = 60.0,
        resend_interval: float = 0.2,
        key: Optional[bytes] = None,
        keys: Optional[Keys] = None,
    ) -> None:
        if not (_seconds(max_age) and max_age > 0):
            raise InputError(f"max_age must be positive seconds, got {max_age!r}")
        if not _seconds(resend_interval):
            raise InputError(f"resend_interval must be seconds, got {resend_interval!r}")
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise InputError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.max_age = float(max_age)
        self.resend_interval = float(resend_interval)
        trust = {n: v for n, v in (("key", key), ("keys", keys)) if v is not None}
        # One-piece chunks only (max_pending_bytes=0 refuses any piece of a longer
        # payload, holding nothing); a replay within max_age is a duplicate.
        self._requests = Reassembler(
            max_payload_bytes=_MAX_BODY, max_pending_bytes=0, when_full="refuse",
            timeout=self.max_age, **trust,
        )  # fmt: skip
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self.held_bytes = 0
        #: Counters: payloads kept and not kept (too large), requests answered, refused
        #: (malformed, forged, out of range), replayed, for payloads not held (unknown),
        #: and pieces resent.
        self.stats = dict.fromkeys(
            ["kept", "too_large", "requests", "refused", "replayed", "unknown", "resent"], 0
        )

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, payload_id: object) -> bool:
        return payload_id in self._held

    @property
    def key_ids(self) -> list[str]:
        """Ids of the keys requests must be authenticated with (empty: any request)."""
        return self._requests.key_ids

    def _drop_old(self, now: float) -> None:
        while self._held:
            pid, held = next(iter(self._held.items()))
            if now - held.kept_at < self.max_age:
                break
            self._forget(pid)

    def _forget(self, payload_id: str) -> None:
        self.held_bytes -= self._held.pop(payload_id).cost

    def keeping(self, chunks: Chunks) -> Iterator[bytes]:
        """Yield the pieces of ``chunks`` (what :func:`tensorwire.chunk` or
        :func:`tensorwire.encode_chunks` return) while collecting them by index, and
        :meth:`keep` them once the last was yielded; collecting stops as soon as they
        exceed ``max_bytes``, so a payload too large for the window is never held whole
        here."""
        held: Optional[list[bytes]] = [b""] * chunks.count
        cost = _ENTRY_OVERHEAD
        while (index := chunks.next_index) is not None:
            piece = next(chunks)
            if held is not None:
                cost += len(piece) + _PIECE_OVERHEAD
                if cost > self.max_bytes:
                    held = None
                else:
                    held[index] = piece
            yield piece
        if held is None:
            self.stats["too_large"] += 1
        else:
            self.keep(chunks.payload_id, held)

    def keep(
        self, payload_id: str, pieces: Sequence[bytes], *, now: Optional[float] = None
    ) -> bool:
        """Keep ``pieces`` (all of them, in index order) of the payload ``payload_id``
        (hex), dropping the oldest payloads to make room. Returns
        whether they are kept (False: alone they exceed ``max_bytes``). The pieces are
        held as they are, not copied."""
        now = time.monotonic() if now is None else now
        _payload_id(payload_id)
        pieces = list(pieces)
        if payload_id in self._held:
            self._forget(payload_id)
        self._drop_old(now)
        cost = _ENTRY_OVERHEAD + sum(len(p) + _PIECE_OVERHEAD for p in pieces)
        if cost > self.max_bytes:
            self.stats["too_large"] += 1
            return False
        while self.held_bytes + cost > self.max_bytes:
            self._forget(next(iter(self._held)))
        resent = array("d", [-math.inf]) * len(pieces)
        self._held[payload_id] = _Held(pieces, resent, now, cost)
        self.held_bytes += cost
        self.stats["kept"] += 1
        return True

    def answer(self, request: Any, *, now: Optional[float] = None) -> list[bytes]:
        """The pieces ``request`` (a chunk made by :func:`retransmit_request`) asks for,
        to publish again: those the window holds and did not resend in the last
        ``resend_interval`` seconds. ``[]`` for a replayed request, or one for a payload
        not held (never kept, or dropped) or cut into another number of pieces. A
        malformed, forged or out-of-range request raises ``FormatError``,
        ``IntegrityError`` or ``AuthenticationError`` and changes nothing."""
        now = time.monotonic() if now is None else now
        try:
            size = memoryview(request).nbytes
            if size > MAX_REQUEST_LEN:
                raise FormatError(
                    f"a retransmit request is at most {MAX_REQUEST_LEN} bytes, got {size}"
                )
            body = self._requests.add(request)
            if body is None:
                self.stats["replayed"] += 1
                return []
            pid, count, indices = parse_request(body)
        except TypeError as e:
            self.stats["refused"] += 1
            raise InputError(f"a retransmit request must be bytes-like: {e}") from None
        except TensorwireError:
            self.stats["refused"] += 1
            raise
        self.stats["requests"] += 1
        self._drop_old(now)
        held = self._held.get(pid)
        if held is None or len(held.pieces) != count:
            self.stats["unknown"] += 1
            return []
        due = [i for i in indices if now - held.resent[i] >= self.resend_interval]
        for i in due:
            held.resent[i] = now
        self.stats["resent"] += len(due)
        return [held.pieces[i] for i in due]


@dataclass
class _Asked:
    received: int
    sent: int = 0
    at: float = -math.inf
    given_up: bool = False


class RetransmitRequests:
    """A receiver's schedule of retransmit requests, for the payloads of
    ``reassembler``: one that got no new piece for ``nack_after`` seconds (default 1) is
    asked for (its lowest :data:`MAX_REQUEST_INDICES` missing pieces), again every
    ``nack_after`` seconds while nothing new arrives, at most ``retries`` times (default
    5); each new piece starts the count afresh. A payload whose last request went
    unanswered for ``nack_after`` seconds is given up: :meth:`due` reports it, once, and
    the reassembler drops it at its timeout, which must leave room for the schedule
    (``(retries + 2) * nack_after`` seconds). Requests are authenticated with ``key``
    when given. Call :meth:`due` at least every ``nack_after / 2`` seconds.

    What cannot be recovered this way: a payload of which no piece arrived (the receiver
    does not know it exists; a one-piece payload is either delivered or unknown), pieces
    the sender no longer holds, and payloads the reassembler dropped (timeout, memory).
    """

    def __init__(
        self,
        reassembler: Reassembler,
        *,
        nack_after: float = 1.0,
        retries: int = 5,
        key: Optional[bytes] = None,
    ) -> None:
        if not (_seconds(nack_after) and nack_after > 0):
            raise InputError(f"nack_after must be positive seconds, got {nack_after!r}")
        if not isinstance(retries, int) or not 0 <= retries <= 100:
            raise InputError(f"retries must be an int from 0 to 100, got {retries!r}")
        if (retries + 2) * nack_after >= reassembler.timeout:
            raise InputError(
                f"(retries + 2) * nack_after = {(retries + 2) * nack_after} s must be below the "
                f"reassembler's timeout of {reassembler.timeout} s"
            )
        self.reassembler = reassembler
        self.nack_after = float(nack_after)
        self.retries = retries
        self._key = key
        self._asked: dict[tuple[str, int], _Asked] = {}

    def due(self, now: Optional[float] = None) -> tuple[list[bytes], list[IntegrityError]]:
        """The requests to send now, and an ``IntegrityError`` for each payload given up
        since the last call (its ``chunk`` attribute: payload id, first missing index,
        count). ``now``: ``time.monotonic()`` seconds, as the reassembler's clock."""
        now = time.monotonic() if now is None else now
        stalled = self.reassembler.missing(
            self.nack_after, (self.retries + 2) * self.nack_after, MAX_REQUEST_INDICES, now
        )
        requests: list[bytes] = []
        lost: list[IntegrityError] = []
        asked: dict[tuple[str, int], _Asked] = {}
        for pid, received, count, _idle, missing in stalled:
            state = self._asked.get((pid, count))
            if state is None or state.received != received:
                state = _Asked(received)
            asked[pid, count] = state
            if now - state.at < self.nack_after or state.given_up:
                continue
            if state.sent < self.retries:
                requests.append(retransmit_request(pid, count, missing, key=self._key))
                state.sent += 1
                state.at = now
            else:
                state.given_up = True
                error = IntegrityError(
                    f"payload {pid} is lost: {count - received} of its {count} pieces still "
                    f"missing after {self.retries} retransmit requests"
                )
                error.chunk = (pid, missing[0], count)
                lost.append(error)
        self._asked = asked
        return requests, lost
