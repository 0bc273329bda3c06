"""Payloads in pieces that fit a broker's message limit: ``chunk`` and ``encode_chunks``
cut (they return ``Chunks``), ``Reassembler`` puts back together, ``chunk_info`` reads
one piece's header (``CHUNK_HEADER_LEN`` bytes). See docs/chunking.md; the framing is
docs/FORMAT.md, "Chunk framing".

>>> from tensorwire import chunking
>>> pieces = list(chunking.chunk(bytes(1000), 400))  # bodies of 400 - 88 bytes
>>> len(pieces), chunking.chunk_info(pieces[0])["count"]
(4, 4)
"""

from __future__ import annotations

from ._chunk import CHUNK_HEADER_LEN, Chunks, Reassembler, chunk, chunk_info, encode_chunks

__all__ = ["CHUNK_HEADER_LEN", "Chunks", "Reassembler", "chunk", "chunk_info", "encode_chunks"]
