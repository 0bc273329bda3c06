"""A forger of tensorwire payloads, written from docs/FORMAT.md alone (like spec_reader.py,
it shares no code with the library). Every helper computes the hashes and CRCs an attacker
would recompute, so a forged payload fails only on what its fields say, never on a
checksum. Nothing here validates anything: any field can be given any value.

Pieces: ``container``/``payload`` (preamble, header, data section), the codec block format
``twc1`` with block bodies (zstd and LZ4 frames made by hand or with ``zstandard``,
``shuffle``, ``floatzip`` planes, sparse LEB128 indices), chunks (``chunk``, ``chunks``,
tagged with a key or not), retransmit requests (``retransmit_request``), update records
(``update_metadata``) and base ids (``base_id``). Authenticated and signed payloads
(FORMAT.md section 10): ``payload(..., key=, signing_key=)``, ``auth_object``, ``reseal``
(the header hash recomputed, plain or keyed: an attacker without the key, or one who
holds it) and ``sign`` (a signature trailer made with any signing key).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import blake3
import numpy as np
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from spec_reader import entry, header_hash, key_id, signed_message, write

__all__ = [
    "T",
    "auth_object",
    "base_id",
    "chunk",
    "chunks",
    "container",
    "dense",
    "floatzip",
    "header_of",
    "key_id",
    "leb128",
    "lz4_literals",
    "lz4_repeat",
    "payload",
    "piece_tag",
    "public_key",
    "reseal",
    "retransmit_request",
    "shuffle",
    "sign",
    "sparse_body",
    "twc1",
    "update_metadata",
    "with_header",
    "zstd_frame",
    "zstd_raw",
    "zstd_rle",
]

# (header dict or raw bytes, data, major=, minor=, data_len=, header_len=, auth=, flags=, key=)
container = write

# -- container --------------------------------------------------------------------------


@dataclass
class T:
    """One tensor to place: its header fields and stored bytes. ``fields`` overrides or
    adds entry keys after layout (e.g. ``{"length": 1 << 40}`` or ``{"shape": "x"}``)."""

    name: str
    dtype: str
    shape: Any
    stored: bytes
    codec: str = "raw"
    fields: dict[str, Any] = field(default_factory=dict)


def layout(tensors: Sequence[T]) -> tuple[list[dict[str, Any]], bytes]:
    """Entries and data section for ``tensors``, each at the next multiple of 64 with zero
    padding between them and its real BLAKE3 hash."""
    entries, data = [], bytearray()
    for t in tensors:
        data += bytes(-len(data) % 64)
        e = entry(t.name, t.dtype, t.shape, t.stored, len(data), codec=t.codec)
        e.update(t.fields)
        entries.append(e)
        data += t.stored
    return entries, bytes(data)


def payload(
    tensors: Sequence[T],
    *,
    minor: int | None = None,
    key: bytes | None = None,
    signing_key: bytes | None = None,
    **header: Any,
) -> bytes:
    """A payload holding ``tensors``; ``header`` adds top-level keys (``structure``,
    ``metadata``, ``base``, ``auth``, unknown keys...) with any JSON value. With ``key``
    (a shared key) the header hash is keyed (preamble byte 12 = 1), with
    ``signing_key`` the payload is signed (byte 13 bit 0, a trailer); either adds
    :func:`auth_object` unless ``auth`` is given, and makes ``minor`` 1 unless given."""
    entries, data = layout(tensors)
    trusted = key is not None or signing_key is not None
    if trusted and "auth" not in header:
        header["auth"] = auth_object(key=key, signing_key=signing_key)
    blob = write(
        {"tensors": entries, **header},
        data,
        minor=(1 if trusted else 0) if minor is None else minor,
        auth=int(key is not None),
        flags=int(signing_key is not None),
        key=key,
    )
    return blob if signing_key is None else sign(blob, signing_key)


# -- authentication and signatures (section 10) -------------------------------------------


def public_key(signing_key: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte signing key (RFC 8032)."""
    pk = Ed25519PrivateKey.from_private_bytes(signing_key).public_key()
    return pk.public_bytes(Encoding.Raw, PublicFormat.Raw)


def auth_object(
    *,
    key: bytes | None = None,
    signing_key: bytes | None = None,
    created: Any = 1_700_000_000_000,
    nonce: Any = "00" * 16,
) -> dict[str, Any]:
    """The header's ``auth`` object: ``key_id`` of ``key``, ``signer`` of ``signing_key``
    (each only when given), ``created`` and ``nonce`` (any JSON value)."""
    out: dict[str, Any] = {}
    if key is not None:
        out["key_id"] = key_id(key)
    out["created"] = created
    out["nonce"] = nonce
    if signing_key is not None:
        out["signer"] = public_key(signing_key).hex()
    return out


