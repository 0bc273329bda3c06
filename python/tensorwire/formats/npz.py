"""numpy ``.npz`` archives, stored or deflate-compressed, without pickle.

:func:`dumps` writes what :func:`numpy.savez` / :func:`numpy.savez_compressed` write
(one ``NAME.npy`` member per tensor), except that member timestamps are fixed at
1980-01-01 so the same tensors always give the same bytes. :func:`loads` reads any
``.npz`` of plain numeric arrays, byte order and Fortran order included, and refuses
object arrays (which only pickle can carry) and other non-numeric dtypes.

Hostile archives are caught before anything is allocated: every member's declared
size must match the shape in its ``.npy`` header, stored members cannot be larger than
the input, deflated ones cannot expand past deflate's own limit (1032:1), compressed
members may not overlap, and CRCs are checked (a mismatch is an ``IntegrityError``).

numpy stores bfloat16 and float8 as anonymous ``V2``/``V1`` bytes, losing the type, so
:func:`dumps` refuses them: use safetensors or tensorwire for those.

>>> import numpy as np
>>> from tensorwire.formats import npz
>>> blob = npz.dumps({"w": np.arange(6.0).reshape(2, 3)}, compressed=True)
>>> npz.loads(blob)["w"][1]
array([3., 4., 5.])
"""

from __future__ import annotations

import contextlib
import errno
import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._arrays import BUILTIN_DTYPES
from .._errors import FormatError, InputError, IntegrityError, TensorwireError
from ._bytes import (
    PathLike,
    array_at,
    buffer_of,
    check_shape,
    named_arrays,
    read_file,
    shown,
    stored_as_is,
    write_file,
)
from ._registry import Description

__all__ = ["describe", "dump", "dumps", "load", "loads", "sniff", "stored"]

_WHAT = "npz"
_EPOCH = (1980, 1, 1, 0, 0, 0)
_DEFLATE_MAX_RATIO = 1032  # no deflate stream expands more than this


def dumps(tensors: Any, *, compressed: bool = False) -> bytes:
    """The ``.npz`` bytes of ``tensors`` (a mapping of names to arrays, or any tensorwire
    input; nested names are joined with ``/``), deflate-compressed if ``compressed``."""
    arrays = named_arrays(tensors)
    seen: set[str] = set()
    for name, a in arrays:
        if name in seen:
            raise InputError(f"tensor name {name!r} appears twice")
        seen.add(name)
        if "\0" in name:
            raise InputError(f"tensor {name!r}: npz member names cannot hold NUL characters")
        # ml_dtypes' bfloat16/float8 have no .npy descriptor of their own
        if a.dtype.name not in BUILTIN_DTYPES:
            raise InputError(
                f"tensor {name!r}: npz cannot carry {a.dtype.name} (numpy saves it as raw "
                "void bytes and loses the type); use safetensors or tensorwire"
            )
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    out = io.BytesIO()
    with zipfile.ZipFile(out, mode="w", compression=method, allowZip64=True) as zf:
        for name, a in arrays:
            info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
            info.compress_type = method
            info.external_attr = 0o600 << 16  # what ZipFile.open(mode="w") gives numpy's members
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, a, allow_pickle=False)
    return out.getvalue()


def _check_members(zf: zipfile.ZipFile, size: int) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    names: set[str] = set()
    compressed_total = 0
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or info.is_dir():
            raise FormatError(f"{_WHAT}: member {shown(name)} is not a .npy array")
        if name in names:
            raise FormatError(f"{_WHAT}: member {shown(name)} appears twice")
        if info.flag_bits & 0x1:
            raise FormatError(f"{_WHAT}: member {shown(name)} is encrypted")
        names.add(name)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise FormatError(
                    f"{_WHAT}: stored member {shown(name)} claims {info.file_size} bytes from "
                    f"{info.compress_size} stored bytes"
                )
            limit = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            limit = info.compress_size * _DEFLATE_MAX_RATIO + 64
        else:
            raise FormatError(
                f"{_WHAT}: member {shown(name)} uses zip compression method {info.compress_type} "
                "(only stored and deflate are read)"
            )
        if info.file_size > limit:
            raise FormatError(
                f"{_WHAT}: member {shown(name)} claims {info.file_size} bytes from "
                f"{info.compress_size} stored bytes"
            )
        compressed_total += info.compress_size
    if compressed_total > size:
        raise FormatError(
            f"{_WHAT}: members claim {compressed_total} stored bytes in a {size}-byte archive"
        )
    return infos


