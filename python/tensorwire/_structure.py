"""Flattening nested inputs into named tensors; rebuilding them on decode is
``_core.unflatten``, which walks the structure JSON in Rust without a document tree."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._core import unflatten
from ._errors import InputError

__all__ = ["MAX_DEPTH", "flatten", "unflatten", "walk"]

#: The deepest nesting of mappings, lists and tuples tensorwire takes (as the format's
#: structure tree allows, docs/FORMAT.md section 4).
MAX_DEPTH = 64


def _is_leaf(x: Any) -> bool:
    # arrays first: isinstance against the Mapping ABC costs more than the rest of
    # handing a small tensor to the encoder
    return type(x) is np.ndarray or not isinstance(x, (Mapping, list, tuple))


def walk(
    tree: Any,
    leaf: Callable[[Any, str], Any],
    node: Callable[[Any, list[tuple[Any, Any]], str], Any],
    path: str = "",
    depth: int = 0,
) -> Any:
    """Fold a nesting of mappings, lists and tuples bottom-up: ``leaf(x, path)`` for each
    leaf, ``node(container, [(key or index, folded child), ...], path)`` for each
    container. ``path`` is the keys and indices joined with ``/`` (``""`` at the root).
    Nesting deeper than :data:`MAX_DEPTH` is an ``InputError``."""
    if depth > MAX_DEPTH:
        raise InputError(f"tensors nest deeper than {MAX_DEPTH} levels")
    if _is_leaf(tree):
        return leaf(tree, path)
    items = tree.items() if isinstance(tree, Mapping) else enumerate(tree)
    children = [
        (k, walk(v, leaf, node, f"{path}/{k}" if path else str(k), depth + 1)) for k, v in items
    ]
    return node(tree, children, path)


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

    def leaf(x: Any, path: str) -> int:
        leaves.append((path, x))
        return len(leaves) - 1

    def node(container: Any, children: list[tuple[Any, Any]], path: str) -> Any:
        if isinstance(container, Mapping):
            for k, _ in children:
                if not isinstance(k, str):
                    raise InputError(
                        f"mapping keys must be str, got {type(k).__name__} {k!r} "
                        f"at {path or '<root>'}"
                    )
            return {"dict": [[k, child] for k, child in children]}
        kind = "tuple" if isinstance(container, tuple) else "list"
        return {kind: [child for _, child in children]}

    structure = walk(tensors, leaf, node)
    return leaves, json.dumps(structure, ensure_ascii=False, separators=(",", ":"))
