"""Flower (``flwr``) ``ArrayRecord`` adapters.

``to_array_record(tensors)`` makes plain numpy ``Array``s (``stype`` ``"numpy.ndarray"``,
``np.save`` bytes), exactly what Flower's own ``Array(ndarray)`` makes, so any Flower peer
reads them. ``to_array_record(tensors, codec="shuffle+zstd")`` instead puts one tensorwire
payload into the record, as a single ``Array`` of ``stype`` :data:`STYPE` under the key
:data:`PAYLOAD_KEY`: compressed or delta-coded updates then travel inside Flower's own
messages, and a server can hand the payloads straight to :func:`tensorwire.aggregate`
(:func:`payload_of`). ``from_array_record`` reads both. ``key=``/``signing_key=``
authenticate and sign the payload (docs/security.md); ``from_array_record(record,
key=, trusted_keys=)`` then accepts only records holding such a payload. ``flwr`` is an
optional dependency, imported on first use.
"""

from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np

from .._arrays import as_array
from .._container import CodecSpec, decode, encode
from .._errors import AuthenticationError, FormatError, InputError
from .._extras import require
from .._structure import flatten
from .._trust import Keys

__all__ = [
    "NUMPY_STYPE",
    "PAYLOAD_KEY",
    "STYPE",
    "from_array_record",
    "payload_of",
    "payload_record",
    "to_array_record",
]

#: Flower's stype of ``np.save`` bytes (``flwr``'s ``SType.NUMPY``).
NUMPY_STYPE = "numpy.ndarray"
#: The stype of an ``Array`` holding a tensorwire payload.
STYPE = "tensorwire"
#: The record key of that ``Array``.
PAYLOAD_KEY = "tensorwire.payload"


def _flwr() -> Any:
    return require("flower", "tensorwire.integrations.flower")


def payload_record(payload: bytes) -> Any:
    """An ``ArrayRecord`` carrying one tensorwire payload (e.g. from ``encode_update``)."""
    app = _flwr()
    if not isinstance(payload, bytes):
        payload = bytes(payload)
    array = app.Array(dtype="uint8", shape=(len(payload),), stype=STYPE, data=payload)
    return app.ArrayRecord({PAYLOAD_KEY: array})


def to_array_record(
    tensors: Any,
    codec: Optional[CodecSpec] = None,
    *,
    key: Any = None,
    signing_key: Any = None,
    **encode_options: Any,
) -> Any:
    """Flower ``ArrayRecord`` of ``tensors``.

    Without ``codec``: one numpy ``Array`` per tensor, readable by any Flower peer (nested
    structures are flattened to ``/``-joined names). With ``codec`` (and any other
    :func:`tensorwire.encode` option): one tensorwire payload, see :func:`payload_record`.
    ``key`` (32 bytes shared with the readers) authenticates that payload and
    ``signing_key`` signs it (both imply a payload, ``codec`` or not); the reader passes
    ``key=``/``trusted_keys=`` to :func:`from_array_record`.
    """
    if key is not None or signing_key is not None:
        encode_options.update(key=key, signing_key=signing_key)
    if codec is not None or encode_options:
        return payload_record(encode(tensors, codec=codec or "raw", **encode_options))
    app = _flwr()
    leaves, _ = flatten(tensors)
    return app.ArrayRecord({name: app.Array(as_array(x, name)) for name, x in leaves})


def payload_of(record: Any) -> Optional[bytes]:
    """The tensorwire payload an ``ArrayRecord`` carries, or None for plain arrays."""
    array = record.get(PAYLOAD_KEY) if hasattr(record, "get") else None
    if array is None or getattr(array, "stype", None) != STYPE:
        return None
    if len(record) != 1:
        raise FormatError(f"an ArrayRecord with {PAYLOAD_KEY!r} must hold nothing else")
    return array.data


def _numpy_of(name: str, array: Any) -> np.ndarray:
    try:
        a = np.load(io.BytesIO(array.data), allow_pickle=False)
    except Exception as e:  # np.load raises many types on hostile input
        raise FormatError(f"array {name!r}: not valid np.save bytes: {e}") from None
    if not isinstance(a, np.ndarray):
        raise FormatError(f"array {name!r}: np.save bytes of an archive, not an array")
    if str(a.dtype) != str(array.dtype) or tuple(a.shape) != tuple(array.shape):
        raise FormatError(
            f"array {name!r}: holds {a.dtype}{list(a.shape)}, its Array says "
            f"{array.dtype}{list(array.shape)}"
        )
    return a


def from_array_record(
    record: Any,
    *,
    base: Any = None,
    verify: bool = True,
    key: Any = None,
    keys: Optional[Keys] = None,
    trusted_keys: Any = None,
) -> Any:
    """The tensors of a Flower ``ArrayRecord``: a tensorwire payload decodes to the
    structure that was encoded (``base`` for delta codecs); numpy ``Array``s come back
    as a ``dict`` of arrays in record order. Any other ``stype`` is a ``FormatError``.

    ``key``/``keys`` and ``trusted_keys`` are :func:`tensorwire.decode`'s: the record must
    hold a payload authenticated with one of the keys, or signed by one of the trusted
    signers; any other record, plain numpy ``Array``s included, is refused with
    :class:`tensorwire.AuthenticationError`."""
    payload = payload_of(record)
    if payload is not None:
        return decode(
            payload, base=base, verify=verify, key=key, keys=keys, trusted_keys=trusted_keys
        )
    if not hasattr(record, "items"):
        raise InputError(f"expected a Flower ArrayRecord, got {type(record).__name__}")
    if key is not None or keys is not None or trusted_keys is not None:
        raise AuthenticationError(
            "the record holds plain numpy arrays, which are neither authenticated nor "
            "signed, but key=, keys= or trusted_keys= was given: only a tensorwire payload "
            "made with them (to_array_record(..., key=, signing_key=)) is accepted"
        )
    out = {}
    for name, array in record.items():
        stype = getattr(array, "stype", None)
        if stype == STYPE:
            raise FormatError(f"array {name!r}: a tensorwire payload must be alone in its record")
        if stype != NUMPY_STYPE:
            raise FormatError(f"array {name!r}: unsupported stype {stype!r}")
        out[name] = _numpy_of(name, array)
    return out
