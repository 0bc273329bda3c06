"""Type stubs of the Rust extension module (hand-written; see src/bindings/)."""

from collections.abc import Sequence
from typing import Optional

from typing_extensions import Buffer

__version__: str
FORMAT_VERSION: tuple[int, int]
MAX_HEADER_LEN: int
MAX_TENSORS: int
MAX_RANK: int
MAX_NAME_LEN: int

# (name, dtype name, shape, uint8 view of the bytes, codec spec, base bytes or None)
TensorArg = tuple[str, str, Sequence[int], Buffer, str, Optional[Buffer]]

def encode(
    tensors: Sequence[TensorArg],
    structure: Optional[str] = None,
    metadata: Optional[str] = None,
    base_id: Optional[str] = None,
) -> bytes: ...
def save(
    tensors: Sequence[TensorArg],
    path: str,
    structure: Optional[str] = None,
    metadata: Optional[str] = None,
    base_id: Optional[str] = None,
) -> None: ...
def tensors_id(tensors: Sequence[tuple[str, str, Sequence[int], Buffer]]) -> str: ...

class Payload:
    def __init__(self, buffer: Buffer) -> None: ...
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
    def version(self) -> tuple[int, int]: ...
    def verify(self, indices: Optional[Sequence[int]] = None) -> None: ...
    def decode_into(
        self, jobs: Sequence[tuple[int, Buffer, Optional[Buffer]]], verify: bool
    ) -> None: ...
    def check_base(self, base_id: Optional[str]) -> None: ...

# -- aggregation (src/bindings/aggregate.rs) ---------------------------------------
# (name, dtype name, shape)
SpecArg = tuple[str, str, Sequence[int]]
# (name, dtype name, shape, uint8 view of the bytes)
ViewArg = tuple[str, str, Sequence[int], Buffer]
# (payload or None, tensors or None, difference base id or None, weight)
UpdateArg = tuple[Optional[Buffer], Optional[Sequence[ViewArg]], Optional[str], float]

def aggregate(
    template: Sequence[SpecArg],
    base_id: Optional[str],
    base: Optional[Sequence[Buffer]],
    updates: Sequence[UpdateArg],
    out: Sequence[Buffer],
    clip_norm: Optional[float],
    accumulate: str,
    verify: bool,
    skip: bool,
) -> tuple[list[tuple[int, str]], list[int], list[float], list[float]]: ...
def codec_needs_base(spec: str) -> bool: ...

class Accumulator:
    def __init__(
        self,
        template: Sequence[SpecArg],
        base_id: Optional[str],
        clip_norm: Optional[float],
        accumulate: str,
        verify: bool,
    ) -> None: ...
    def add(
        self, update: UpdateArg, base: Optional[Sequence[Buffer]]
    ) -> tuple[Optional[str], float, float]: ...
    def finish_into(self, base: Optional[Sequence[Buffer]], out: Sequence[Buffer]) -> None: ...
    @property
    def count(self) -> int: ...
    @property
    def total_weight(self) -> float: ...
