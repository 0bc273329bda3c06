"""Payloads through NATS (``nats-py``, asyncio), chunked under the server's ``max_payload``.

>>> import nats, tensorwire as tw                                      # doctest: +SKIP
>>> from tensorwire.transport import nats as twnats
>>> nc = await nats.connect("nats://127.0.0.1:4222")
>>> sub = await twnats.subscribe(nc, "models")
>>> await twnats.publish_tensors(nc, "models", {"w": weights}, codec="shuffle+zstd")
>>> blob = await sub.next_payload(timeout=10)
>>> tw.decode(blob)["w"]

With a shared 32-byte ``key=`` on both ends (``publish``/``publish_tensors`` and
``subscribe``), every chunk is authenticated and the subscriber drops, before it costs
anything, each chunk not tagged with that key: a forger on the subject cannot make a
payload fail. ``publish_tensors(..., key=, signing_key=)`` also authenticates and signs
the payload itself, and ``subscribe(..., key=, trusted_keys=)`` hands out only payloads
that pass those checks (decode them with the same ``key=``). Do not put subscribers in
a queue group: the chunks of one payload would be spread over its members.

Core NATS delivers at most once. A sender that keeps what it published in a window
(``serve_retransmits``, then ``publish(..., retransmit=)``) resends the pieces that a
receiver with ``subscribe(..., retransmit=True)`` reports missing, on the subject
``request_subject(subject)``; see :mod:`tensorwire.transport.retransmit`:

>>> rt = await twnats.serve_retransmits(nc, "models")                 # doctest: +SKIP
>>> sub = await twnats.subscribe(nc, "models", retransmit=True)
>>> await twnats.publish_tensors(nc, "models", {"w": weights}, retransmit=rt)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from .._chunk import Chunks, Reassembler, chunk, encode_chunks
from .._errors import InputError, TensorwireError
from .._trust import Keys
from . import _reassembler
from .retransmit import RetransmitRequests, RetransmitWindow

__all__ = [
    "PayloadSubscription",
    "Retransmitter",
    "publish",
    "publish_chunks",
    "publish_tensors",
    "request_subject",
    "serve_retransmits",
    "subscribe",
]

log = logging.getLogger("tensorwire.transport.nats")

ErrorHandler = Callable[[TensorwireError, Any], None]

# Chunks at least this large are added to the reassembler on a worker thread.
_OFF_LOOP_BYTES = 64 << 10


def _chunk_limit(nc: Any, max_bytes: Optional[int]) -> int:
    """The chunk size to use: ``max_bytes`` if given, else the server's ``max_payload``."""
    limit = int(nc.max_payload)
    if max_bytes is None:
        return limit
    if max_bytes > limit:
        raise InputError(f"max_bytes={max_bytes} exceeds the server's max_payload of {limit}")
    return max_bytes


def request_subject(subject: str) -> str:
    """The subject on which receivers of ``subject`` send retransmit requests by
    default: ``_tw.retransmit.<subject>`` (outside the data subject's wildcards)."""
    if not subject or any(token in ("*", ">") for token in subject.split(".")):
        raise InputError(
            f"retransmit requests need a literal subject, not {subject!r}: pass request_subject="
        )
    return f"_tw.retransmit.{subject}"


_default_request_subject = request_subject  # for the functions whose argument shadows it


