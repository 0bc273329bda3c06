"""Framework tensors in and out, with no hard dependency on any framework.

tensorwire reads and writes numpy arrays. These adapters map a whole structure of
tensors (a torch ``state_dict``, a JAX/Flax parameter pytree, a Keras
``get_weights()`` list, or any nesting of mappings, lists and tuples) between numpy and
one framework, leaf by leaf, sharing memory wherever the framework allows:

- :func:`to_numpy` — torch tensors (CPU; bfloat16 and float8 included, detached from
  autograd), JAX arrays and anything with ``__array__`` become numpy arrays, zero-copy
  for CPU tensors. A torch tensor on another device is refused, naming it and its
  device, unless ``to_cpu=True`` copies it to host memory.
- :func:`to_torch` — numpy arrays become CPU ``torch.Tensor``\\ s sharing their memory
  (bfloat16/float8 via a same-size integer view). Arrays tensorwire decodes without
  copying are read-only views of the payload: their tensors share that memory too, so
  do not modify them in place (torch cannot mark a tensor read-only); pass
  ``copy=True``, or decode with ``copy=True``, for tensors you will train in place.
- :func:`to_jax` — numpy arrays become JAX arrays with :func:`jax.device_put`, which
  aliases 64-byte-aligned host memory on CPU (tensorwire aligns every stored tensor to
  64 bytes) and copies otherwise.
- :func:`to_keras` — the leaves as a flat list of numpy arrays, in order, for
  ``model.set_weights``.

>>> import numpy as np, tensorwire as tw
>>> from tensorwire import frameworks
>>> weights = frameworks.to_keras({"dense": {"kernel": np.ones((2, 2)), "bias": np.zeros(2)}})
>>> [w.shape for w in weights]
[(2, 2), (2,)]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._arrays import as_array
from ._errors import InputError
from ._extras import require
from ._structure import walk
from ._torch import CARRIER, is_torch, torch_to_numpy

__all__ = ["FRAMEWORKS", "convert", "to_jax", "to_keras", "to_numpy", "to_torch"]

#: The names :func:`convert` accepts.
FRAMEWORKS = ("numpy", "torch", "jax", "keras")


def _rebuilt(container: Any, children: list[tuple[Any, Any]], path: str) -> Any:
    """``container``'s kind again (dict, list, tuple, namedtuple) around its mapped children."""
    if isinstance(container, Mapping):
        return dict(children)
    items = [child for _, child in children]
    if isinstance(container, list):
        return items
    if hasattr(container, "_fields"):  # namedtuple
        return type(container)(*items)
    return tuple(items)


def _map(tree: Any, leaf: Callable[[Any, str], Any]) -> Any:
    """The same structure with ``leaf(x, name)`` for every leaf (``"<root>"`` names a
    lone leaf)."""
    return walk(tree, lambda x, path: leaf(x, path or "<root>"), _rebuilt)


def _leaf_to_numpy(x: Any, name: str, to_cpu: bool = False) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if is_torch(x):
        return torch_to_numpy(x, name, to_cpu=to_cpu)
    return as_array(x, name)


def to_numpy(tree: Any, *, to_cpu: bool = False) -> Any:
    """The same structure with every leaf a numpy array (zero-copy for CPU tensors).

    A torch tensor on another device (CUDA, MPS, ...) raises :class:`InputError` naming
    the tensor and the device, unless ``to_cpu=True``, which copies it to host memory
    (``meta`` tensors hold no data and are refused either way)."""
    return _map(tree, lambda x, name: _leaf_to_numpy(x, name, to_cpu))


def _numpy_leaf(x: Any, name: str) -> np.ndarray:
    a = _leaf_to_numpy(x, name)
    if a.dtype.byteorder == ">":  # frameworks only take native byte order
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def to_torch(tree: Any, *, copy: bool = False) -> Any:
    """The same structure with every leaf a CPU ``torch.Tensor``.

    Tensors share the arrays' memory (no copy) unless ``copy=True`` or the array's
    layout needs one (big-endian, negative strides). See the module docs about
    read-only arrays.
    """
    torch = require("torch", "tensorwire.frameworks.to_torch")

    def leaf(x: Any, name: str) -> Any:
        if isinstance(x, torch.Tensor):
            return x.clone() if copy else x
        a = _numpy_leaf(x, name)
        if copy or any(s < 0 for s in a.strides):
            a = a.copy()
        kind = a.dtype.name
        carrier = CARRIER.get(kind)
        if carrier is not None:
            a = a.view(carrier)
        if a.flags.writeable:
            t = torch.from_numpy(a)
        else:
            with warnings.catch_warnings():  # documented above: the memory is shared
                warnings.filterwarnings("ignore", message="The given NumPy array is not writ")
                t = torch.from_numpy(a)
        return t.view(getattr(torch, kind)) if carrier is not None else t

    return _map(tree, leaf)


def to_jax(tree: Any) -> Any:
    """The same structure with every leaf a JAX array (``jax.device_put``: aliases
    64-byte-aligned host memory on CPU, copies otherwise)."""
    jax = require("jax", "tensorwire.frameworks.to_jax")

    def leaf(x: Any, name: str) -> Any:
        if isinstance(x, jax.Array):
            return x
        return jax.device_put(_numpy_leaf(x, name))

    return _map(tree, leaf)


def to_keras(tree: Any) -> list[np.ndarray]:
    """Every leaf as a numpy array, in order, flattened into one list (``set_weights``)."""
    out: list[np.ndarray] = []

    def leaf(x: Any, name: str) -> None:
        out.append(_leaf_to_numpy(x, name))

    _map(tree, leaf)
    return out


def convert(tree: Any, framework: str) -> Any:
    """Dispatch to :func:`to_numpy`, :func:`to_torch`, :func:`to_jax` or :func:`to_keras`."""
    if framework == "numpy":
        return to_numpy(tree)
    if framework == "torch":
        return to_torch(tree)
    if framework == "jax":
        return to_jax(tree)
    if framework == "keras":
        return to_keras(tree)
    raise InputError(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}")
