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
that pass those checks (decode them with the same ``key=``). Core NATS delivers at
most once: a lost chunk leaves its payload pending in the reassembler until the timeout
drops it, and the sender is expected to resend. Do not put subscribers in a queue group:
the chunks of one payload would be spread over its members.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Optional

from .._chunk import Chunks, Reassembler, chunk, encode_chunks
from .._errors import InputError, TensorwireError
from .._trust import Keys
from . import _reassembler

__all__ = [
    "PayloadSubscription",
    "publish",
    "publish_chunks",
    "publish_tensors",
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


async def publish_chunks(nc: Any, subject: str, chunks: Chunks) -> str:
    """Publish every chunk of ``chunks`` on ``subject``; returns the payload id (hex).

    nats-py buffers outgoing messages and flushes when its buffer fills, so a large
    payload is sent with bounded memory; this returns once everything was flushed.
    """
    for piece in chunks:
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
) -> str:
    """Publish ``payload`` (any bytes-like object, usually a tensorwire payload) on
    ``subject`` as chunks of at most ``max_bytes`` (default: the server's
    ``max_payload``, 1 MiB unless configured), each authenticated with ``key`` when one
    is given (see :func:`tensorwire.chunk`). Returns the payload id (hex)."""
    chunks = chunk(payload, _chunk_limit(nc, max_bytes), payload_id=payload_id, key=key)
    return await publish_chunks(nc, subject, chunks)


async def publish_tensors(
    nc: Any,
    subject: str,
    tensors: Any,
    *,
    max_bytes: Optional[int] = None,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    **encode_options: Any,
) -> str:
    """Encode ``tensors`` (``encode_options`` as for :func:`tensorwire.encode`:
    ``codec``, ``metadata``, ``base``...) and publish the payload on ``subject`` in
    chunks of at most ``max_bytes``. Returns its id (hex).

    The tensors are encoded straight into chunks (:func:`tensorwire.encode_chunks`),
    never holding the whole payload. With ``key`` (32 bytes shared with the subscribers)
    the payload itself is authenticated with it (as ``tw.encode(..., key=)``) and so is
    every chunk; with ``signing_key`` the payload is signed; ``encrypt=`` as for
    :func:`tensorwire.encode`.
    """
    limit = _chunk_limit(nc, max_bytes)
    chunks = encode_chunks(tensors, limit, key=key, signing_key=signing_key, **encode_options)
    return await publish_chunks(nc, subject, chunks)


def _log_error(error: TensorwireError, msg: Any) -> None:
    log.warning("dropped a chunk on %s: %s", getattr(msg, "subject", "?"), error)


class PayloadSubscription:
    """Complete payloads (``bytes``) arriving on a subject, as an async iterator.

    Chunks that the reassembler refuses (corrupt, forged, over a limit) are handed to
    ``on_error(error, msg)`` (default: logged as warnings on ``tensorwire.transport.nats``)
    and the subscription goes on; one bad sender cannot stop it.
    """

    def __init__(self, sub: Any, reassembler: Reassembler, on_error: ErrorHandler) -> None:
        self._sub = sub
        self._messages = sub.messages.__aiter__()
        self.reassembler = reassembler
        self._on_error = on_error
        self._inflight: Optional[tuple[asyncio.Future[Optional[bytes]], Any]] = None

    def __aiter__(self) -> PayloadSubscription:
        return self

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
                msg = await self._messages.__anext__()  # StopAsyncIteration on unsubscribe
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
    (a "slow consumer")."""
    reassembler = _reassembler(reassembler, key=key, keys=keys, trusted_keys=trusted_keys)
    sub = await nc.subscribe(subject, pending_bytes_limit=pending_bytes_limit)
    await nc.flush()  # the server knows the subscription before this returns
    return PayloadSubscription(sub, reassembler, on_error or _log_error)
