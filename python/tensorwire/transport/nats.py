"""Payloads through NATS (``nats-py``, asyncio), chunked under the server's ``max_payload``.

>>> import nats, tensorwire as tw                                      # doctest: +SKIP
>>> from tensorwire.transport import nats as twnats
>>> nc = await nats.connect("nats://127.0.0.1:4222")
>>> sub = await twnats.subscribe(nc, "models")
>>> await twnats.publish_tensors(nc, "models", {"w": weights}, codec="shuffle+zstd")
>>> blob = await sub.next_payload(timeout=10)
>>> tw.decode(blob)["w"]

Core NATS delivers at most once: a lost chunk leaves its payload pending in the
reassembler until the timeout drops it, and the sender is expected to resend. Do not put
subscribers in a queue group: the chunks of one payload would be spread over its members.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

from .._chunk import Chunks, Reassembler, chunk, encode_chunks
from .._container import CodecSpec
from .._errors import InputError, TensorwireError

__all__ = [
    "PayloadSubscription",
    "find_server_binary",
    "local_server",
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
) -> str:
    """Publish ``payload`` (any bytes-like object, usually a tensorwire payload) on
    ``subject`` as chunks of at most ``max_bytes`` (default: the server's
    ``max_payload``, 1 MiB unless configured). Returns the payload id (hex)."""
    chunks = chunk(payload, _chunk_limit(nc, max_bytes), payload_id=payload_id)
    return await publish_chunks(nc, subject, chunks)


async def publish_tensors(
    nc: Any,
    subject: str,
    tensors: Any,
    *,
    max_bytes: Optional[int] = None,
    codec: CodecSpec = "raw",
    metadata: Any = None,
    base: Any = None,
) -> str:
    """Encode ``tensors`` straight into chunks (:func:`tensorwire.encode_chunks`) and
    publish them on ``subject``, never holding the whole payload. Returns its id (hex)."""
    chunks = encode_chunks(
        tensors, _chunk_limit(nc, max_bytes), codec=codec, metadata=metadata, base=base
    )
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
) -> PayloadSubscription:
    """Subscribe to ``subject`` and reassemble the chunks published there.

    ``reassembler`` sets the limits (default: ``tensorwire.Reassembler()``);
    ``pending_bytes_limit`` is nats-py's buffer of received, unprocessed messages, past
    which it drops messages (a "slow consumer")."""
    sub = await nc.subscribe(subject, pending_bytes_limit=pending_bytes_limit)
    await nc.flush()  # the server knows the subscription before this returns
    return PayloadSubscription(sub, reassembler or Reassembler(), on_error or _log_error)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_server_binary() -> Optional[str]:
    """Path of the ``nats-server`` executable (Debian installs it in /usr/sbin), or None."""
    found = shutil.which("nats-server")
    if found is None and os.access("/usr/sbin/nats-server", os.X_OK):
        found = "/usr/sbin/nats-server"
    return found


@contextlib.contextmanager
def local_server(*, max_payload: Optional[int] = None, timeout: float = 10.0) -> Iterator[str]:
    """Run a throwaway ``nats-server`` on a free loopback port (for examples and tests);
    yields its URL and stops the server on exit. Needs the ``nats-server`` binary
    (``apt-get install nats-server``; ``make nats-server`` does it)."""
    binary = find_server_binary()
    if binary is None:
        raise FileNotFoundError("nats-server not found: run `make nats-server`")
    port = _free_port()
    args = [binary, "-a", "127.0.0.1", "-p", str(port)]
    config = None
    if max_payload is not None:  # only settable in a configuration file
        config = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        with config:
            config.write(f"max_payload: {int(max_payload)}\n")
        args += ["-c", config.name]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"nats-server exited with {proc.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nats-server did not listen on port {port}") from None
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        if config is not None:
            os.unlink(config.name)