def _lengths(blob: bytes) -> tuple[int, int]:
    return struct.unpack_from("<QQ", blob, 16)


def reseal(blob: bytes, key: bytes | None = None) -> bytes:
    """``blob`` with its header hash recomputed over what it now holds: plain BLAKE3
    (an attacker without the key), or keyed with ``key``'s K_mac (one who holds it). A
    signature trailer is left as it was (see :func:`sign`)."""
    h, _ = _lengths(blob)
    return blob[:32] + header_hash(blob[:32] + blob[64 : 64 + h], key) + blob[64:]


def sign(blob: bytes, signing_key: bytes) -> bytes:
    """``blob`` (preamble, header and data, without a trailer) followed by the Ed25519
    signature of its header hash made with ``signing_key``."""
    sig = Ed25519PrivateKey.from_private_bytes(signing_key).sign(signed_message(blob[32:64]))
    return blob + sig


def with_header(
    blob: bytes,
    doc: dict[str, Any],
    *,
    key: bytes | None = None,
    signing_key: bytes | None = None,
) -> bytes:
    """``blob`` with ``doc`` as its header: padded to a multiple of 64, the preamble's
    header length updated, every tensor hash recomputed from the data as it stands,
    the header hash resealed (plain, or keyed with ``key``) and, when ``blob`` is signed,
    the trailer dropped and, with ``signing_key``, made again."""
    h, d = _lengths(blob)
    data = blob[64 + h : 64 + h + d]
    for t in doc["tensors"]:
        t["hash"] = blake3.blake3(data[t["offset"] : t["offset"] + t["length"]]).hexdigest()
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 64)
    out = reseal(blob[:16] + struct.pack("<Q", len(raw)) + blob[24:64] + raw + data, key)
    return out if signing_key is None else sign(out, signing_key)


def base_id(tensors: Sequence[tuple[str, str, Sequence[int], bytes]]) -> str:
    """The base id (FORMAT.md section 5) of ``(name, dtype, shape, raw bytes)`` tuples."""
    h = blake3.blake3(b"tensorwire-tensors-id-v1" + struct.pack("<Q", len(tensors)))
    for name, dtype, shape, raw in tensors:
        for s in (name.encode(), dtype.encode()):
            h.update(struct.pack("<Q", len(s)) + s)
        h.update(struct.pack(f"<Q{len(shape)}Q", len(shape), *shape))
        h.update(blake3.blake3(raw).digest())
    return h.hexdigest()


# -- codec block format (TWC1) ----------------------------------------------------------


def twc1(
    blocks: Sequence[bytes],
    *,
    block_scalars: int,
    scales: Union[Sequence[float], bytes] = (),
    counts: Sequence[int] | None = None,
    lengths: Sequence[int] | None = None,
    magic: bytes = b"TWC1",
) -> bytes:
    """Stored bytes in the block format: magic, u32 B, float32 scales (raw bytes are
    taken as they are, so NaN, inf or negative scales forge freely), the block table
    (u32 lengths, interleaved with u32 counts when ``counts`` is given: a sparse
    pipeline) and the block bodies. ``lengths`` defaults to the bodies' real lengths;
    a table longer or shorter than ``blocks`` is allowed."""
    lengths = [len(b) for b in blocks] if lengths is None else lengths
    if not isinstance(scales, bytes):
        scales = struct.pack(f"<{len(scales)}f", *scales)
    if counts is None:
        table = struct.pack(f"<{len(lengths)}I", *lengths)
    else:
        table = b"".join(struct.pack("<II", n, c) for n, c in zip(lengths, counts))
    return magic + struct.pack("<I", block_scalars) + scales + table + b"".join(blocks)


