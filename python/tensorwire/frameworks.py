"""Framework tensors in and out, with no hard dependency on any framework.

tensorwire reads and writes numpy arrays. These adapters map a whole structure of
tensors (a torch ``state_dict``, a JAX/Flax parameter pytree, a Keras
``get_weights()`` list, or any nesting of mappings, lists and tuples) between numpy and
one framework, leaf by leaf, sharing memory wherever the framework allows:

- :func:`to_numpy` — torch tensors (CPU; bfloat16 and float8 included, detached from
  autograd), JAX arrays and anything with ``__array__`` become numpy arrays, zero-copy
  for CPU tensors.
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

from . import _core
from ._arrays import as_array
from ._errors import InputError

__all__ = ["FRAMEWORKS", "convert", "to_jax", "to_keras", "to_numpy", "to_torch"]

#: The names :func:`convert` accepts.
FRAMEWORKS = ("numpy", "torch", "jax", "keras")
_MAX_DEPTH = 64
# same-size integer dtypes that carry the ml_dtypes types through frameworks
_CARRIER = {
    name: {1: "uint8", 2: "int16"}[size] for name, size, typestr in _core.DTYPES if typestr is None
}


def _map(tree: Any, leaf: Callable[[Any, str], Any], path: str = "", depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise InputError(f"tensors nest deeper than {_MAX_DEPTH} levels")
    if isinstance(tree, Mapping):
        return {
            k: _map(v, leaf, f"{path}/{k}" if path else str(k), depth + 1) for k, v in tree.items()
        }
    if isinstance(tree, (list, tuple)):
        items = [
            _map(v, leaf, f"{path}/{i}" if path else str(i), depth + 1) for i, v in enumerate(tree)
        ]
        if isinstance(tree, list):
            return items
        if hasattr(tree, "_fields"):  # namedtuple
            return type(tree)(*items)
        return tuple(items)
    return leaf(tree, path or "<root>")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _ml_dtype(name: str) -> np.dtype:
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


def _torch_leaf_to_numpy(t: Any, name: str) -> np.ndarray:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype in _CARRIER:
        import torch

        try:
            target = _ml_dtype(dtype)
        except ImportError:
            raise InputError(f"tensor {name!r} is torch.{dtype}: install ml_dtypes") from None
        return t.view(getattr(torch, _CARRIER[dtype])).numpy().view(target)
    try:
        return t.numpy()
    except (TypeError, RuntimeError) as e:
        raise InputError(f"tensor {name!r}: cannot convert torch.{dtype} to numpy: {e}") from e


def _leaf_to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        return _torch_leaf_to_numpy(x, name)
    return as_array(x, name)


def to_numpy(tree: Any) -> Any:
    """The same structure with every leaf a numpy array (zero-copy for CPU tensors)."""
    return _map(tree, _leaf_to_numpy)


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
    import torch

    def leaf(x: Any, name: str) -> Any:
        if isinstance(x, torch.Tensor):
            return x.clone() if copy else x
        a = _numpy_leaf(x, name)
        if copy or any(s < 0 for s in a.strides):
            a = a.copy()
        kind = a.dtype.name
        carrier = _CARRIER.get(kind)
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
    import jax

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
