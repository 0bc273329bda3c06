"""Flattening nested inputs into named tensors; rebuilding them on decode is
``_core.unflatten``, which walks the structure JSON in Rust without a document tree."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._core import unflatten
from ._errors import InputError

__all__ = ["flatten", "unflatten"]


def _is_leaf(x: Any) -> bool:
    # arrays first: isinstance against the Mapping ABC costs more than the rest of
    # handing a small tensor to the encoder
    return type(x) is np.ndarray or not isinstance(x, (Mapping, list, tuple))


def flatten(tensors: Any) -> tuple[list[tuple[str, Any]], str | None]:
    """Return the leaves as ``(name, leaf)`` pairs, and the structure JSON.

    A flat ``Mapping[str, leaf]`` needs no structure (``None``); anything else gets a
    tree of ``{"dict": [[key, node], ...]}``, ``{"list": [...]}``, ``{"tuple": [...]}``
    and leaf indices. Nested names are the path joined with ``/``.
    """
    if isinstance(tensors, Mapping) and all(_is_leaf(v) for v in tensors.values()):
        for k in tensors:
            if not isinstance(k, str):
                raise InputError(f"mapping keys must be str, got {type(k).__name__} {k!r}")
        return list(tensors.items()), None
    if _is_leaf(tensors):
        raise InputError(
            "tensors must be a mapping, a list or tuple, or a nesting of those; "
            f"got {type(tensors).__name__}"
        )
    leaves: list[tuple[str, Any]] = []

    def walk(node: Any, path: tuple[str, ...], depth: int) -> Any:
        if depth > 64:
            raise InputError("tensors nest deeper than 64 levels")
        if isinstance(node, Mapping):
            items = []
            for k, v in node.items():
                if not isinstance(k, str):
                    where = "/".join(path) or "<root>"
                    raise InputError(
                        f"mapping keys must be str, got {type(k).__name__} {k!r} at {where}"
                    )
                items.append([k, walk(v, (*path, k), depth + 1)])
            return {"dict": items}
        if isinstance(node, (list, tuple)):
            kind = "tuple" if isinstance(node, tuple) else "list"
            return {kind: [walk(v, (*path, str(i)), depth + 1) for i, v in enumerate(node)]}
        leaves.append(("/".join(path), node))
        return len(leaves) - 1

    structure = walk(tensors, (), 0)
    return leaves, json.dumps(structure, ensure_ascii=False, separators=(",", ":"))
