"""The exceptions tensorwire raises. Every one derives from :class:`TensorwireError`.

The classes are created by the Rust extension (``tensorwire._core``), which raises them
with the places an error concerns as attributes: ``tensor`` (a name), ``update`` (the
number of an update in an aggregation), ``chunk`` (``(payload_id, index, count)``) and
``limit`` (``(name, value, allowed)`` of a documented limit); each is None when the error
does not name one. Python code that adds such a place sets the attribute.
"""

from __future__ import annotations

from ._core import (
    AuthenticationError,
    ClosedError,
    CodecError,
    FormatError,
    InputError,
    IntegrityError,
    TensorwireError,
)

__all__ = [
    "AuthenticationError",
    "ClosedError",
    "CodecError",
    "FormatError",
    "InputError",
    "IntegrityError",
    "TensorwireError",
]
