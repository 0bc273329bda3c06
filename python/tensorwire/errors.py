"""Every exception tensorwire raises, all subclasses of :class:`TensorwireError`, and
the warning an aggregation round gives for an update it skips. See docs/security.md.

>>> from tensorwire import errors
>>> issubclass(errors.ClosedError, errors.TensorwireError)
True
"""

from __future__ import annotations

from ._aggregate import MismatchError, MismatchWarning
from ._errors import (
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
    "MismatchError",
    "MismatchWarning",
    "TensorwireError",
]
