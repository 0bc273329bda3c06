"""The registry of formats: each one's name, file extensions and what it can carry, with
its module (``dumps``/``loads``/``dump``/``load``, ``sniff``, ``describe``) imported on
first use. The ``tensorwire`` command reads and writes every format through it."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, NamedTuple, Optional

from .._errors import InputError, TensorwireError

__all__ = ["FORMATS", "Description", "Format", "StoredTensor", "by_extension", "sniff"]


class StoredTensor(NamedTuple):
    """How one tensor of a file is stored: its codec (``"raw"`` when stored as is) and
    its stored size next to its decoded size."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str
    stored: int
    nbytes: int


def _checked_when_read(progress: Optional[Callable[[int], None]] = None) -> None:
    """The ``verify`` of formats whose readers check everything while reading."""


class Description(NamedTuple):
    """What a format module's ``describe(path)`` says about a file: its tensors as
    stored, its metadata, other facts from its header, how to load its tensors, and how
    to check all of its checksums (for most formats reading already did). ``verify``
    takes an optional ``progress`` callback, called with the bytes each step of the
    check covered, where the check goes in steps."""

    tensors: list[StoredTensor]
    load: Callable[[], Any]
    metadata: Any = None
    facts: Mapping[str, str] = {}
    verify: Callable[[Optional[Callable[[int], None]]], None] = _checked_when_read


@dataclass(frozen=True)
class Format:
    """One format: its name (also its module's, ``tensorwire.formats.<name>``), its file
    extensions, what verifying it checks, as ``tensorwire verify`` says it (None: it has
    no checksums), whether it carries
    tensor names, what metadata it carries (``"json"`` any JSON value, ``"strings"`` a
    str -> str mapping, None none), and the codecs its writer takes beside ``raw``
    (``codecs=None``: any tensorwire codec spec), each as the ``dump`` options it means."""

    name: str
    extensions: tuple[str, ...]
    checks: Optional[str]
    names: bool = True
    metadata: Optional[str] = None
    codecs: Optional[Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    @property
    def module(self) -> ModuleType:
        """The module reading and writing this format."""
        return importlib.import_module(f"{__package__}.{self.name}")


#: Every format, in the order ``tensorwire --help`` lists them and sniffing tries them.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "tensorwire",
            (".tw", ".tensorwire"),
            "all blake3 checksums match",
            metadata="json",
            codecs=None,
        ),
        Format("safetensors", (".safetensors",), None, metadata="strings"),
        Format("npz", (".npz",), "all CRC-32s match", codecs={"deflate": {"compressed": True}}),
        Format("md5list", (".md5list",), "MD5 matches", names=False),
        Format("ptth", (".ptth",), None),
    )
}


def by_extension(path: Any) -> Optional[Format]:
    """The format a file name's extension names (case-insensitive), or None."""
    ext = os.path.splitext(os.fsdecode(path))[1].lower()
    return next((f for f in FORMATS.values() if ext in f.extensions), None)


def sniff(path: Any) -> Format:
    """The format of the file ``path`` by its content: the first format whose module's
    ``sniff`` recognises it; an ``InputError`` when none does."""
    from ._bytes import read_file

    data = read_file(path)
    for fmt in FORMATS.values():
        try:
            if fmt.module.sniff(data):
                return fmt
        except TensorwireError:
            continue
    raise InputError(f"{os.fsdecode(path)}: cannot tell its format; name it with --from")
