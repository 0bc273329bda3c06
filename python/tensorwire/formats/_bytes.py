"""Bytes in and out for the format modules: input buffers, bounded array views, files.

Every format reader goes through :func:`buffer_of` and :func:`array_at`, so the checks
that keep hostile input from turning into a crash or a huge allocation live here once.
"""

from __future__ import annotations

import mmap
import os
import secrets
from typing import Any, Union

import numpy as np

from .._arrays import as_array
from .._errors import FormatError, InputError
from .._structure import flatten

__all__ = [
    "MAX_RANK",
    "PathLike",
    "array_at",
    "buffer_of",
    "check_shape",
    "named_arrays",
    "read_file",
    "write_file",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The most dimensions a tensor may have in any format we read (as in the core container).
MAX_RANK = 64
# Largest byte size numpy can address for any shape (the product of non-zero dimensions
# times the item size must fit in a signed 64-bit integer, with room to spare).
_MAX_ADDRESSABLE = 1 << 62


def buffer_of(data: Any, what: str) -> memoryview:
    """A flat, read-only byte view of ``data`` (bytes, bytearray, memoryview, mmap, array)."""
    try:
        view = memoryview(data)
    except TypeError:
        raise InputError(
            f"{what}: expected a bytes-like object, got {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        raise InputError(f"{what}: the buffer is not contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view.toreadonly()


def check_shape(shape: tuple[int, ...], itemsize: int, tensor: str, what: str) -> int:
    """Validate a shape read from input and return its size in bytes."""
    if len(shape) > MAX_RANK:
        raise FormatError(f"{what}: tensor {tensor!r} has {len(shape)} dimensions (max {MAX_RANK})")
    count = 1
    addressable = itemsize
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise FormatError(f"{what}: tensor {tensor!r} has an invalid dimension {d!r}")
        count *= d
        addressable *= max(d, 1)
        if addressable > _MAX_ADDRESSABLE:
            raise FormatError(f"{what}: tensor {tensor!r} has an absurd shape {list(shape)}")
    return count * itemsize


def array_at(buf: memoryview, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The array of ``shape`` whose bytes start at ``buf[offset]`` (already bounds-checked).

    A read-only view into ``buf`` when ``offset`` is aligned for ``dtype``, otherwise an
    aligned copy, so callers never get misaligned arrays.
    """
    count = 1
    for d in shape:
        count *= d
    if count == 0:
        return np.empty(shape, dtype=dtype)
    a = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    if not a.flags.aligned:
        a = a.copy()
        a.flags.writeable = False
    return a.reshape(shape)


def named_arrays(tensors: Any) -> list[tuple[str, np.ndarray]]:
    """``(name, little-endian C-contiguous array)`` pairs for any tensors input."""
    leaves, _ = flatten(tensors)
    return [(name, as_array(x, name)) for name, x in leaves]


def read_file(path: PathLike) -> Any:
    """The bytes of ``path``: memory-mapped (read-only), or ``b""`` for an empty file."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def write_file(path: PathLike, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename)."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:  # "x": never clobber; permissions follow the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
