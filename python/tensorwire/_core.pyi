"""Type stubs of the Rust extension module (hand-written; see src/bindings/)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional, Protocol, Union

import numpy as np
from typing_extensions import Buffer, final

__all__ = [
    "Accumulator",
    "CHUNK_HEADER_LEN",
    "AuthenticationError",
    "Chunks",
    "DTYPES",
    "ClosedError",
    "CodecError",
    "EncodedChunks",
    "FORMAT_VERSION",
    "FormatError",
    "InputError",
    "IntegrityError",
    "MAX_DEPTH",
    "MAX_HEADER_LEN",
    "MAX_NAME_LEN",
    "MAX_RANK",
    "MAX_TENSORS",
    "Partial",
    "Payload",
    "Reassembler",
    "TensorwireError",
    "__version__",
    "aggregate",
    "chunk",
    "chunk_info",
    "codec_needs_base",
    "encode",
    "encode_chunks",
    "encode_into",
    "encoded_size",
    "generate_signing_key",
    "key_id",
    "not_stored",
    "numpy_dtypes",
    "preamble_content_id",
    "public_key",
    "read_partial",
    "save",
    "tensors_id",
    "unflatten",
    "write_file",
]

__version__: str
FORMAT_VERSION: tuple[int, int]
MAX_HEADER_LEN: int
MAX_TENSORS: int
MAX_RANK: int
MAX_DEPTH: int
MAX_NAME_LEN: int
# (name, itemsize, numpy type string, or None for the types of ml_dtypes)
DTYPES: tuple[tuple[str, int, Optional[str]], ...]

def numpy_dtypes() -> dict[str, np.dtype]: ...
def not_stored(leaves: list[Any]) -> list[int]: ...

# -- exceptions (src/bindings/errors.rs) ------------------------------------------------
class TensorwireError(Exception):
    """Base class of every error tensorwire raises.

    Where the error concerns one, ``tensor`` is the tensor's name, ``update`` the number
    of the update in an aggregation, ``chunk`` a ``(payload_id, index, count)`` tuple and
    ``limit`` a ``(name, value, allowed)`` tuple of the documented limit that was broken;
    None otherwise."""

    tensor: Optional[str]
    update: Optional[int]
    chunk: Optional[tuple[str, int, int]]
    limit: Optional[tuple[str, int, int]]

class FormatError(TensorwireError, ValueError):
    """The payload is malformed, of an unsupported version, or breaks a documented limit."""

class IntegrityError(TensorwireError, ValueError):
    """Bytes do not match their checksum, the payload is truncated, or a delta's base
    is missing or different from the one it was encoded against."""

class AuthenticationError(IntegrityError):
    """Who made the payload cannot be established: it is not authenticated, it was
    authenticated with another key or signed by a key that is not trusted, or it was
    altered after it was made (every plain checksum may have been recomputed)."""

class CodecError(TensorwireError, ValueError):
    """A codec spec is invalid, or a codec stage does not fit a tensor."""

class InputError(TensorwireError, TypeError):
    """The input cannot be encoded: unsupported type or dtype, bad name, bad metadata."""

class ClosedError(TensorwireError, ValueError):
    """A method of a closed :class:`~tensorwire.Reader` was called (like a closed file)."""

class _EncodeArgs(Protocol):
    """What the encoders take (tensorwire._container._EncodeArgs): names, the tensors
    (C-contiguous numpy arrays of a stored dtype, read in place: the Python layer
    normalises the leaves ``not_stored`` lists), one codec spec or one per tensor, the
    bases of delta codecs aligned with the tensors, the structure JSON and the base id."""

    names: list[str]
    leaves: list[Any]
    codecs: Union[str, list[str]]
    bases: Optional[list[Optional[np.ndarray]]]
    structure: Optional[str]
    base_id: Optional[str]

def encode(
    args: _EncodeArgs,
    metadata: Optional[str] = None,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    encrypt: Optional[str] = None,
) -> bytes: ...
def encode_into(
    buffer: Buffer,
    args: _EncodeArgs,
    metadata: Optional[str] = None,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    encrypt: Optional[str] = None,
) -> int: ...
def encoded_size(
    args: _EncodeArgs,
    metadata: Optional[str] = None,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    encrypt: Optional[str] = None,
) -> tuple[int, bool]: ...
def save(
    args: _EncodeArgs,
    path: str,
    metadata: Optional[str] = None,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    encrypt: Optional[str] = None,
) -> None: ...
def preamble_content_id(data: Buffer) -> Optional[str]: ...
def tensors_id(names: list[str], tensors: list[Any]) -> str: ...
def unflatten(structure: Optional[str], names: list[str], leaves: list[Any]) -> Any: ...
def write_file(path: str, data: Buffer) -> None: ...

# (difference base id or None, base id or None, round, client, samples)
_Record = tuple[Optional[str], Optional[str], Optional[int], Optional[str], Optional[float]]

@final
class Payload:
    def __new__(
        cls,
        buffer: Buffer,
        update: Optional[int] = None,
        keys: Optional[Sequence[tuple[Optional[str], bytes]]] = None,
        trusted_keys: Optional[Sequence[bytes]] = None,
    ) -> Payload: ...
    def entries(
        self,
    ) -> list[tuple[str, str, tuple[int, ...], str, int, int, int, str]]: ...
    @property
    def structure(self) -> Optional[str]: ...
    @property
    def metadata(self) -> Optional[str]: ...
    @property
    def base_id(self) -> Optional[str]: ...
    @property
    def content_id(self) -> str: ...
    @property
    def signer(self) -> Optional[bytes]: ...
    @property
    def key_id(self) -> Optional[str]: ...
    @property
    def created(self) -> Optional[int]: ...
    @property
    def nonce(self) -> Optional[bytes]: ...
    @property
    def encrypted(self) -> Optional[str]: ...
    @property
    def version(self) -> tuple[int, int]: ...
    def __len__(self) -> int: ...
    def verify(self, indices: Optional[Sequence[int]] = None, padding: bool = False) -> None: ...
    def names(self) -> list[str]: ...
    def decoded_bytes(
        self,
        indices: Optional[Sequence[int]] = None,
        copied: bool = True,
        max_decoded_bytes: Optional[int] = None,
    ) -> int: ...
    def arrays(
        self,
        indices: Optional[Sequence[int]] = None,
        bases: Optional[Sequence[Optional[np.ndarray]]] = None,
        verify: bool = True,
        copy: bool = False,
        max_decoded_bytes: Optional[int] = None,
        out: Optional[Sequence[Optional[np.ndarray]]] = None,
    ) -> list[np.ndarray]: ...
    def update_record(self) -> Optional[_Record]: ...
    def check_base(self, base_id: Optional[str]) -> None: ...

# -- trust (src/bindings/trust.rs) ------------------------------------------------------
def key_id(key: bytes) -> str: ...
def generate_signing_key() -> bytes: ...
def public_key(signing_key: bytes) -> bytes: ...

# -- chunk framing (src/bindings/chunk.rs) ---------------------------------------------
CHUNK_HEADER_LEN: int

@final
class Chunks:
    def __iter__(self) -> Chunks: ...
    def __next__(self) -> bytes: ...
    def __len__(self) -> int: ...
    @property
    def payload_id(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def total_len(self) -> int: ...
    @property
    def next_index(self) -> Optional[int]: ...

@final
class EncodedChunks:
    def __iter__(self) -> EncodedChunks: ...
    def __next__(self) -> bytes: ...
    def __len__(self) -> int: ...
    @property
    def payload_id(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def total_len(self) -> int: ...
    @property
    def next_index(self) -> Optional[int]: ...

def chunk(
    blob: Buffer,
    max_bytes: int,
    payload_id: Optional[bytes] = None,
    key: Optional[bytes] = None,
) -> Chunks: ...
def encode_chunks(
    args: _EncodeArgs,
    max_bytes: int,
    metadata: Optional[str] = None,
    payload_id: Optional[bytes] = None,
    key: Optional[bytes] = None,
    signing_key: Optional[bytes] = None,
    encrypt: Optional[str] = None,
) -> EncodedChunks: ...
def chunk_info(chunk: Buffer, check_crc: bool = True) -> dict[str, Any]: ...

# -- reassembly (src/bindings/reassembler.rs) --------------------------------------------
@final
class Reassembler:
    def __new__(
        cls,
        *,
        max_pending_bytes: int = ...,
        max_payload_bytes: int = ...,
        timeout: float = 60.0,
        when_full: str = "evict",
        verify: bool = True,
        key: Optional[bytes] = None,
        keys: Optional[Union[Iterable[bytes], Mapping[str, bytes]]] = None,
        trusted_keys: Optional[Iterable[Union[bytes, str]]] = None,
    ) -> Reassembler: ...
    def add(self, chunk: Buffer, now: Optional[float] = None) -> Optional[bytes]: ...
    def evict_expired(self, now: Optional[float] = None) -> list[str]: ...
    def pending(self) -> list[tuple[str, int, int, int]]: ...
    def missing(
        self,
        idle: float = 0.0,
        max_idle: Optional[float] = None,
        limit: int = 1024,
        now: Optional[float] = None,
    ) -> list[tuple[str, int, int, float, list[int]]]: ...
    @property
    def pending_bytes(self) -> int: ...
    @property
    def stats(self) -> dict[str, int]: ...
    @property
    def key_ids(self) -> list[str]: ...
    @property
    def trusted_keys(self) -> Optional[list[bytes]]: ...
    @property
    def max_pending_bytes(self) -> int: ...
    @property
    def max_payload_bytes(self) -> int: ...
    @property
    def timeout(self) -> float: ...

# -- aggregation (src/bindings/aggregate.rs) ---------------------------------------
# (name, dtype name, shape)
_SpecArg = tuple[str, str, Sequence[int]]
# (name, dtype name, shape, uint8 view of the bytes)
_ViewArg = tuple[str, str, Sequence[int], Buffer]
# (parsed payload or None, tensors or None, difference base id or None, weight, number)
_UpdateArg = tuple[Optional[Payload], Optional[Sequence[_ViewArg]], Optional[str], float, int]

def aggregate(
    template: Sequence[_SpecArg],
    base_id: Optional[str],
    base: Optional[Sequence[Buffer]],
    updates: Sequence[_UpdateArg],
    out: Sequence[Buffer],
    clip_norm: Optional[float],
    max_norm: Optional[float],
    accumulate: str,
    method: str,
    verify: bool,
    skip: bool,
    scratch_out: bool,
) -> tuple[list[tuple[int, str]], list[float], list[float], bool]: ...
def codec_needs_base(spec: str) -> bool: ...

@final
class Accumulator:
    def __new__(
        cls,
        template: Sequence[_SpecArg],
        base_id: Optional[str],
        clip_norm: Optional[float],
        max_norm: Optional[float],
        accumulate: str,
        verify: bool,
    ) -> Accumulator: ...
    def add(
        self, update: _UpdateArg, base: Optional[Sequence[Buffer]]
    ) -> tuple[Optional[str], float, float]: ...
    def finish_into(self, base: Optional[Sequence[Buffer]], out: Sequence[Buffer]) -> None: ...
    def partial(
        self,
        round: Optional[int],
        signers: Sequence[bytes],
        nonces: Sequence[bytes],
        structure: Optional[str],
        codec: str,
        key: Optional[bytes],
        signing_key: Optional[bytes],
    ) -> bytes: ...
    def partial_chunks(
        self,
        round: Optional[int],
        signers: Sequence[bytes],
        nonces: Sequence[bytes],
        structure: Optional[str],
        codec: str,
        max_bytes: int,
        payload_id: Optional[bytes],
        key: Optional[bytes],
        signing_key: Optional[bytes],
    ) -> EncodedChunks: ...
    def merge(self, partial: Partial) -> Optional[str]: ...
    @property
    def count(self) -> int: ...
    @property
    def total_weight(self) -> float: ...

# -- partial aggregates (src/bindings/partial.rs) ----------------------------------------
@final
class Partial:
    @property
    def round(self) -> Optional[int]: ...
    @property
    def count(self) -> int: ...
    @property
    def total_weight(self) -> float: ...
    @property
    def base_id(self) -> Optional[str]: ...
    @property
    def structure(self) -> Optional[str]: ...
    def specs(self) -> list[tuple[str, str, list[int]]]: ...
    def content_ids(self) -> list[str]: ...
    def signers(self) -> list[bytes]: ...
    def nonces(self) -> list[bytes]: ...

def read_partial(payload: Payload) -> tuple[Optional[Partial], Optional[str]]: ...
