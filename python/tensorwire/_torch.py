"""Torch tensors to numpy arrays, without importing torch until one is met: the one
place both input normalisation (``_arrays.as_array``) and :mod:`tensorwire.frameworks`
turn a torch tensor into an array."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import _core
from ._errors import InputError

__all__ = ["CARRIER", "is_torch", "torch_to_numpy"]

#: Same-size integer dtypes that carry the ml_dtypes types (those with no numpy type
#: string in the core's dtype table) through torch.
CARRIER = {
    name: {1: "uint8", 2: "int16"}[size] for name, size, typestr in _core.DTYPES if typestr is None
}


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, subclasses included (without importing torch:
    no tensor exists before torch is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _ml_dtype(name: str) -> np.dtype:
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


def torch_to_numpy(t: Any, name: str, *, to_cpu: bool = False) -> np.ndarray:
    """A torch tensor as a numpy array: detached, conj/neg views resolved,
    bfloat16/float8 through a same-size integer view (needs ml_dtypes); zero-copy for
    CPU tensors (a strided view where the tensor is strided).

    A tensor on another device is refused, naming it and the device, unless
    ``to_cpu=True`` copies it to host memory; a ``meta`` tensor, which holds no data,
    is refused either way."""
    t = t.detach()
    if t.device.type != "cpu":
        if not to_cpu:
            raise InputError(
                f"tensor {name!r} is on device {t.device}, not the CPU: move it with "
                ".cpu(), or convert with tensorwire.frameworks.to_numpy(..., to_cpu=True)"
            )
        if t.device.type == "meta":
            raise InputError(f"tensor {name!r} is on device meta: it holds no data to copy")
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype in CARRIER:
        import torch

        try:
            target = _ml_dtype(dtype)
        except ImportError:
            raise InputError(
                f"tensor {name!r} is torch.{dtype}: pip install 'tensorwire[bf16]' (ml_dtypes)"
            ) from None
        return t.view(getattr(torch, CARRIER[dtype])).numpy().view(target)
    try:
        return t.numpy()
    except (TypeError, RuntimeError) as e:
        raise InputError(f"tensor {name!r}: cannot convert torch.{dtype} to numpy: {e}") from e
