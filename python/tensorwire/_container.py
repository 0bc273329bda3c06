"""encode / decode / save / load / open: the Python face of the Rust container."""

from __future__ import annotations

import fnmatch
import json
import mmap
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, Union

import numpy as np

from . import _core
from ._arrays import as_array, normalised
from ._errors import ClosedError, FormatError, InputError, IntegrityError
from ._structure import flatten, unflatten
from ._trust import Encryption, Keys, encryption, optional_secret, reader_keys, trusted

__all__ = [
    "CodecSpec",
    "Reader",
    "TensorInfo",
    "decode",
    "encode",
    "encode_into",
    "encoded_size",
    "load",
    "open",
    "save",
]

CodecSpec = Union[str, Mapping[str, str], Callable[[str, np.ndarray], str]]
PathLike = Union[str, "os.PathLike[str]"]

# The least stored bytes Reader.verify checks per call into the core when it reports
# progress: parts this large cost nothing measurable over one call for all of them.
_VERIFY_PART_BYTES = 16 << 20


class TensorInfo(NamedTuple):
    """What the header says about one tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str
    stored_bytes: int
    nbytes: int
    hash: str


def _codec_for(codec: CodecSpec, name: str, array: np.ndarray) -> str:
    if isinstance(codec, str):
        return codec
    if isinstance(codec, Mapping):
        for pattern, spec in codec.items():
            if fnmatch.fnmatchcase(name, pattern):
                return spec
        return "raw"
    if callable(codec):
        spec = codec(name, array)
        if not isinstance(spec, str):
            raise InputError(f"codec callable returned {type(spec).__name__} for {name!r}, not str")
        return spec
    raise InputError(f"codec must be a str, a mapping or a callable, not {type(codec).__name__}")


def _metadata_json(metadata: Any) -> str | None:
    if metadata is None:
        return None
    try:
        return json.dumps(metadata, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as e:
        raise InputError(f"metadata must be JSON-compatible: {e}") from e


def _arrays_by_name(tensors: Any) -> dict[str, np.ndarray]:
    leaves, _ = flatten(tensors)
    return {name: as_array(x, name) for name, x in leaves}


def _base_id(base: Mapping[str, np.ndarray]) -> str:
    return _core.tensors_id(list(base), list(base.values()))


class _EncodeArgs(NamedTuple):
    """What the Rust encoders take: names, leaves (numpy arrays the Rust layer reads in
    place, each normalised once here where needed), codec spec(s), bases."""

    names: list[str]
    leaves: list[Any]
    codecs: str | list[str]
    bases: list[np.ndarray | None] | None
    structure: str | None
    base_id: str | None


def _encode_args(tensors: Any, codec: CodecSpec, base: Any) -> _EncodeArgs:
    leaves, structure = flatten(tensors)
    names = [n for n, _ in leaves]
    values = normalised(names, [x for _, x in leaves])
    codecs: str | list[str]
    if isinstance(codec, str):
        codecs = codec
    else:
        codecs = [_codec_for(codec, n, a) for n, a in zip(names, values)]
    if base is None:
        return _EncodeArgs(names, values, codecs, None, structure, None)
    base_arrays = _arrays_by_name(base)
    bases: list[np.ndarray | None] = []
    for name, a in zip(names, values):
        b = base_arrays.get(name)
        if b is not None:
            if b.shape != a.shape or b.dtype != a.dtype:
                raise InputError(
                    f"tensor {name!r}: base is {b.dtype}{list(b.shape)}, "
                    f"tensor is {a.dtype}{list(a.shape)}"
                )
        bases.append(b)
    return _EncodeArgs(names, values, codecs, bases, structure, _base_id(base_arrays))


def encode(
    tensors: Any,
    *,
    codec: CodecSpec = "raw",
    metadata: Any = None,
    base: Any = None,
    key: Any = None,
    signing_key: Any = None,
    encrypt: Encryption = False,
) -> bytes:
    """Encode ``tensors`` into a tensorwire payload.

    ``tensors`` is a ``Mapping[str, array]``, a list/tuple of arrays, or a nesting of
    those; arrays are numpy arrays or anything with ``__array__``/``__dlpack__``.
    ``codec`` is one spec (``"raw"``, ``"zstd"``, ``"shuffle+zstd:3"``...), a mapping of
    name globs to specs (first match wins, unmatched tensors stay raw), or a callable
    ``(name, array) -> spec``. ``metadata`` is any JSON-compatible value. ``base`` holds
    the tensors a delta codec encodes against. ``key`` (32 bytes shared with the
    receivers) authenticates the payload: its header hash becomes a keyed BLAKE3, and
    readers need the key. ``signing_key`` (from :func:`generate_signing_key`) signs it
    with Ed25519; readers check it against :func:`public_key` of it (``trusted_keys=``).
    ``encrypt=True`` (needs ``key``) encrypts every tensor's bytes after its codec with
    XChaCha20-Poly1305, block by block; ``encrypt="all"`` also hides the names, dtypes,
    shapes, codecs, structure and metadata (the key id, creation time and signer stay
    visible). Returns ``bytes``, written in place.
    """
    return _core.encode(
        _encode_args(tensors, codec, base),
        _metadata_json(metadata),
        optional_secret(key, "key"),
        optional_secret(signing_key, "signing_key"),
        encryption(encrypt),
    )


def encode_into(
    buffer: Any,
    tensors: Any,
    *,
    codec: CodecSpec = "raw",
    metadata: Any = None,
    base: Any = None,
    key: Any = None,
    signing_key: Any = None,
    encrypt: Encryption = False,
) -> int:
    """Encode ``tensors`` into the start of ``buffer``; return the bytes written.

    ``buffer`` is any writable, C-contiguous bytes-like object (``bytearray``, a numpy
    array, a writable ``mmap`` or ``memoryview``) that shares no memory with the
    tensors; read-only ones are an :class:`InputError`. Reused across calls, it spares
    the payload's fresh pages (the kernel zeroes each one first, slower than encoding
    raw tensors): size it once with :func:`encoded_size`. The payload is
    ``buffer[:n]``; the bytes after it are never touched.

    A payload that does not fit is an :class:`InputError` whose ``needed`` and
    ``available`` attributes give its size and the buffer's; nothing is promised of the
    buffer's contents then (codecs ran first; nothing was written, but do not rely on
    it), and nothing is ever written past its end. Options as for :func:`encode`.
    """
    return _core.encode_into(
        buffer,
        _encode_args(tensors, codec, base),
        _metadata_json(metadata),
        optional_secret(key, "key"),
        optional_secret(signing_key, "signing_key"),
        encryption(encrypt),
    )


def encoded_size(
    tensors: Any,
    *,
    codec: CodecSpec = "raw",
    metadata: Any = None,
    base: Any = None,
    key: Any = None,
    signing_key: Any = None,
    encrypt: Encryption = False,
) -> int:
    """The size in bytes of the payload :func:`encode` makes of ``tensors``.

    Exact when every tensor is stored raw, whatever ``metadata``, ``key``,
    ``signing_key`` and ``encrypt`` say (they are counted to the byte). With other
    codecs it is an upper bound computed without running them: the most each codec can
    store for the tensor's shape, whatever its values (compressed data that does not
    shrink, every entry kept by ``topk``/``threshold``); ``"auto"`` is first resolved
    on the tensor's values, as encoding does. Options as for :func:`encode`.
    """
    size, _exact = _core.encoded_size(
        _encode_args(tensors, codec, base),
        _metadata_json(metadata),
        optional_secret(key, "key"),
        optional_secret(signing_key, "signing_key"),
        encryption(encrypt),
    )
    return int(size)


def save(
    tensors: Any,
    path: PathLike,
    *,
    codec: CodecSpec = "raw",
    metadata: Any = None,
    base: Any = None,
    key: Any = None,
    signing_key: Any = None,
    encrypt: Encryption = False,
) -> None:
    """Encode ``tensors`` into the file ``path``, atomically (temporary file + rename).

    Raw tensors stream from memory to disk; the payload is never held a second time.
    Options as for :func:`encode`.
    """
    _core.save(
        _encode_args(tensors, codec, base),
        os.fspath(path),
        _metadata_json(metadata),
        optional_secret(key, "key"),
        optional_secret(signing_key, "signing_key"),
        encryption(encrypt),
    )


def _read_file(path: PathLike, use_mmap: bool) -> Any:
    """The bytes of the regular file ``path``: a read-only map, or a private copy.

    The file is opened without blocking, so a FIFO or a device is refused instead of
    waiting for a writer forever."""
    where = os.fspath(path)
    fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{where} is not a regular file, not a tensorwire payload")
        if st.st_size == 0:
            raise FormatError(f"{where} is empty, not a tensorwire payload")
        if use_mmap:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        with builtins_open(fd, "rb", closefd=False) as f:
            data = f.read()
        if len(data) != st.st_size:
            raise IntegrityError(f"{where} changed size while it was read")
        return data
    finally:
        os.close(fd)


builtins_open = open


class Reader:
    """A lazy view of one payload: parses and validates the header, reads tensors on demand.

    ``source`` is a bytes-like object (bytes, bytearray, memoryview, mmap) or a path. A
    writable buffer (bytearray, a writable numpy array or memoryview) is copied once, so
    that what is verified is what is returned; read-only ones are used in place. A path
    is memory-mapped (``mmap=True``, the default) or read into private memory
    (``mmap=False``).

    With ``mmap=True`` the arrays returned for raw tensors are views of the file itself:
    if another process truncates the file while they are in use, touching them kills
    this process with SIGBUS, and if it rewrites the file in place they change under you
    — after they were verified. Use ``mmap=False`` for files others may modify.

    Tensors stored raw are returned as read-only views into the source unless
    ``copy=True``. ``max_decoded_bytes`` bounds what one read may allocate for decoded
    tensors (None: 256 times the payload's size plus 1 GiB); beyond it, a
    :class:`FormatError`. After :meth:`close`, every method raises :class:`ClosedError`.

    ``key`` (or ``keys``: ``{key_id: key}`` or a list of keys) is required for
    authenticated payloads and, when given, makes every other payload an
    :class:`AuthenticationError`; ``trusted_keys`` (public keys) accepts only payloads
    signed by one of them. A signature present is always checked. All of it happens here,
    before any tensor is read (docs/FORMAT.md section 10).
    """

    def __init__(
        self,
        source: Any,
        *,
        mmap: bool = True,
        max_decoded_bytes: int | None = None,
        key: Any = None,
        keys: Keys | None = None,
        trusted_keys: Any = None,
    ) -> None:
        if isinstance(source, (str, os.PathLike)):
            source = _read_file(source, mmap)
        self._source = source
        self._payload: Any = _core.Payload(
            source, None, reader_keys(key, keys), trusted(trusted_keys)
        )
        self._names: list[str] = self._payload.names()
        self._infos: list[TensorInfo] | None = None
        self._index: dict[str, int] | None = None
        self._max_decoded_bytes = max_decoded_bytes
        # (base object, its leaves, its arrays by name, its id): the last base given
        self._base: tuple[Any, list[Any], dict[str, np.ndarray], str] | None = None

    def _live(self) -> Any:
        if self._payload is None:
            raise ClosedError("I/O operation on a closed tensorwire reader")
        return self._payload

    # -- mapping-like access -------------------------------------------------------
    def keys(self) -> list[str]:
        """Tensor names, in storage order."""
        self._live()
        return list(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        self._live()
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        self._live()
        return name in self._name_index()

    def info(self, name: str) -> TensorInfo:
        """Name, dtype, shape, codec, stored size, decoded size and hash of one tensor."""
        payload = self._live()
        i = self._lookup(name)
        if self._infos is None:
            self._infos = [
                TensorInfo(n, d, sh, c, ln, nb, h)
                for n, d, sh, c, _, ln, nb, h in payload.entries()
            ]
        return self._infos[i]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.get(name)

    # -- payload-level facts ---------------------------------------------------------
    @property
    def metadata(self) -> Any:
        """The user metadata (any JSON value), or None. Parsed on each access."""
        m = self._live().metadata
        return None if m is None else json.loads(m)

    @property
    def content_id(self) -> str:
        """blake3 of the header (which covers every tensor's hash): the payload's id."""
        return str(self._live().content_id)

    @property
    def base_id(self) -> str | None:
        """For delta payloads, the id of the base tensors they were encoded against."""
        return self._live().base_id  # type: ignore[no-any-return]

    @property
    def version(self) -> tuple[int, int]:
        """(major, minor) format version of the payload."""
        return self._live().version  # type: ignore[no-any-return]

    @property
    def signer(self) -> bytes | None:
        """The signer's 32-byte Ed25519 public key (verified), or None if unsigned."""
        return self._live().signer  # type: ignore[no-any-return]

    @property
    def key_id(self) -> str | None:
        """The id of the key an authenticated payload was made with, or None."""
        return self._live().key_id  # type: ignore[no-any-return]

    @property
    def created(self) -> int | None:
        """When an authenticated or signed payload was made (unix ms), or None."""
        return self._live().created  # type: ignore[no-any-return]

    @property
    def encrypted(self) -> Encryption:
        """What is encrypted: False, True (the tensors' bytes) or ``"all"`` (the header
        too), as ``encrypt=`` of :func:`encode` said. Encrypted tensors decode into new
        arrays, never views of the payload."""
        return {None: False, "tensors": True, "all": "all"}[self._live().encrypted]

    @property
    def nonce(self) -> bytes | None:
        """The 16 random bytes of an authenticated or signed payload, or None."""
        return self._live().nonce  # type: ignore[no-any-return]

    def verify(self, *, progress: Callable[[int], None] | None = None) -> None:
        """Check every checksum (and that padding is zero); raise IntegrityError if not.

        ``progress``, when given, is called as the work goes with the stored bytes just
        checked (the calls add up to the payload's stored tensor bytes): the tensors are
        then checked in parts of whole tensors, one call into the core each, each part of
        at least 16 MiB or a 256th of the whole, whichever is more."""
        payload = self._live()
        lengths = [entry[5] for entry in payload.entries()] if progress is not None else []
        if progress is None or not lengths:
            payload.verify(None)
            return
        part_bytes = max(_VERIFY_PART_BYTES, sum(lengths) // 256)
        start, stored = 0, 0
        for i, length in enumerate(lengths):
            stored += length
            if stored >= part_bytes or i == len(lengths) - 1:
                # the padding between tensors is checked once, with the first part
                payload.verify(list(range(start, i + 1)), padding=start == 0)
                progress(stored)
                start, stored = i + 1, 0

    # -- reading tensors -------------------------------------------------------------
    def _name_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self._names)}
        return self._index

    def _lookup(self, name: str) -> int:
        try:
            return self._name_index()[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this payload") from None

    def _base_of(self, base: Any) -> tuple[dict[str, np.ndarray], str]:
        """The arrays and the id of ``base``. The id hashes every base tensor, so it is
        computed once per base: again only when another base object, or the same one
        holding other tensor objects, is given (tensors changed in place are not seen)."""
        leaves = [x for _, x in flatten(base)[0]]
        cached = self._base
        if (
            cached is not None
            and cached[0] is base
            and len(cached[1]) == len(leaves)
            and all(a is b for a, b in zip(cached[1], leaves))
        ):
            return cached[2], cached[3]
        arrays = _arrays_by_name(base)
        base_id = _base_id(arrays)
        self._base = (base, leaves, arrays, base_id)
        return arrays, base_id

    def _read(
        self,
        indices: list[int] | None,
        *,
        base: Any,
        verify: bool,
        copy: bool,
        out: Mapping[str, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        payload = self._live()
        outs = None
        if out is not None:
            if not isinstance(out, Mapping):
                raise InputError(
                    f"out= must be a mapping of names to arrays, not {type(out).__name__}"
                )
            index = self._name_index()
            unknown = [n for n in out if n not in index]
            if unknown:
                raise InputError(f"out= names {unknown[0]!r}, which is no tensor of this payload")
            names = self._names if indices is None else [self._names[i] for i in indices]
            outs = [out.get(n) for n in names]
        bases = None
        if payload.base_id is not None:
            base_arrays, base_id = self._base_of(base) if base is not None else ({}, None)
            payload.check_base(base_id)
            names = self._names if indices is None else [self._names[i] for i in indices]
            bases = [base_arrays.get(n) for n in names]
        return payload.arrays(indices, bases, verify, copy, self._max_decoded_bytes, outs)  # type: ignore[no-any-return]

    def get(
        self, name: str, *, base: Any = None, verify: bool = False, copy: bool = False
    ) -> np.ndarray:
        """One tensor; ``verify=True`` checks its checksum first."""
        self._live()
        return self._read([self._lookup(name)], base=base, verify=verify, copy=copy)[0]

    def tensors(
        self,
        *,
        base: Any = None,
        verify: bool = True,
        copy: bool = False,
        out: Mapping[str, np.ndarray] | None = None,
    ) -> Any:
        """Every tensor, in the structure that was encoded; ``out`` as for :func:`decode`."""
        arrays = self._read(None, base=base, verify=verify, copy=copy, out=out)
        return unflatten(self._live().structure, self._names, arrays)

    # -- lifetime --------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._payload is None

    def close(self) -> None:
        """Drop the reader's hold on its source (arrays already returned stay valid)."""
        self._payload = None
        self._base = None
        if isinstance(self._source, mmap.mmap):
            try:
                self._source.close()
            except BufferError:
                pass  # arrays returned earlier still view the map; it closes with them

    def __enter__(self) -> Reader:
        self._live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._payload is None:
            return "<tensorwire.Reader closed>"
        return f"<tensorwire.Reader {len(self)} tensors, content_id={self.content_id[:16]}...>"


def open(
    source: Any,
    *,
    mmap: bool = True,
    max_decoded_bytes: int | None = None,
    key: Any = None,
    keys: Keys | None = None,
    trusted_keys: Any = None,
) -> Reader:
    """Open a payload (bytes-like object or path) lazily; use as a context manager.
    Options as for :class:`Reader`."""
    return Reader(
        source,
        mmap=mmap,
        max_decoded_bytes=max_decoded_bytes,
        key=key,
        keys=keys,
        trusted_keys=trusted_keys,
    )


def _as_framework(tree: Any, framework: str | None) -> Any:
    if framework is None or framework == "numpy":
        return tree
    from .frameworks import convert

    return convert(tree, framework)


def decode(
    blob: Any,
    *,
    base: Any = None,
    verify: bool = True,
    copy: bool = False,
    out: Mapping[str, np.ndarray] | None = None,
    framework: str | None = None,
    max_decoded_bytes: int | None = None,
    key: Any = None,
    keys: Keys | None = None,
    trusted_keys: Any = None,
) -> Any:
    """Decode a payload into the structure that was encoded.

    Raw tensors come back as read-only views into ``blob`` (kept alive by the arrays)
    unless ``copy=True``; a writable ``blob`` (bytearray...) is copied once first, so the
    arrays are what was verified. ``verify=False`` skips the data checksums: the header
    and every coded tensor's framing are still validated, so the arrays always have the
    declared shapes, but damaged data can go unnoticed. ``base`` is required for delta
    payloads. ``max_decoded_bytes`` bounds the memory allocated for decoded tensors
    (None: 256 times ``len(blob)`` plus 1 GiB; raise it for payloads you trust that
    expand more, such as sparse updates of very large models). ``framework``
    (``"torch"``, ``"jax"``, ``"keras"``) returns that framework's tensors, sharing memory
    where it can (see :mod:`tensorwire.frameworks`). ``key``/``keys`` and
    ``trusted_keys`` say which authenticated and signed payloads are accepted (see
    :class:`Reader`; refusals are :class:`AuthenticationError`, also with
    ``verify=False``). For files use :func:`load`.

    ``out`` (a mapping of tensor names, as :meth:`Reader.keys` lists them, to numpy
    arrays) decodes those tensors into the given arrays, which are returned in their
    places: each must be writable, C-contiguous and of exactly the tensor's dtype and
    shape, and share no memory with another. A training loop reusing them touches no
    fresh memory for raw tensors, which are copied straight in. Every array is checked,
    and every checksum (with ``verify``), before anything is written, and they are
    written all or nothing: a refusal (an :class:`InputError` naming the tensor, or the
    payload's own error) leaves every one of them as it was. Coded tensors decode into
    temporary memory first, for that guarantee. Tensors not named are decoded as
    without ``out``.
    """
    if isinstance(blob, (str, os.PathLike)):
        raise InputError("decode takes a bytes-like payload; use tensorwire.load for a path")
    reader = Reader(
        blob, max_decoded_bytes=max_decoded_bytes, key=key, keys=keys, trusted_keys=trusted_keys
    )
    return _as_framework(reader.tensors(base=base, verify=verify, copy=copy, out=out), framework)


def load(
    path: PathLike,
    *,
    base: Any = None,
    verify: bool = True,
    copy: bool = False,
    out: Mapping[str, np.ndarray] | None = None,
    framework: str | None = None,
    mmap: bool = True,
    max_decoded_bytes: int | None = None,
    key: Any = None,
    keys: Keys | None = None,
    trusted_keys: Any = None,
) -> Any:
    """Decode the payload in the file ``path``: memory-mapped (``mmap=True``; see
    :class:`Reader` for what that means if others modify the file) or read into private
    memory (``mmap=False``). Other options (``out`` too) as for :func:`decode`."""
    reader = Reader(
        path,
        mmap=mmap,
        max_decoded_bytes=max_decoded_bytes,
        key=key,
        keys=keys,
        trusted_keys=trusted_keys,
    )
    return _as_framework(reader.tensors(base=base, verify=verify, copy=copy, out=out), framework)
