"""chunk / encode_chunks / Reassembler: payloads in pieces that fit a broker's size limit.

The framing (an 88-byte header per chunk) is specified in docs/FORMAT.md, "Chunk
framing"; all the work happens in Rust (src/chunk/).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

from . import _core
from ._container import CodecSpec, _encode_args, _metadata_json
from ._core import CHUNK_HEADER_LEN, Reassembler
from ._trust import Encryption, encryption, optional_secret

__all__ = ["CHUNK_HEADER_LEN", "Chunks", "Reassembler", "chunk", "chunk_info", "encode_chunks"]


class Chunks(Iterator[bytes]):
    """What :func:`chunk` and :func:`encode_chunks` return: an iterator of ``bytes``
    that also knows ``len()`` (chunks left), ``payload_id`` (hex), ``count``,
    ``total_len`` and ``next_index``. Each chunk is made when it is asked for."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __iter__(self) -> Chunks:
        return self

    def __next__(self) -> bytes:
        return next(self._inner)

    def __len__(self) -> int:
        return len(self._inner)

    @property
    def payload_id(self) -> str:
        """The id every chunk of this payload carries, lowercase hex."""
        return str(self._inner.payload_id)

    @property
    def count(self) -> int:
        """How many chunks the payload is cut into."""
        return int(self._inner.count)

    @property
    def total_len(self) -> int:
        """Length of the whole payload in bytes."""
        return int(self._inner.total_len)

    @property
    def next_index(self) -> Optional[int]:
        """Index of the chunk the next ``next()`` makes (None once all were made): in
        order for :func:`chunk`; data before header for :func:`encode_chunks`."""
        index = self._inner.next_index
        return None if index is None else int(index)

    def __repr__(self) -> str:
        return (
            f"<tensorwire.Chunks payload {self.payload_id[:12]}... of {self.total_len} bytes "
            f"in {self.count} chunks, {len(self)} left>"
        )


def chunk(
    blob: Any,
    max_bytes: int,
    *,
    payload_id: Optional[bytes] = None,
    key: Optional[bytes] = None,
) -> Chunks:
    """Cut ``blob`` (any bytes-like object) into chunks of at most ``max_bytes`` bytes.

    Each chunk is a new ``bytes`` object: an 88-byte header (payload id, index, count,
    lengths, a CRC-32 and a whole-payload digest) followed by a slice of ``blob``,
    copied once. Feed the chunks, in any order, to a :class:`Reassembler`. A tensorwire
    payload is verified on arrival by its own checksums; any other bytes by a blake3
    digest computed here. ``payload_id`` (16 bytes) defaults to a random one. With
    ``key`` (32 bytes, shared with the receiver), every chunk ends with a 16-byte tag
    that a ``Reassembler(key=key)`` checks before anything else; bodies are then 16
    bytes shorter, so each chunk still fits ``max_bytes``. A payload authenticated with
    the same key (``tw.encode(..., key=key)``) is then sent as a tensorwire payload,
    which that reassembler checks with the key on arrival; without the key it cannot be
    read here and is sent as bytes. Do not modify ``blob`` while iterating.
    """
    return Chunks(_core.chunk(blob, max_bytes, payload_id, key))


def encode_chunks(
    tensors: Any,
    max_bytes: int,
    *,
    codec: CodecSpec = "raw",
    metadata: Any = None,
    base: Any = None,
    payload_id: Optional[bytes] = None,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    encrypt: Encryption = False,
) -> Chunks:
    """Encode ``tensors`` (as :func:`tensorwire.encode` does) straight into chunks of
    at most ``max_bytes`` bytes, without ever holding the whole payload.

    Raw tensors are copied from their own memory into each chunk; codec output is held
    once (it is the payload). The chunks that carry the payload's header come last,
    once every tensor's checksum is known. Reassembled, the chunks give exactly
    ``tw.encode(tensors, codec=..., metadata=..., base=..., key=..., signing_key=...,
    encrypt=...)`` (with the same creation time and nonce). ``key`` (32 bytes)
    authenticates the payload, as :func:`tensorwire.encode` does, and every chunk, as in
    :func:`chunk`; ``signing_key`` and ``encrypt`` as for :func:`tensorwire.encode`. Do
    not modify the tensors while iterating: the receiver would reject the payload as
    corrupt.
    """
    args = _encode_args(tensors, codec, base)
    meta = _metadata_json(metadata)
    return Chunks(
        _core.encode_chunks(
            args,
            max_bytes,
            meta,
            payload_id,
            optional_secret(key, "key"),
            optional_secret(signing_key, "signing_key"),
            encryption(encrypt),
        )
    )


def chunk_info(piece: Any, *, check_crc: bool = True) -> dict[str, Any]:
    """The header of one chunk as a dict (``payload_id``, ``kind``, ``index``, ``count``,
    ``total_len``, ``offset``, ``body_len``, ``digest``, ``authenticated``: whether a tag
    of ``tag_len`` bytes follows the body), after checking it and its CRC (not the tag:
    that needs the key, see ``Reassembler(key=)``). ``check_crc=False`` reads the header
    only: for a piece a :class:`Reassembler` has just accepted, which checked it all."""
    return _core.chunk_info(piece, check_crc)
