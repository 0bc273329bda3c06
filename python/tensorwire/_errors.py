"""The exceptions tensorwire raises. Every one derives from :class:`TensorwireError`."""

from __future__ import annotations

__all__ = [
    "ClosedError",
    "CodecError",
    "FormatError",
    "InputError",
    "IntegrityError",
    "TensorwireError",
]


class TensorwireError(Exception):
    """Base class of every error tensorwire raises."""


class FormatError(TensorwireError, ValueError):
    """The payload is malformed, of an unsupported version, or breaks a documented limit."""


class IntegrityError(TensorwireError, ValueError):
    """Bytes do not match their checksum, the payload is truncated, or a delta's base
    is missing or different from the one it was encoded against."""


class CodecError(TensorwireError, ValueError):
    """A codec spec is invalid, or a codec stage does not fit a tensor."""


class InputError(TensorwireError, TypeError):
    """The input cannot be encoded: unsupported type or dtype, bad name, bad metadata."""


class ClosedError(TensorwireError, ValueError):
    """A method of a closed :class:`~tensorwire.Reader` was called (like a closed file)."""
