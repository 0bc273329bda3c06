"""Bytes in and out for the format modules: input buffers, bounded array views, JSON,
error-message values, files.

Every format reader goes through :func:`buffer_of`, :func:`array_at` and (for JSON
headers) :func:`json_loads`, so the checks that keep hostile input from turning into a
crash or a huge allocation live here once; :func:`shown` keeps values quoted in error
messages short whatever the input holds.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import reprlib
from typing import Any, Callable, Optional, Union

import numpy as np

from .. import _core
from .._arrays import as_array
from .._errors import FormatError, InputError, TensorwireError
from .._structure import flatten
from ._registry import StoredTensor

__all__ = [
    "MAX_INT_DIGITS",
    "MAX_RANK",
    "Oversized",
    "PathLike",
    "array_at",
    "buffer_of",
    "check_shape",
    "json_loads",
    "named_arrays",
    "read_file",
    "shown",
    "stored_as_is",
    "write_file",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The most dimensions a tensor may have in any format we read (as in the core container).
MAX_RANK = 64
# Largest byte size numpy can address for any shape (the product of non-zero dimensions
# times the item size must fit in a signed 64-bit integer, with room to spare).
_MAX_ADDRESSABLE = 1 << 62
#: Most digits an integer in a JSON header may have to be read as an int (a u64 has 20);
#: longer ones become :class:`Oversized`, so Python never converts a 5,000-digit string.
MAX_INT_DIGITS = 20

_SHOWN = reprlib.Repr()
_SHOWN.maxstring = 200
_SHOWN.maxother = 80
_SHOWN.maxlong = 40
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 8
_SHOWN.maxlevel = 3
_SHOWN_MAX = 300


def shown(value: Any) -> str:
    """``repr(value)``, cut to a few hundred characters (long strings keep both ends), for
    quoting what the input holds in an error message."""
    try:
        text = _SHOWN.repr(value)
    except ValueError:  # an int past Python's digit limit; never built by our readers
        return f"<{type(value).__name__}>"
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 4] + " ..."


def buffer_of(data: Any, what: str) -> memoryview:
    """A flat, read-only byte view of ``data`` (bytes, bytearray, memoryview, mmap, array)."""
    try:
        view = memoryview(data)
    except (TypeError, ValueError) as e:  # ValueError: a closed mmap, a released view
        raise InputError(
            f"{what}: expected a bytes-like object, got {type(data).__name__} ({e})"
        ) from None
    if not view.c_contiguous:
        raise InputError(f"{what}: the buffer is not contiguous")
    if view.format != "B" or view.ndim != 1:
        try:
            view = view.cast("B")
        except (TypeError, ValueError) as e:  # e.g. a '>f4' or structured numpy array
            raise InputError(
                f"{what}: cannot read a buffer of format {view.format!r} as bytes ({e})"
            ) from None
    return view.toreadonly()


class Oversized:
    """What :func:`json_loads` gives for an integer of more than :data:`MAX_INT_DIGITS`
    digits: not an ``int``, so type checks refuse it, and short to show in messages."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


def _parse_int(text: str) -> Union[int, Oversized]:
    digits = len(text) - text.startswith("-")
    return Oversized(digits) if digits > MAX_INT_DIGITS else int(text)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# A \uD800-\uDFFF escape: the only way a lone surrogate gets into a parsed str (raw
# surrogates are not valid UTF-8). A hit only means "check the strings".
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _check_unicode(value: Any, what: str) -> None:
    """Refuse any string (key or value) holding a lone surrogate, as strict JSON readers
    (the Rust ones included) do: such a str cannot even be written back as UTF-8."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise FormatError(
                    f"{what}: the header holds a string with a lone surrogate {shown(v)}"
                ) from None
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def json_loads(
    raw: Any,
    what: str,
    *,
    object_pairs_hook: Optional[Callable[[list[tuple[str, Any]]], Any]] = None,
) -> Any:
    """Parse hostile UTF-8 JSON bytes; anything wrong is a :class:`FormatError`.

    Strict: no ``NaN``/``Infinity``, no lone surrogates, nesting as deep as Python's
    parser allows (deeper is refused, not a crash); integers longer than
    :data:`MAX_INT_DIGITS` digits come back as :class:`Oversized` (never converted).
    ``object_pairs_hook`` may raise tensorwire errors, which pass through unchanged.
    """
    try:
        text = str(raw, "utf-8")
        value = json.loads(
            text,
            object_pairs_hook=object_pairs_hook,
            parse_int=_parse_int,
            parse_constant=_no_constants,
        )
    except TensorwireError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError...
        raise FormatError(f"{what}: the header is not valid JSON: {shown(str(e))[1:-1]}") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(value, what)
    return value


def check_shape(shape: tuple[int, ...], itemsize: int, tensor: str, what: str) -> int:
    """Validate a shape read from input and return its size in bytes."""
    if len(shape) > MAX_RANK:
        raise FormatError(
            f"{what}: tensor {shown(tensor)} has {len(shape)} dimensions (max {MAX_RANK})"
        )
    count = 1
    addressable = itemsize
    for d in shape:
        if type(d) is not int or d < 0:  # exactly int: not bool, not numpy, not Oversized
            raise FormatError(f"{what}: tensor {shown(tensor)} has an invalid dimension {shown(d)}")
        count *= d
        addressable *= max(d, 1)
        if addressable > _MAX_ADDRESSABLE:
            raise FormatError(
                f"{what}: tensor {shown(tensor)} has an absurd shape {shown(list(shape))}"
            )
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
    """Write ``data`` (bytes-like) to ``path`` atomically, with the core's atomic write
    (the one :func:`tensorwire.save` uses): readers see the old file or the new one, and
    a process killed while writing leaves no partial file behind."""
    _core.write_file(os.fsdecode(path), data)  # os.fsdecode: a bytes path too


def stored_as_is(tensors: Any) -> list[StoredTensor]:
    """The :class:`~tensorwire.formats._registry.StoredTensor` of every leaf of
    ``tensors``, for formats that store tensors raw (each stored size is its size)."""
    leaves, _ = flatten(tensors)
    return [
        StoredTensor(n, np.asarray(a).dtype.name, tuple(a.shape), "raw", a.nbytes, a.nbytes)
        for n, a in leaves
    ]