class Retransmitter:
    """Answers retransmit requests for the payloads published on ``subject`` with
    ``retransmit=`` this object: what :func:`serve_retransmits` returns.

    Each request arriving on ``request_subject`` goes to ``window``
    (:meth:`RetransmitWindow.answer`), and the pieces it hands back are published again
    on ``subject``. A request it refuses is handed to ``on_error(error, msg)`` (default:
    logged) and changes nothing.
    """

    def __init__(
        self, nc: Any, subject: str, request_subject: str, window: RetransmitWindow,
        on_error: ErrorHandler,
    ) -> None:  # fmt: skip
        self.subject = subject
        self.request_subject = request_subject
        self.window = window
        self._nc = nc
        self._on_error = on_error
        self._sub: Any = None

    async def _answer(self, msg: Any) -> None:
        try:
            pieces = self.window.answer(msg.data)
        except TensorwireError as e:
            self._on_error(e, msg)
            return
        for piece in pieces:
            await self._nc.publish(self.subject, piece)

    async def stop(self) -> None:
        """Stop answering requests (the window keeps what it holds)."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None


async def serve_retransmits(
    nc: Any,
    subject: str,
    *,
    window: Optional[RetransmitWindow] = None,
    request_subject: Optional[str] = None,
    on_error: Optional[ErrorHandler] = None,
    key: Optional[bytes] = None,
    keys: Optional[Keys] = None,
) -> Retransmitter:
    """Answer the retransmit requests of the subscribers of ``subject`` (sent on
    ``request_subject``, default :func:`request_subject` of it) from ``window`` (default:
    ``RetransmitWindow(key=key, keys=keys)``: 256 MiB, 60 s). Pass the result as
    ``retransmit=`` to :func:`publish`, :func:`publish_tensors` or
    :func:`publish_chunks` on the same subject, which keep what they publish in the
    window. With ``key`` only requests authenticated with it are answered (the
    subscribers' ``key=``)."""
    if window is not None and (key is not None or keys is not None):
        raise InputError("pass key=/keys= or window= (made with its own), not both")
    if window is None:
        window = RetransmitWindow(key=key, keys=keys)
    control = request_subject or _default_request_subject(subject)
    rt = Retransmitter(nc, subject, control, window, on_error or _log_error)
    # Requests are at most 4 KiB: 4 MiB of them queued is a flood, which nats-py drops.
    rt._sub = await nc.subscribe(control, cb=rt._answer, pending_bytes_limit=4 << 20)
    await nc.flush()
    return rt


async def publish_chunks(
    nc: Any, subject: str, chunks: Chunks, *, retransmit: Optional[Retransmitter] = None
) -> str:
    """Publish every chunk of ``chunks`` on ``subject``; returns the payload id (hex).
    With ``retransmit`` (from :func:`serve_retransmits` for this subject) the chunks are
    kept in its window, to be resent when a subscriber reports them missing.

    nats-py buffers outgoing messages and flushes when its buffer fills, so a large
    payload is sent with bounded memory; this returns once everything was flushed.
    """
    pieces: Any = chunks
    if retransmit is not None:
        if retransmit.subject != subject:
            raise InputError(
                f"retransmit= serves {retransmit.subject!r}, not the subject {subject!r}"
            )
        pieces = retransmit.window.keeping(chunks)
    for piece in pieces:
        await nc.publish(subject, piece)
    await nc.flush()
    return chunks.payload_id


async def publish(
    nc: Any,
    subject: str,
    payload: Any,
    *,
    max_bytes: Optional[int] = None,
    payload_id: Optional[bytes] = None,
    key: Optional[bytes] = None,
    retransmit: Optional[Retransmitter] = None,
) -> str:
    """Publish ``payload`` (any bytes-like object, usually a tensorwire payload) on
    ``subject`` as chunks of at most ``max_bytes`` (default: the server's
    ``max_payload``, 1 MiB unless configured), each authenticated with ``key`` when one
    is given (see :func:`tensorwire.chunk`), kept for resending with ``retransmit``
    (see :func:`publish_chunks`). Returns the payload id (hex)."""
    chunks = chunk(payload, _chunk_limit(nc, max_bytes), payload_id=payload_id, key=key)
    return await publish_chunks(nc, subject, chunks, retransmit=retransmit)


async def publish_tensors(
    nc: Any,
    subject: str,
    tensors: Any,
    *,
    max_bytes: Optional[int] = None,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    retransmit: Optional[Retransmitter] = None,
    **encode_options: Any,
) -> str:
    """Encode ``tensors`` (``encode_options`` as for :func:`tensorwire.encode`:
    ``codec``, ``metadata``, ``base``...) and publish the payload on ``subject`` in
    chunks of at most ``max_bytes``. Returns its id (hex).

    The tensors are encoded straight into chunks (:func:`tensorwire.encode_chunks`),
    never holding the whole payload. With ``key`` (32 bytes shared with the subscribers)
    the payload itself is authenticated with it (as ``tw.encode(..., key=)``) and so is
    every chunk; with ``signing_key`` the payload is signed; ``encrypt=`` as for
    :func:`tensorwire.encode`; with ``retransmit`` the chunks are kept for resending
    (see :func:`publish_chunks`).
    """
    limit = _chunk_limit(nc, max_bytes)
    chunks = encode_chunks(tensors, limit, key=key, signing_key=signing_key, **encode_options)
    return await publish_chunks(nc, subject, chunks, retransmit=retransmit)


def _log_error(error: TensorwireError, msg: Any) -> None:
    if msg is None:
        log.warning("%s", error)
    else:
        log.warning("dropped a message on %s: %s", getattr(msg, "subject", "?"), error)


class PayloadSubscription:
    """Complete payloads (``bytes``) arriving on a subject, as an async iterator.

    Chunks that the reassembler refuses (corrupt, forged, over a limit) are handed to
    ``on_error(error, msg)`` (default: logged as warnings on ``tensorwire.transport.nats``)
    and the subscription goes on; one bad sender cannot stop it. With ``requests`` (a
    :class:`RetransmitRequests`) and ``send`` (a coroutine function publishing a request)
    it asks for missing pieces while it waits for messages, and hands each payload it
    gives up to ``on_error(IntegrityError, None)``.
    """

    def __init__(
        self,
        sub: Any,
        reassembler: Reassembler,
        on_error: ErrorHandler,
        requests: Optional[RetransmitRequests] = None,
        send: Optional[Callable[[bytes], Awaitable[None]]] = None,
    ) -> None:
        self._sub = sub
        self._messages = sub.messages.__aiter__()
        self.reassembler = reassembler
        self._on_error = on_error
        self._inflight: Optional[tuple[asyncio.Future[Optional[bytes]], Any]] = None
        self.requests = requests
        self._send = send
        self._next: Optional[asyncio.Future[Any]] = None
        self._checked = -math.inf

    def __aiter__(self) -> PayloadSubscription:
        return self

    async def _next_message(self) -> Any:
        """The next message; with retransmit requests, waits in steps of a quarter of
        ``nack_after``, sending the requests due whenever every message received so far
        has been added (nothing is queued)."""
        if self.requests is None or self._send is None:
            return await self._messages.__anext__()  # StopAsyncIteration on unsubscribe
        step = max(self.requests.nack_after / 4, 0.01)
        while True:
            if self._next is None:
                self._next = asyncio.ensure_future(self._messages.__anext__())
                # Its end (StopAsyncIteration once closed) is read here, or by nobody.
                self._next.add_done_callback(lambda t: t.cancelled() or t.exception())
            now = time.monotonic()
            if now - self._checked >= step and getattr(self._sub, "pending_msgs", 0) == 0:
                self._checked = now
                requests, lost = self.requests.due(now)
                for request in requests:
                    await self._send(request)
                for error in lost:
                    self._on_error(error, None)
            # Not cancelled on a timeout: the next call picks the message up.
            done, _ = await asyncio.wait({self._next}, timeout=step)
            if done:
                ready, self._next = self._next, None
                return ready.result()

    async def __anext__(self) -> bytes:
        while True:
            if self._inflight is not None:
                task, msg = self._inflight
                # Shielded: if the caller is cancelled (a timeout), the add goes on and
                # its result is picked up by the next call.
                try:
                    payload = await asyncio.shield(task)
                except asyncio.CancelledError:
                    if task.cancelled():  # the work itself was cancelled, not just us
                        self._inflight = None
                    raise
                except TensorwireError as e:
                    self._inflight = None
                    self._on_error(e, msg)
                    continue
                except BaseException:
                    self._inflight = None
                    raise
                self._inflight = None
            else:
                msg = await self._next_message()
                if len(msg.data) >= _OFF_LOOP_BYTES:
                    # Copying, checking and (on the last chunk) verifying release the
                    # GIL: on a worker thread they overlap with reading the socket.
                    add = asyncio.to_thread(self.reassembler.add, msg.data)
                    self._inflight = (asyncio.ensure_future(add), msg)
                    continue
                try:
                    payload = self.reassembler.add(msg.data)
                except TensorwireError as e:
                    self._on_error(e, msg)
                    continue
            if payload is not None:
                return payload

    async def next_payload(self, timeout: Optional[float] = None) -> bytes:
        """The next complete payload; ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def unsubscribe(self) -> None:
        """Stop receiving; iteration ends."""
        if self._next is not None:
            self._next.cancel()
            self._next = None
        await self._sub.unsubscribe()


async def subscribe(
    nc: Any,
    subject: str,
    *,
    reassembler: Optional[Reassembler] = None,
    on_error: Optional[ErrorHandler] = None,
    pending_bytes_limit: int = 256 << 20,
    key: Optional[bytes] = None,
    keys: Optional[Keys] = None,
    trusted_keys: Any = None,
    retransmit: bool = False,
    nack_after: float = 1.0,
    retries: int = 5,
    request_subject: Optional[str] = None,
) -> PayloadSubscription:
    """Subscribe to ``subject`` and reassemble the chunks published there.

    ``reassembler`` sets the limits (default: ``tensorwire.Reassembler(key=key,
    keys=keys, trusted_keys=trusted_keys)``). With ``key`` (or several: ``keys``) only
    chunks published with one of them are accepted, and a payload that is itself
    authenticated must be authenticated with one of them (a plain payload in such chunks
    passes: the chunks' tags cover it); with ``trusted_keys`` (public keys) only
    payloads signed by one of those signers. Every payload handed out has passed these
    checks, as ``tw.decode(payload, key=..., trusted_keys=...)`` makes them; what fails
    is handed to ``on_error`` as ``AuthenticationError``. ``pending_bytes_limit`` is
    nats-py's buffer of received, unprocessed messages, past which it drops messages
    (a "slow consumer").

    With ``retransmit=True``, while the subscription is read, a payload that got no new
    piece for ``nack_after`` seconds is asked for on ``request_subject`` (default
    :func:`request_subject` of ``subject``, where :func:`serve_retransmits` listens),
    at most ``retries`` times (:class:`RetransmitRequests`; requests are authenticated
    with ``key``); one given up is handed to ``on_error`` as ``IntegrityError`` with
    ``msg=None``, and dropped at the reassembler's timeout."""
    reassembler = _reassembler(reassembler, key=key, keys=keys, trusted_keys=trusted_keys)
    requests, control = None, ""
    if retransmit:
        if key is None and reassembler.key_ids:
            raise InputError(
                "retransmit requests are authenticated with key=: pass one key=, "
                "not keys= or a keyed reassembler="
            )
        requests = RetransmitRequests(reassembler, nack_after=nack_after, retries=retries, key=key)
        control = request_subject or _default_request_subject(subject)
    sub = await nc.subscribe(subject, pending_bytes_limit=pending_bytes_limit)
    await nc.flush()  # the server knows the subscription before this returns

    async def send(request: bytes) -> None:
        await nc.publish(control, request)

    return PayloadSubscription(
        sub, reassembler, on_error or _log_error, requests, send if requests else None
    )