def zstd_frame(data: bytes, level: int = 3) -> bytes:
    """One zstd frame of ``data`` made by the ``zstandard`` package (content size set)."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data)


def _zstd(blocks: list[tuple[int, int, bytes]], content_size: int | None) -> bytes:
    """A single-segment frame; blocks are (type, size field, content); no checksum."""
    if content_size is None:  # no content size: a window descriptor instead (8 MiB)
        out = b"\x28\xb5\x2f\xfd" + b"\x00" + bytes([(23 - 10) << 3])
    else:  # Single_Segment, 8-byte Frame_Content_Size
        out = b"\x28\xb5\x2f\xfd" + b"\xe0" + struct.pack("<Q", content_size)
    for i, (kind, size, content) in enumerate(blocks):
        last = int(i == len(blocks) - 1)
        out += struct.pack("<I", last | kind << 1 | size << 3)[:3] + content
    return out


def zstd_rle(byte: int, n: int, *, content_size: int | None = -1, block: int = 1 << 17) -> bytes:
    """A hand-made zstd frame of RLE blocks decoding to ``n`` copies of ``byte``: about
    4 bytes per 128 KiB. ``content_size`` forges the declared size (-1: the truth, None:
    absent)."""
    sizes = [min(block, n - i) for i in range(0, n, block)] or [0]
    blocks = [(1, s, bytes([byte])) if s else (0, 0, b"") for s in sizes]
    return _zstd(blocks, n if content_size == -1 else content_size)


def zstd_raw(data: bytes, *, content_size: int | None = -1) -> bytes:
    """A hand-made zstd frame of raw blocks holding ``data``."""
    step = 1 << 17
    blocks = [(0, len(c), c) for c in (data[i : i + step] for i in range(0, len(data), step))]
    return _zstd(blocks or [(0, 0, b"")], len(data) if content_size == -1 else content_size)


def _lz4_len(n: int) -> bytes:
    return b"\xff" * ((n - 15) // 255) + bytes([(n - 15) % 255]) if n >= 15 else b""


def lz4_literals(data: bytes) -> bytes:
    """A hand-made LZ4 raw block holding ``data`` as one literal run."""
    return bytes([min(len(data), 15) << 4]) + _lz4_len(len(data)) + data


def lz4_repeat(byte: int, n: int) -> bytes:
    """A hand-made LZ4 raw block decoding to ``n`` (>= 17) copies of ``byte``: one
    literal, a match at offset 1, then the five closing literals the format requires."""
    match = n - 6
    token = 1 << 4 | min(match - 4, 15)
    head = bytes([token, byte]) + b"\x01\x00" + _lz4_len(match - 4)
    return head + lz4_literals(bytes([byte]) * 5)


def shuffle(values: bytes, q: int) -> bytes:
    """The ``shuffle`` layout: byte k of value j at k*V + j."""
    return np.frombuffer(values, np.uint8).reshape(-1, q).T.tobytes()


def floatzip(values: bytes, q: int, modes: Sequence[int] | None = None) -> bytes:
    """The ``floatzip`` layout of ``values`` (q in 2, 4, 8): rotl1 each value, split into
    q byte planes, each stored as ``u8 mode, u32 len, bytes`` (mode 1: a zstd frame;
    any other mode number is written as given over the raw plane)."""
    u = np.frombuffer(values, f"<u{q}")
    one, top = np.array(1, u.dtype), np.array(8 * q - 1, u.dtype)
    planes = ((u << one) | (u >> top)).view(np.uint8).reshape(-1, q).T
    out = b""
    for k, plane in enumerate(planes):
        mode = 0 if modes is None else modes[k]
        body = zstd_frame(plane.tobytes()) if mode == 1 else plane.tobytes()
        out += struct.pack("<BI", mode, len(body)) + body
    return out


def leb128(n: int) -> bytes:
    """Unsigned LEB128 (more than 5 bytes for n >= 2**35, which a reader must refuse)."""
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def sparse_body(indices: Sequence[int], values: bytes) -> bytes:
    """A sparse block before compression: gap-coded LEB128 indices, then the values."""
    gaps = [j - (indices[k - 1] + 1 if k else 0) for k, j in enumerate(indices)]
    return b"".join(leb128(g) for g in gaps) + values


def dense(
    values: bytes, s: int, *, compressor: str = "zstd", layout: str = "", B: int = 0
) -> bytes:
    """Stored bytes of a dense, unquantized pipeline (``[layout+]compressor``) for
    ``values`` of s-byte scalars, in blocks of B scalars (default the writers' 2**20/s).
    ``compressor``: "zstd" (zstandard), "zstd-raw" (hand-made raw blocks), "lz4"
    (hand-made literals) or "" (none); ``layout``: "", "shuffle" or "floatzip"."""
    B = B or (1 << 20) // s
    make = {"zstd": zstd_frame, "zstd-raw": zstd_raw, "lz4": lz4_literals, "": bytes}
    lay = {"": bytes, "shuffle": lambda v: shuffle(v, s), "floatzip": lambda v: floatzip(v, s)}
    steps = range(0, len(values), B * s)
    return twc1([make[compressor](lay[layout](values[i : i + B * s])) for i in steps],
                block_scalars=B)  # fmt: skip


# -- chunks -------------------------------------------------------------------------------


def chunk(
    body: bytes,
    *,
    payload_id: bytes,
    index: int,
    count: int,
    total: int,
    offset: int,
    kind: int = 1,
    digest: bytes = bytes(32),
    version: int = 1,
    flags: int | None = None,
    reserved: int = 0,
    body_len: int | None = None,
    magic: bytes = b"\x89TWC",
    crc: int | None = None,
    key: bytes | None = None,
    tag: bytes | None = None,
) -> bytes:
    """One chunk (88-byte header + body [+ tag]) with any field forged; the CRC-32 is
    computed over header bytes 0..84 and the body unless ``crc`` is given. With ``key``
    (a shared key) flag bit 0 is set and the 16-byte tag made with its K_piece follows
    the body; ``tag`` appends any 16 bytes instead; ``flags`` forges byte 6."""
    body_len = len(body) if body_len is None else body_len
    tagged = key is not None or tag is not None
    flags = int(tagged) if flags is None else flags
    head = magic + struct.pack(
        "<BBBB16sIIQQI32s", version, kind, flags, reserved, payload_id, index, count, total,
        offset, body_len, digest,
    )  # fmt: skip
    crc = zlib.crc32(head + body) if crc is None else crc
    out = head + struct.pack("<I", crc) + body
    if key is not None and tag is None:
        tag = piece_tag(out, key)
    return out + (tag or b"")


def piece_tag(piece: bytes, key: bytes) -> bytes:
    """The tag of a chunk (its 88-byte header and body, no tag): the first 16 bytes of
    BLAKE3 keyed with K_piece = derive_key("tensorwire 1 piece mac", key)."""
    sub = blake3.blake3(key, derive_key_context="tensorwire 1 piece mac").digest()
    return blake3.blake3(piece, key=sub).digest()[:16]


def chunks(
    blob: bytes,
    piece: int,
    *,
    payload_id: bytes | None = None,
    kind: int = 1,
    key: bytes | None = None,
) -> list[bytes]:
    """Every chunk of ``blob`` cut at piece size P = ``piece``, in order. Kind 1 carries
    the container's content id (preamble bytes 32..64), kind 0 the blob's blake3. With
    ``key`` every chunk is tagged."""
    pid = os.urandom(16) if payload_id is None else payload_id
    digest = blob[32:64] if kind == 1 else blake3.blake3(blob).digest()
    count = max(1, -(-len(blob) // piece))
    return [
        chunk(blob[i * piece : (i + 1) * piece], payload_id=pid, index=i, count=count,
              total=len(blob), offset=i * piece, kind=kind, digest=digest, key=key)
        for i in range(count)
    ]  # fmt: skip


def retransmit_request(
    payload_id: bytes,
    count: int,
    indices: Sequence[int],
    *,
    n: int | None = None,
    magic: bytes = b"\x89TWX",
    version: int = 1,
    reserved: bytes = bytes(3),
    trailing: bytes = b"",
    key: bytes | None = None,
) -> bytes:
    """A retransmit request (FORMAT.md "Retransmit requests") with any field forged, in
    the one chunk it travels in (kind 0, the body's blake3; tagged with ``key``)."""
    n = len(indices) if n is None else n
    head = magic + struct.pack("<B3s16sII", version, reserved, payload_id, count, n)
    body = head + struct.pack(f"<{len(indices)}I", *indices) + trailing
    return chunks(body, len(body), kind=0, key=key)[0]


# -- update records -----------------------------------------------------------------------


def update_metadata(
    base: Any,
    kind: Any = "difference",
    round: Any = None,
    client: Any = None,
    samples: Any = None,
    **user: Any,
) -> dict[str, Any]:
    """Metadata holding an update record under "tensorwire.update"; every field takes
    any JSON value (``samples="abc"``, ``base=5``...), ``user`` adds the user's keys."""
    rec = {"kind": kind, "base": base, "round": round, "client": client, "samples": samples}
    return {"tensorwire.update": rec, **user}


def header_of(blob: bytes) -> dict[str, Any]:
    """The JSON header of a (well-formed) payload, for re-forging it."""
    (h,) = struct.unpack_from("<Q", blob, 16)
    return json.loads(blob[64 : 64 + h])