def _npy_header(f: Any, key: str, file_size: int) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Parse and check a member's ``.npy`` header; ``f`` is left at the array's bytes."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise FormatError(f"{_WHAT}: member {shown(key)} is .npy version {version}, not 1.0/2.0")
    if dtype.hasobject:
        raise FormatError(
            f"{_WHAT}: member {shown(key)} is an object array, which only pickle can load; refused"
        )
    if dtype.name not in BUILTIN_DTYPES or dtype.fields is not None or dtype.subdtype:
        raise FormatError(f"{_WHAT}: member {shown(key)} has unsupported dtype {dtype.str!r}")
    shape = tuple(shape)
    nbytes = check_shape(shape, dtype.itemsize, key, _WHAT)
    if f.tell() + nbytes != file_size:
        raise FormatError(
            f"{_WHAT}: member {shown(key)} is {dtype.str}{list(shape)} ({nbytes} bytes) but "
            f"holds {file_size - f.tell()} bytes after its header"
        )
    return shape, fortran, dtype


def _arrange(flat: np.ndarray, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _stored_member(buf: memoryview, info: zipfile.ZipInfo) -> np.ndarray:
    """A stored member read in place: the local header checked, the CRC computed over
    the member's bytes, the array a view into ``buf`` where aligned."""
    key = info.filename[: -len(".npy")]
    at = info.header_offset  # zipfile adds a prefix length to it, which can be negative
    if not 0 <= at <= len(buf) - 30 or bytes(buf[at : at + 4]) != b"PK\x03\x04":
        raise FormatError(f"{_WHAT}: member {shown(key)} has no local header at offset {at}")
    name_len, extra_len = struct.unpack_from("<HH", buf, at + 26)
    start = at + 30 + name_len + extra_len
    local_name = bytes(buf[at + 30 : at + 30 + name_len])
    if local_name.decode("utf-8" if info.flag_bits & 0x800 else "cp437") != info.orig_filename:
        raise FormatError(f"{_WHAT}: member {shown(key)}: local and central names differ")
    if start + info.file_size > len(buf):
        raise FormatError(f"{_WHAT}: member {shown(key)} runs past the end of the archive")
    member = buf[start : start + info.file_size]
    if zlib.crc32(member) != info.CRC:
        raise IntegrityError(f"{_WHAT}: member {shown(key)}: bad CRC-32 (the data is corrupted)")
    head = io.BytesIO(member[: min(len(member), 65536 + 16)])
    shape, fortran, dtype = _npy_header(head, key, info.file_size)
    count = 1
    for d in shape:
        count *= d
    flat = array_at(buf, start + head.tell(), dtype, (count,))
    return _arrange(flat, shape, fortran)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    key = info.filename[: -len(".npy")]
    with zf.open(info) as f:
        shape, fortran, dtype = _npy_header(f, key, info.file_size)
        nbytes = info.file_size - f.tell()
        raw = f.read(nbytes)  # one allocation of the size just checked against the zip
        if len(raw) != nbytes:
            raise FormatError(
                f"{_WHAT}: member {shown(key)} ends after {len(raw)} of {nbytes} bytes"
            )
        if f.read(1):  # also makes zipfile check the CRC
            raise FormatError(f"{_WHAT}: member {shown(key)} holds bytes past its array")
    return _arrange(np.frombuffer(raw, dtype=dtype), shape, fortran)


class _ViewFile(io.RawIOBase):
    """A read-only, seekable file over a byte view, for zipfile: nothing is copied up
    front, and a read returns at most the bytes present, whatever size is asked for."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view, self._pos = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:  # what a real file says (zipfile expects an OSError)
            raise OSError(errno.EINVAL, f"seek to {base + offset}, before the start")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._pos + size
        out = bytes(self._view[self._pos : end])
        self._pos += len(out)
        return out

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        chunk = self._view[self._pos : self._pos + len(out)]
        out[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


# What zipfile, zlib and numpy's .npy header parser raise on malformed input.
_MALFORMED = (
    zlib.error,
    struct.error,
    EOFError,
    ValueError,  # UnicodeDecodeError, numpy's header errors...
    OSError,  # a seek before the start: the archive is in memory, so no real I/O error
    SyntaxError,
    RecursionError,
    OverflowError,
    NotImplementedError,
    RuntimeError,
)


@contextlib.contextmanager
def _archive_errors() -> Iterator[None]:
    """Turn what zipfile and numpy raise on a malformed archive into tensorwire errors."""
    try:
        yield
    except TensorwireError:
        raise
    except zipfile.BadZipFile as e:
        if "CRC" in str(e):
            raise IntegrityError(f"{_WHAT}: {shown(str(e))[1:-1]}") from None
        raise FormatError(f"{_WHAT}: not a valid zip archive: {shown(str(e))[1:-1]}") from None
    except _MALFORMED as e:
        raise FormatError(f"{_WHAT}: malformed archive: {shown(str(e))[1:-1]}") from None


def _read(buf: memoryview) -> dict[str, np.ndarray]:
    with _archive_errors(), zipfile.ZipFile(_ViewFile(buf), mode="r") as zf:
        out = {}
        for info in _check_members(zf, len(buf)):
            key = info.filename[: -len(".npy")]
            if info.compress_type == zipfile.ZIP_STORED:
                out[key] = _stored_member(buf, info)
            else:
                out[key] = _read_member(zf, info)
        return out


def loads(data: Any) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` blob, by name (without ``.npy``), in archive order.

    Arrays are read-only (like every tensorwire loader's): stored members are views into
    ``data`` where aligned, deflated ones own their bytes; ``.copy()`` one to modify it.
    """
    return _read(buffer_of(data, _WHAT))


def stored(data: Any) -> dict[str, tuple[str, int]]:
    """Each member's zip method (``"stored"`` or ``"deflate"``) and stored size in bytes
    (compressed, including the ``.npy`` header), by name; reads the zip directory only."""
    buf = buffer_of(data, _WHAT)
    with _archive_errors(), zipfile.ZipFile(_ViewFile(buf), mode="r") as zf:
        return {
            i.filename[: -len(".npy")]: (
                "deflate" if i.compress_type == zipfile.ZIP_DEFLATED else "stored",
                i.compress_size,
            )
            for i in _check_members(zf, len(buf))
        }


def dump(tensors: Any, path: PathLike, *, compressed: bool = False) -> None:
    """Write ``tensors`` to the file ``path`` (atomically); see :func:`dumps`."""
    write_file(path, dumps(tensors, compressed=compressed))


def load(path: PathLike) -> dict[str, np.ndarray]:
    """The arrays of the file ``path`` (memory-mapped); see :func:`loads`."""
    return loads(read_file(path))


def sniff(data: Any) -> bool:
    """Whether ``data`` starts like a zip archive (a local file header or an empty one)."""
    return bytes(memoryview(data)[:4]) in (b"PK\x03\x04", b"PK\x05\x06")


def describe(path: PathLike) -> Description:
    """The tensors of the file ``path``, each with its zip method and stored size."""
    with open(path, "rb") as f:
        methods = stored(f.read())
    tensors = load(path)
    rows = [
        row._replace(codec=methods[row.name][0], stored=methods[row.name][1])
        for row in stored_as_is(tensors)
    ]
    return Description(rows, lambda: tensors)
