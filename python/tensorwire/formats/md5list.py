"""The Kafka federated-learning format of the first seed: a list of arrays plus an MD5.

Layout (every integer a little-endian int32, as the seed's ``np.int32(...).tobytes()``
writes on the little-endian machines it runs on)::

    count
    per array: ndim, ndim dimensions, len(dtype string), dtype string (UTF-8,
               ``str(array.dtype)``, e.g. "float32", "bfloat16", ">f4"), raw C-order bytes
    MD5 digest (16 bytes) of everything before it

:func:`dumps` produces exactly what the seed's ``serialize_weights`` produces for the
same arrays (after making them little-endian and C-contiguous, which
``serialize_weights`` assumes), and :func:`loads` reads what it produces. Unlike the
seed's reader, :func:`loads` never calls ``np.dtype`` on arbitrary strings: only plain
numeric dtypes (and bfloat16/float8 with ml_dtypes) are accepted, so ``"object"`` or
``"|O"`` is a ``FormatError``; a bad digest is an ``IntegrityError``; every count,
dimension and length is checked against the input before use.

>>> import numpy as np
>>> from tensorwire.formats import md5list
>>> blob = md5list.dumps([np.ones((2, 2), np.float32), np.arange(3)])
>>> [a.shape for a in md5list.loads(blob)]
[(2, 2), (3,)]
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np

from .._arrays import SUPPORTED, byte_view
from .._errors import FormatError, InputError, IntegrityError, TensorwireError
from ._bytes import (
    MAX_RANK,
    PathLike,
    array_at,
    buffer_of,
    check_shape,
    named_arrays,
    read_file,
    stored_as_is,
    write_file,
)
from ._cursor import Cursor
from ._registry import Description

__all__ = ["describe", "dump", "dumps", "load", "loads", "sniff"]

_WHAT = "md5list"
_DIGEST = 16
_INT32_MAX = 2**31 - 1
_MAX_DTYPE_LEN = 32


def _dtype_table() -> dict[str, np.dtype]:
    from .._arrays import dtype_named

    table: dict[str, np.dtype] = {}
    for name in SUPPORTED:
        dt = dtype_named(name, name)
        table[str(dt)] = dt
        if dt.itemsize > 1 and dt.kind in "iufc":  # explicitly ordered forms: '<f4', '>f4'
            table[dt.newbyteorder("<").str] = dt.newbyteorder("<")
            table[dt.newbyteorder(">").str] = dt.newbyteorder(">")
    return table


_DTYPES = _dtype_table()


def dumps(arrays: Any) -> bytes:
    """The seed-format bytes of ``arrays`` (a list of arrays; for a mapping or nesting,
    its arrays in order: the format has no names)."""
    items = named_arrays(arrays)
    if len(items) > _INT32_MAX:
        raise InputError(f"{_WHAT}: {len(items)} arrays do not fit an int32 count")
    pieces: list[Any] = [struct.pack("<i", len(items))]
    for name, a in items:
        if any(d > _INT32_MAX for d in a.shape):
            raise InputError(f"tensor {name!r}: dimension of {list(a.shape)} exceeds int32")
        dtype_str = str(a.dtype).encode("utf-8")
        pieces.append(struct.pack(f"<i{a.ndim}ii", a.ndim, *a.shape, len(dtype_str)))
        pieces.append(dtype_str)
        pieces.append(byte_view(a))
    digest = hashlib.md5()
    for p in pieces:
        digest.update(p)
    pieces.append(digest.digest())
    return b"".join(pieces)


def loads(data: Any) -> list[np.ndarray]:
    """The arrays of a seed-format blob, as read-only views into ``data`` where aligned."""
    buf = buffer_of(data, _WHAT)
    if len(buf) < 4 + _DIGEST:
        raise FormatError(f"{_WHAT}: {len(buf)} bytes is too short (count + MD5 need 20)")
    end = len(buf) - _DIGEST
    if hashlib.md5(buf[:end]).digest() != bytes(buf[end:]):
        raise IntegrityError(f"{_WHAT}: MD5 mismatch: the data is corrupted or truncated")
    cur = Cursor(buf, _WHAT, "<i", end=end)
    (count,) = cur.ints(1, "the array count")
    if not 0 <= count <= cur.left() // 9:  # each array needs >= 9 bytes of header
        raise FormatError(f"{_WHAT}: array count {count} does not fit {cur.left()} bytes")
    out = []
    for i in range(count):
        label = f"array {i}"
        (ndim,) = cur.ints(1, f"{label}'s ndim")
        if not 0 <= ndim <= MAX_RANK:
            raise FormatError(f"{_WHAT}: {label} has ndim {ndim} (0..{MAX_RANK} allowed)")
        shape = cur.ints(ndim, f"{label}'s shape")
        (dtype_len,) = cur.ints(1, f"{label}'s dtype length")
        if not 0 < dtype_len <= _MAX_DTYPE_LEN:
            raise FormatError(f"{_WHAT}: {label} has a dtype string of length {dtype_len}")
        raw = cur.read(dtype_len, f"{label}'s dtype")
        try:
            dtype = _DTYPES[raw.decode("utf-8")]
        except (UnicodeDecodeError, KeyError):
            raise FormatError(
                f"{_WHAT}: {label} has unsupported dtype {raw!r} "
                "(only numeric dtypes are read; never objects)"
            ) from None
        nbytes = check_shape(shape, dtype.itemsize, label, _WHAT)
        start = cur.take(nbytes, f"{label}'s data ({dtype!s}{list(shape)})")
        out.append(array_at(buf, start, dtype, shape))
    if cur.left():
        raise FormatError(f"{_WHAT}: {cur.left()} bytes left over after the last array")
    return out


def dump(arrays: Any, path: PathLike) -> None:
    """Write ``arrays`` to the file ``path`` (atomically); see :func:`dumps`."""
    write_file(path, dumps(arrays))


def load(path: PathLike) -> list[np.ndarray]:
    """The arrays of the file ``path``, memory-mapped; see :func:`loads`."""
    return loads(read_file(path))


def sniff(data: Any) -> bool:
    """Whether ``data`` is a seed-format blob: the format has no magic, so it must read."""
    try:
        loads(data)
    except TensorwireError:
        return False
    return True


def describe(path: PathLike) -> Description:
    """The arrays of the file ``path`` (loaded, MD5 checked)."""
    arrays = load(path)
    return Description(stored_as_is(arrays), lambda: arrays, facts={"checksum": "MD5"})
