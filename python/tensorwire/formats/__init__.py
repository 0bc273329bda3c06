"""Exact readers and writers for the formats users have today, and a registry of them.

Each format module has ``dumps(tensors) -> bytes``, ``loads(data) -> tensors``,
``dump(tensors, path)``, ``load(path)``, ``sniff(data) -> bool`` (does ``data`` look like
this format) and ``describe(path)`` (its tensors as stored, metadata and header facts):

- :mod:`~tensorwire.formats.safetensors` — Hugging Face ``.safetensors`` (with ``__metadata__``)
- :mod:`~tensorwire.formats.npz` — numpy ``.npz``, stored or compressed, never pickled
- :mod:`~tensorwire.formats.md5list` — the Kafka seed's list-of-arrays format with an MD5 trailer
- :mod:`~tensorwire.formats.ptth` — the iOS/CoreML seed's big-endian-header ``PTTH`` format
- :mod:`~tensorwire.formats.tensorwire` — tensorwire's own payloads, the same way

:data:`FORMATS` maps each name to its :class:`Format` (extensions, what it carries,
its module); :func:`by_extension` and :func:`sniff` find a file's format.
``formats.flower`` is :mod:`tensorwire.integrations.flower`.

Loaders validate every length, count and shape against the input before allocating:
malformed or truncated input is a :class:`~tensorwire.FormatError` (a bad checksum an
:class:`~tensorwire.IntegrityError`, a buffer that is not bytes an
:class:`~tensorwire.InputError`), never another exception, a crash or a huge allocation.
Every field is checked for its exact type (an int, not a bool, a float or a 5,000-digit
number) and range before use; JSON headers are parsed strictly. Error messages quote
what the input holds cut short. Submodules are imported on first use; the atheris
targets in ``fuzz/python/`` exercise every loader.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._registry import FORMATS, Description, Format, StoredTensor, by_extension, sniff

__all__ = [
    "FORMATS",
    "Description",
    "Format",
    "StoredTensor",
    "by_extension",
    "md5list",
    "npz",
    "ptth",
    "safetensors",
    "sniff",
    "tensorwire",
]
_SUBMODULES = frozenset([*FORMATS, "flower"])


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
