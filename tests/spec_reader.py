"""A reader (and, for crafting test inputs, a writer) of raw tensorwire payloads,
written from docs/FORMAT.md alone. It shares no code with the library: if the library
and the spec drift apart, the tests that use this module fail."""

from __future__ import annotations

import json
import struct
from typing import Any

import blake3
import numpy as np

MAGIC = b"\x89TWR\r\n\x1a\n"
DTYPES = {
    "bool": "|b1",
    "int8": "|i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "uint8": "|u1",
    "uint16": "<u2",
    "uint32": "<u4",
    "uint64": "<u8",
    "float16": "<f2",
    "float32": "<f4",
    "float64": "<f8",
    "complex64": "<c8",
    "complex128": "<c16",
}


class SpecError(Exception):
    """The payload breaks the spec."""


def read(payload: bytes) -> tuple[Any, Any]:
    """Decode a payload whose tensors are all raw: returns (tensors, metadata), with
    tensors rebuilt into their structure (a dict when the header has none)."""
    if payload[:8] != MAGIC:
        raise SpecError("magic")
    major, _minor = struct.unpack_from("<HH", payload, 8)
    if major != 1:
        raise SpecError("major version")
    header_len, data_len = struct.unpack_from("<QQ", payload, 16)
    if header_len % 64 or len(payload) != 64 + header_len + data_len:
        raise SpecError("lengths")
    header_bytes = payload[64 : 64 + header_len]
    if blake3.blake3(payload[:32] + header_bytes).digest() != payload[32:64]:
        raise SpecError("header hash")
    header = json.loads(header_bytes.decode("utf-8"))
    data = payload[64 + header_len :]
    arrays = []
    end = 0
    for t in header["tensors"]:
        assert t["offset"] % 64 == 0 and t["offset"] >= end, "layout"
        assert not any(data[end : t["offset"]]), "padding"
        stored = data[t["offset"] : t["offset"] + t["length"]]
        if blake3.blake3(stored).hexdigest() != t["hash"]:
            raise SpecError(f"hash of {t['name']}")
        if t["codec"] != "raw":
            raise SpecError("this reader decodes raw tensors only")
        dtype = np.dtype(DTYPES[t["dtype"]])
        arrays.append(np.frombuffer(stored, dtype=dtype).reshape(t["shape"]))
        end = t["offset"] + t["length"]
    if end != data_len:
        raise SpecError("data length")
    return _rebuild(header.get("structure"), header["tensors"], arrays), header.get("metadata")


def _rebuild(node: Any, entries: list[dict], arrays: list[np.ndarray]) -> Any:
    if node is None:
        return {e["name"]: a for e, a in zip(entries, arrays)}
    if isinstance(node, int):
        return arrays[node]
    ((kind, body),) = node.items()
    if kind == "dict":
        return {k: _rebuild(v, entries, arrays) for k, v in body}
    items = [_rebuild(v, entries, arrays) for v in body]
    return tuple(items) if kind == "tuple" else items


def write(
    header: dict | bytes,
    data: bytes,
    *,
    major: int = 1,
    minor: int = 0,
    data_len: int | None = None,
    header_len: int | None = None,
) -> bytes:
    """Assemble a payload from a header (a dict, or raw bytes for malformed JSON) and a
    data section, with a valid header hash. Overrides forge the preamble's fields."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 64)
    fixed = MAGIC + struct.pack(
        "<HH4xQQ",
        major,
        minor,
        len(raw) if header_len is None else header_len,
        len(data) if data_len is None else data_len,
    )
    return fixed + blake3.blake3(fixed + raw).digest() + raw + data


def entry(name: str, dtype: str, shape: list[int], data: bytes, offset: int, **kw: Any) -> dict:
    """A raw tensor entry for `data` stored at `offset`, with its real hash."""
    e = {
        "name": name,
        "dtype": dtype,
        "shape": shape,
        "codec": "raw",
        "offset": offset,
        "length": len(data),
        "hash": blake3.blake3(data).hexdigest(),
    }
    e.update(kw)
    return e
