"""tensorwire's own payloads, with the functions every format module has (``dumps``,
``loads``, ``dump``, ``load``, ``sniff``, ``describe``), so the format registry and the
``tensorwire`` command treat them like any other format. The full API is the top level:
:func:`tensorwire.encode`, :func:`tensorwire.decode`, :func:`tensorwire.open`...

>>> import numpy as np
>>> from tensorwire.formats import tensorwire
>>> blob = tensorwire.dumps({"w": np.zeros(3)}, codec="zstd")
>>> tensorwire.sniff(blob), tensorwire.loads(blob)["w"].shape
(True, (3,))
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .. import _container
from ._bytes import PathLike
from ._registry import Description, StoredTensor

__all__ = ["MAGIC", "describe", "dump", "dumps", "load", "loads", "metadata", "sniff"]

#: The first eight bytes of every payload (docs/FORMAT.md, "Preamble").
MAGIC = b"\x89TWR\r\n\x1a\n"


def dumps(tensors: Any, **encode_options: Any) -> bytes:
    """:func:`tensorwire.encode`."""
    return _container.encode(tensors, **encode_options)


def loads(data: Any, **decode_options: Any) -> Any:
    """:func:`tensorwire.decode`."""
    return _container.decode(data, **decode_options)


def dump(tensors: Any, path: PathLike, **encode_options: Any) -> None:
    """:func:`tensorwire.save`."""
    _container.save(tensors, path, **encode_options)


def load(path: PathLike, **decode_options: Any) -> Any:
    """:func:`tensorwire.load`."""
    return _container.load(path, **decode_options)


def metadata(data: Any) -> Any:
    """The metadata of a payload (or None); parses the header only."""
    with _container.open(data) as r:
        return r.metadata


def sniff(data: Any) -> bool:
    """Whether ``data`` starts like a payload (its magic)."""
    return bytes(memoryview(data)[: len(MAGIC)]) == MAGIC


def describe(path: PathLike, **read_options: Any) -> Description:
    """The tensors, metadata and header facts of the file ``path`` from its header alone
    (nothing is decoded or verified until ``load`` is called). ``read_options`` are the
    key options of :func:`tensorwire.open` (``key``, ``keys``, ``trusted_keys``): the
    header of an authenticated payload is read with them, and a signature is checked."""
    with _container.open(path, **read_options) as r:
        tensors = [
            StoredTensor(i.name, i.dtype, tuple(i.shape), i.codec, i.stored_bytes, i.nbytes)
            for i in map(r.info, r.keys())
        ]
        major, minor = r.version
        facts = {"version": f"{major}.{minor}", "content id": r.content_id}
        if r.base_id is not None:
            facts["base id"] = r.base_id
        if r.key_id is not None:
            facts["key id"] = r.key_id
        if r.signer is not None:
            facts["signer"] = r.signer.hex()
        if r.created is not None:
            facts["created"] = _utc(r.created)
        if r.encrypted:
            facts["encrypted"] = "tensors and header" if r.encrypted == "all" else "tensors"
        meta = r.metadata

    def verify(progress: Optional[Callable[[int], None]] = None) -> None:
        with _container.open(path, **read_options) as r:
            r.verify(progress=progress)

    return Description(tensors, lambda: _container.load(path, **read_options), meta, facts, verify)


def _utc(ms: int) -> str:
    """Unix milliseconds as an ISO 8601 UTC time."""
    import datetime

    try:
        when = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms after the epoch"
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
