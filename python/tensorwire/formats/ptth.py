"""The iOS "PTTH" weights format of the CoreML seed: named float32/float64/int32 arrays.

Layout (header fields are big-endian uint32, as the seed's ``struct.unpack('>I...')``
reads them)::

    magic 0x50545448 ("PTTH"), version 1, parameter count
    per parameter: name length, name (UTF-8), rank, rank dimensions,
                   dtype code (0 = float32, 1 = float64, 2 = int32), data length, data

**Data byte order: little-endian.** The seed's server reads the data with
``np.frombuffer(tensor_data, dtype=np.float32)``, i.e. in the reading machine's native
order, and both ends are little-endian in practice (iOS devices are ARM64 little-endian
and copy tensor memory as is; servers are x86-64 or ARM64). So only the header fields
are big-endian, and the data is written and read as explicit little-endian (``<f4``,
``<f8``, ``<i4``), whatever machine runs tensorwire.

The seed's reader always reinterprets data as float32, ignoring the dtype code; this
module honours the code, so float64 and int32 parameters read back correctly.
:func:`dumps` refuses any other dtype with an ``InputError`` (cast first), and arrays
over 4 GiB, which the uint32 data length cannot describe. :func:`loads` checks every
field against the input: bad magic/version/dtype codes, lengths that disagree with the
shape, truncation and trailing bytes are each a ``FormatError``.

>>> import numpy as np
>>> from tensorwire.formats import ptth
>>> blob = ptth.dumps({"fc.weight": np.ones((2, 3), np.float32)})
>>> blob[:4], ptth.loads(blob)["fc.weight"].dtype
(b'PTTH', dtype('float32'))
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .._arrays import byte_view
from .._errors import FormatError, InputError
from ._bytes import (
    MAX_RANK,
    PathLike,
    array_at,
    buffer_of,
    check_shape,
    named_arrays,
    read_file,
    shown,
    stored_as_is,
    write_file,
)
from ._cursor import Cursor
from ._registry import Description

__all__ = ["DTYPE_CODES", "MAGIC", "VERSION", "describe", "dump", "dumps", "load", "loads", "sniff"]

MAGIC = 0x50545448
VERSION = 1
#: dtype code -> numpy dtype (data is little-endian).
DTYPE_CODES = {0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<i4")}
_CODE_OF = {dt.name: code for code, dt in DTYPE_CODES.items()}
_UINT32_MAX = 2**32 - 1
_WHAT = "ptth"


def dumps(tensors: Any) -> bytes:
    """The PTTH bytes of ``tensors`` (a mapping of names to float32/float64/int32 arrays,
    or any tensorwire input; nested names are joined with ``/``)."""
    items = named_arrays(tensors)
    pieces: list[Any] = [struct.pack(">III", MAGIC, VERSION, len(items))]
    seen: set[str] = set()
    for name, a in items:
        if name in seen:
            raise InputError(f"tensor name {name!r} appears twice")
        seen.add(name)
        code = _CODE_OF.get(a.dtype.name)
        if code is None:
            raise InputError(
                f"tensor {name!r}: ptth carries only float32, float64 and int32, not "
                f"{a.dtype.name} (cast it first, e.g. with .astype(np.float32))"
            )
        encoded = name.encode("utf-8")
        if len(encoded) > _UINT32_MAX or a.nbytes > _UINT32_MAX:
            raise InputError(
                f"tensor {name!r}: ptth lengths are uint32; {a.nbytes} bytes is too big"
            )
        if any(d > _UINT32_MAX for d in a.shape):
            raise InputError(f"tensor {name!r}: dimension of {list(a.shape)} exceeds uint32")
        pieces.append(struct.pack(">I", len(encoded)))
        pieces.append(encoded)
        pieces.append(struct.pack(f">I{a.ndim}III", a.ndim, *a.shape, code, a.nbytes))
        pieces.append(byte_view(a))
    return b"".join(pieces)


def loads(data: Any) -> dict[str, np.ndarray]:
    """The parameters of a PTTH blob, as read-only views into ``data`` where aligned."""
    buf = buffer_of(data, _WHAT)
    cur = Cursor(buf, _WHAT, ">I")
    magic, version, count = cur.ints(3, "the header")
    if magic != MAGIC:
        raise FormatError(f"{_WHAT}: bad magic {magic:#010x} (expected {MAGIC:#010x}, 'PTTH')")
    if version != VERSION:
        raise FormatError(f"{_WHAT}: unsupported version {version} (only {VERSION} is read)")
    if count > cur.left() // 16:  # each parameter needs >= 16 bytes of fields
        raise FormatError(f"{_WHAT}: parameter count {count} does not fit {cur.left()} bytes")
    out: dict[str, np.ndarray] = {}
    for i in range(count):
        (name_len,) = cur.ints(1, f"parameter {i}'s name length")
        raw = cur.read(name_len, f"parameter {i}'s name")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{_WHAT}: parameter {i}'s name is not UTF-8: {raw[:40]!r}") from None
        if name in out:
            raise FormatError(f"{_WHAT}: parameter {shown(name)} appears twice")
        (rank,) = cur.ints(1, f"{shown(name)}'s rank")
        if rank > MAX_RANK:
            raise FormatError(f"{_WHAT}: parameter {shown(name)} has rank {rank} (max {MAX_RANK})")
        shape = cur.ints(rank, f"{shown(name)}'s shape")
        code, data_len = cur.ints(2, f"{shown(name)}'s dtype and data length")
        if code not in DTYPE_CODES:
            raise FormatError(
                f"{_WHAT}: parameter {shown(name)} has dtype code {code} "
                "(0=float32, 1=float64, 2=int32)"
            )
        dtype = DTYPE_CODES[code]
        nbytes = check_shape(shape, dtype.itemsize, name, _WHAT)
        if data_len != nbytes:
            raise FormatError(
                f"{_WHAT}: parameter {shown(name)} is {dtype.name}{list(shape)} ({nbytes} bytes) "
                f"but declares {data_len} bytes of data"
            )
        start = cur.take(data_len, f"{shown(name)}'s data")
        out[name] = array_at(buf, start, dtype, shape)
    if cur.left():
        raise FormatError(f"{_WHAT}: {cur.left()} bytes left over after the last parameter")
    return out


def dump(tensors: Any, path: PathLike) -> None:
    """Write ``tensors`` to the file ``path`` (atomically); see :func:`dumps`."""
    write_file(path, dumps(tensors))


def load(path: PathLike) -> dict[str, np.ndarray]:
    """The parameters of the file ``path``, memory-mapped; see :func:`loads`."""
    return loads(read_file(path))


def sniff(data: Any) -> bool:
    """Whether ``data`` starts with the ``PTTH`` magic."""
    return bytes(memoryview(data)[:4]) == struct.pack(">I", MAGIC)


def describe(path: PathLike) -> Description:
    """The parameters of the file ``path`` (loaded)."""
    params = load(path)
    return Description(stored_as_is(params), lambda: params, facts={"version": str(VERSION)})
