"""Keys and signatures: key ids, Ed25519 signing keys, and the key arguments of readers
and writers turned into what the Rust core takes (docs/FORMAT.md section 10)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Optional, Union

from . import _core
from ._errors import InputError

__all__ = ["generate_signing_key", "key_id", "public_key"]

#: ``keys=``: ``{key_id: key}``, or the keys alone (each names its own id).
Keys = Union[Mapping[str, Any], Iterable[Any]]

#: ``encrypt=`` of a writer: False, True (the tensors) or ``"all"`` (the header too).
Encryption = Union[bool, Literal["all"]]


def _secret(value: Any, what: str) -> bytes:
    """The bytes of a key given as a bytes-like object (its length is checked in Rust)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InputError(f"{what} must be bytes (32 of them), not {type(value).__name__}")


def key_id(key: Any) -> str:
    """The id of the 32-byte shared ``key``: 16 lowercase hex digits, what an
    authenticated payload names so that a receiver with several keys picks the right one
    (``keys={tw.key_id(k): k}``). It reveals nothing of the key."""
    return _core.key_id(_secret(key, "key"))


def generate_signing_key() -> bytes:
    """A new random Ed25519 signing key: its 32-byte secret. Keep it secret; share
    :func:`public_key` of it with the receivers (``trusted_keys=``)."""
    return _core.generate_signing_key()


def public_key(signing_key: Any) -> bytes:
    """The 32-byte Ed25519 public key of ``signing_key``: what receivers trust."""
    return _core.public_key(_secret(signing_key, "signing_key"))


def optional_secret(value: Any, what: str) -> Optional[bytes]:
    """``key=`` or ``signing_key=`` of a writer: None or 32 bytes."""
    return None if value is None else _secret(value, what)


def encryption(encrypt: Any) -> Optional[str]:
    """``encrypt=`` of a writer as the core takes it: None, "tensors" or "all"."""
    if encrypt is False or encrypt is None:
        return None
    if encrypt is True:
        return "tensors"
    if encrypt == "all":
        return "all"
    raise InputError(f'encrypt must be False, True or "all", not {encrypt!r}')


def reader_keys(key: Any, keys: Optional[Keys]) -> Optional[list[tuple[Optional[str], bytes]]]:
    """``key=`` and ``keys=`` of a reader as (expected key id or None, key) pairs."""
    if key is None and keys is None:
        return None
    pairs: list[tuple[Optional[str], bytes]] = []
    if key is not None:
        pairs.append((None, _secret(key, "key")))
    if isinstance(keys, Mapping):
        for kid, k in keys.items():
            if not isinstance(kid, str):
                raise InputError(f"keys= maps key ids (str) to keys, not {type(kid).__name__}")
            pairs.append((kid, _secret(k, f"the key of id {kid!r}")))
    elif keys is not None:
        if isinstance(keys, (bytes, bytearray, memoryview, str)):
            raise InputError("keys= takes {key_id: key} or a list of keys; use key= for one key")
        pairs.extend((None, _secret(k, "a key in keys=")) for k in keys)
    return pairs


def trusted(trusted_keys: Optional[Iterable[Any]]) -> Optional[list[bytes]]:
    """``trusted_keys=`` of a reader: public keys (32 bytes each, or 64 hex digits)."""
    if trusted_keys is None:
        return None
    if isinstance(trusted_keys, (bytes, bytearray, memoryview, str)):
        raise InputError("trusted_keys= takes a list of public keys, not one key")
    out = []
    for pk in trusted_keys:
        if isinstance(pk, str):
            try:
                out.append(bytes.fromhex(pk))
            except ValueError:
                raise InputError("a trusted key given as str must be 64 hex digits") from None
        else:
            out.append(_secret(pk, "a trusted key"))
    return out
