"""Hugging Face safetensors: read and write ``.safetensors`` files exactly.

Layout: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON (padded with
spaces), then the data section. The JSON maps each tensor name to
``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` (offsets relative to
the data section, tensors packed back to back covering it exactly) and may hold
``"__metadata__"``, a ``str -> str`` mapping. Data is little-endian, C order.

:func:`dumps` writes what the ``safetensors`` package writes, byte for byte (tensors
ordered by dtype size then name, header padded to 8 bytes); :func:`loads` reads any
valid file, returning read-only numpy arrays that are views into the input wherever
alignment allows (always, for files written by the reference writer).

The header is hostile until checked: it is parsed strictly (no ``NaN``, no lone
surrogates, integers of more than 20 digits never converted), and every field must have
exactly its type (``dtype`` a known code string, ``shape`` and ``data_offsets`` lists of
ints, not bools or floats) and fit the bytes present; anything else is a
:class:`~tensorwire.FormatError` naming the tensor.

>>> import numpy as np
>>> from tensorwire.formats import safetensors
>>> blob = safetensors.dumps({"w": np.ones((2, 3), np.float32)}, metadata={"step": "7"})
>>> safetensors.loads(blob)["w"].shape, safetensors.metadata(blob)
((2, 3), {'step': '7'})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from .._arrays import SUPPORTED, byte_view, dtype_named
from .._errors import FormatError, InputError
from ._bytes import (
    PathLike,
    array_at,
    buffer_of,
    check_shape,
    json_loads,
    named_arrays,
    read_file,
    shown,
    stored_as_is,
    write_file,
)
from ._registry import Description

__all__ = ["MAX_HEADER_LEN", "describe", "dump", "dumps", "load", "loads", "metadata", "sniff"]

#: Largest JSON header accepted (the reference implementation's limit).
MAX_HEADER_LEN = 100_000_000

# safetensors dtype code -> tensorwire/numpy dtype name, in the reference's sort order
# (its writer puts larger dtypes first; ties are broken by name).
_CODES = {
    "U64": "uint64",
    "I64": "int64",
    "F64": "float64",
    "C64": "complex64",
    "F32": "float32",
    "U32": "uint32",
    "I32": "int32",
    "BF16": "bfloat16",
    "F16": "float16",
    "U16": "uint16",
    "I16": "int16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
_CODE_OF = {name: code for code, name in _CODES.items()}
_RANK = {code: i for i, code in enumerate(_CODES)}
_WHAT = "safetensors"


def _header_json(header: Mapping[str, Any]) -> bytes:
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return text + b" " * (-len(text) % 8)


def dumps(tensors: Any, *, metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The safetensors bytes of ``tensors`` (a mapping of names to arrays, or any
    tensorwire input; nested names are joined with ``/``), with optional
    ``__metadata__`` (a ``str -> str`` mapping)."""
    entries = []
    seen: set[str] = set()
    for name, a in named_arrays(tensors):
        if name == "__metadata__":
            raise InputError("a tensor cannot be named '__metadata__' in safetensors")
        if name in seen:
            raise InputError(f"tensor name {name!r} appears twice")
        seen.add(name)
        code = _CODE_OF.get(a.dtype.name)
        if code is None:
            raise InputError(
                f"tensor {name!r}: safetensors has no dtype for {a.dtype.name} "
                f"(it supports {', '.join(sorted(_CODE_OF))})"
            )
        entries.append((_RANK[code], name, code, a))
    entries.sort(key=lambda e: (e[0], e[1]))

    header: dict[str, Any] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise InputError("safetensors metadata must be a mapping of str to str")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for _, name, code, a in entries:
        header[name] = {
            "dtype": code,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    text = _header_json(header)
    pieces: list[Any] = [len(text).to_bytes(8, "little"), text]
    pieces.extend(byte_view(a) for _, _, _, a in entries)
    return b"".join(pieces)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FormatError(f"{_WHAT}: the header names {shown(k)} twice")
        out[k] = v
    return out


def _parse_header(buf: memoryview) -> tuple[dict[str, Any], int]:
    if len(buf) < 8:
        raise FormatError(f"{_WHAT}: {len(buf)} bytes is too short for a header length")
    n = int.from_bytes(buf[:8], "little")
    if n > MAX_HEADER_LEN:
        raise FormatError(f"{_WHAT}: header length {n} exceeds the limit of {MAX_HEADER_LEN}")
    if n > len(buf) - 8:
        raise FormatError(
            f"{_WHAT}: header length {n} runs past the end of the input ({len(buf)} bytes)"
        )
    header = json_loads(buf[8 : 8 + n], _WHAT, object_pairs_hook=_no_duplicates)
    if not isinstance(header, dict):
        raise FormatError(f"{_WHAT}: the header is a JSON {type(header).__name__}, not an object")
    return header, 8 + n


def _metadata_of(header: dict[str, Any]) -> Optional[dict[str, str]]:
    meta = header.get("__metadata__")
    if meta is None:
        return None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError(f"{_WHAT}: __metadata__ must map strings to strings")
    return meta


def metadata(data: Any) -> Optional[dict[str, str]]:
    """The ``__metadata__`` mapping of a safetensors blob (or None); reads the header only."""
    header, _ = _parse_header(buffer_of(data, _WHAT))
    return _metadata_of(header)


def _int_list(value: Any, name: str, field: str) -> tuple[int, ...]:
    """``value`` as a tuple of ints, if it is a JSON list of (exactly) ints."""
    if not isinstance(value, list) or not all(type(x) is int for x in value):
        raise FormatError(f"{_WHAT}: tensor {shown(name)} has an invalid {field} {shown(value)}")
    return tuple(value)


def loads(data: Any) -> dict[str, np.ndarray]:
    """The tensors of a safetensors blob, in storage order, as read-only arrays that view
    ``data`` wherever alignment allows (keep ``data`` unchanged while they live)."""
    buf = buffer_of(data, _WHAT)
    header, start = _parse_header(buf)
    _metadata_of(header)
    data_len = len(buf) - start
    layout = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise FormatError(f"{_WHAT}: tensor {shown(name)} is described by a non-object")
        code = info.get("dtype")
        if not isinstance(code, str) or code not in _CODES:
            raise FormatError(
                f"{_WHAT}: tensor {shown(name)} has an unsupported dtype {shown(code)}"
            )
        dtype_name = _CODES[code]
        if dtype_name not in SUPPORTED:
            raise FormatError(
                f"{_WHAT}: tensor {shown(name)} has dtype {code}: "
                "pip install 'tensorwire[bf16]' (ml_dtypes) to read it"
            )
        dtype = dtype_named(dtype_name, name)
        shape = _int_list(info.get("shape"), name, "shape")
        offsets = _int_list(info.get("data_offsets"), name, "data_offsets")
        if len(offsets) != 2:
            raise FormatError(
                f"{_WHAT}: tensor {shown(name)} has data_offsets {shown(list(offsets))}"
            )
        begin, end = offsets
        nbytes = check_shape(shape, dtype.itemsize, name, _WHAT)
        if not 0 <= begin <= end <= data_len:
            raise FormatError(
                f"{_WHAT}: tensor {shown(name)} has data_offsets [{begin}, {end}] outside the "
                f"{data_len}-byte data section"
            )
        if end - begin != nbytes:
            raise FormatError(
                f"{_WHAT}: tensor {shown(name)} is {code}{list(shape)} ({nbytes} bytes) but its "
                f"data_offsets span {end - begin} bytes"
            )
        layout.append((begin, end, name, dtype, shape))
    layout.sort(key=lambda e: (e[0], e[1]))
    expected = 0
    for begin, end, name, _, _ in layout:
        if begin != expected:
            what = "overlaps the previous tensor" if begin < expected else "leaves a gap before it"
            raise FormatError(f"{_WHAT}: tensor {shown(name)} at offset {begin} {what}")
        expected = end
    if expected != data_len:
        raise FormatError(
            f"{_WHAT}: the tensors cover {expected} bytes of a {data_len}-byte data section"
        )
    return {
        name: array_at(buf, start + begin, dtype, shape) for begin, _, name, dtype, shape in layout
    }


def dump(tensors: Any, path: PathLike, *, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``tensors`` to the file ``path`` (atomically); see :func:`dumps`."""
    write_file(path, dumps(tensors, metadata=metadata))


def load(path: PathLike) -> dict[str, np.ndarray]:
    """The tensors of the file ``path``, memory-mapped; see :func:`loads`."""
    return loads(read_file(path))


def sniff(data: Any) -> bool:
    """Whether ``data`` starts like a safetensors file: a header length that fits, then
    ``{``."""
    head = bytes(memoryview(data)[:9])
    return (
        len(head) == 9
        and int.from_bytes(head[:8], "little") <= len(data) - 8
        and (head[8:9] == b"{")
    )


def describe(path: PathLike) -> Description:
    """The tensors and ``__metadata__`` of the file ``path`` (loaded, memory-mapped)."""
    data = read_file(path)
    tensors = loads(data)
    return Description(stored_as_is(tensors), lambda: tensors, metadata(data))
