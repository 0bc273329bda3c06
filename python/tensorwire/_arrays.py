"""Turning user tensors into little-endian C-contiguous numpy arrays, and dtype names
into numpy dtypes. Nothing here touches tensor bytes except where a layout must change.

The dtypes come from the one table in Rust (``tensorwire._core.DTYPES``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._errors import InputError
from ._torch import is_torch, torch_to_numpy

__all__ = [
    "BUILTIN_DTYPES",
    "ML_DTYPES",
    "NUMPY_DTYPES",
    "SUPPORTED",
    "as_array",
    "byte_view",
    "dtype_name",
    "dtype_named",
    "normalised",
]

#: The dtype names numpy has descriptors of its own for.
BUILTIN_DTYPES = frozenset(name for name, _, typestr in _core.DTYPES if typestr is not None)
#: The dtype names that come from ``ml_dtypes`` (bfloat16, float8), installed or not.
ML_DTYPES = tuple(name for name, _, typestr in _core.DTYPES if typestr is None)

#: The numpy dtype of every dtype name a payload can carry here (little-endian; the
#: ml_dtypes ones only when it is installed), as the Rust layer resolved them.
NUMPY_DTYPES: dict[str, np.dtype] = _core.numpy_dtypes()

SUPPORTED = frozenset(NUMPY_DTYPES)


_NAMES: dict[np.dtype, str] = {}


def dtype_name(dt: np.dtype) -> str:
    """``dt.name``, cached: numpy computes it in Python on every access, which costs more
    than the rest of encoding a small tensor."""
    name = _NAMES.get(dt)
    if name is None:
        name = _NAMES[dt] = dt.name
    return name


def dtype_named(name: str, tensor: str) -> np.dtype:
    """The numpy dtype of a header dtype name."""
    dt = NUMPY_DTYPES.get(name)
    if dt is not None:
        return dt
    if name in ML_DTYPES:
        raise InputError(
            f"tensor {tensor!r} has dtype {name}: pip install 'tensorwire[bf16]' (ml_dtypes)"
        )
    raise InputError(f"tensor {tensor!r} has unknown dtype {name!r}")


def as_array(x: Any, name: str) -> np.ndarray:
    """A little-endian, C-contiguous ndarray for ``x`` (a view whenever ``x`` already is one)."""
    if isinstance(x, np.ndarray):
        a = x
    elif isinstance(x, np.generic):
        a = np.asarray(x)
    elif is_torch(x):
        # torch's own path handles bf16/float8, requires_grad, devices and conj/neg views.
        a = torch_to_numpy(x, name)
    elif hasattr(x, "__array__") or hasattr(x, "__dlpack__"):
        try:
            a = np.asarray(x) if hasattr(x, "__array__") else np.from_dlpack(x)
        except Exception as e:  # frameworks raise their own types here
            raise InputError(f"tensor {name!r}: cannot convert to an array: {e}") from e
    else:
        raise InputError(
            f"tensor {name!r}: expected an array (numpy, or anything with __array__ or "
            f"__dlpack__), got {type(x).__name__}"
        )
    dt = a.dtype
    if dtype_name(dt) not in SUPPORTED or dt.fields is not None:
        hint = ""
        if dt.kind in "OUSV":
            hint = " (object, string and structured dtypes are refused: tensorwire never pickles)"
        raise InputError(f"tensor {name!r}: unsupported dtype {dt}{hint}")
    if dt.byteorder == ">":
        a = a.astype(dt.newbyteorder("<"))
    if not a.flags.c_contiguous:  # np.ascontiguousarray would turn 0-d into 1-d
        a = a.copy(order="C")
    return a


def normalised(names: list[str], leaves: list[Any]) -> list[Any]:
    """``leaves`` with each one the Rust layer cannot borrow as it is replaced by
    :func:`as_array` of it (numpy arrays already stored as they are stay untouched)."""
    out = list(leaves)
    for i in _core.not_stored(out):
        out[i] = as_array(out[i], names[i])
    return out


def byte_view(a: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a flat uint8 view (no copy)."""
    return a.reshape(-1).view(np.uint8)
