"""Type stubs of the Rust extension module (hand-written; see src/bindings/)."""

from collections.abc import Sequence
from typing import Optional

from typing_extensions import Buffer, final

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_LEN",
    "MAX_NAME_LEN",
    "MAX_RANK",
    "MAX_TENSORS",
    "Payload",
    "encode",
    "save",
    "__version__",
    "tensors_id",
]

__version__: str
FORMAT_VERSION: tuple[int, int]
MAX_HEADER_LEN: int
MAX_TENSORS: int
MAX_RANK: int
MAX_NAME_LEN: int

# (name, dtype name, shape, uint8 view of the bytes, codec spec, base bytes or None)
_TensorArg = tuple[str, str, Sequence[int], Buffer, str, Optional[Buffer]]

def encode(
    tensors: Sequence[_TensorArg],
    structure: Optional[str] = None,
    metadata: Optional[str] = None,
    base_id: Optional[str] = None,
) -> bytes: ...
def save(
    tensors: Sequence[_TensorArg],
    path: str,
    structure: Optional[str] = None,
    metadata: Optional[str] = None,
    base_id: Optional[str] = None,
) -> None: ...
def tensors_id(tensors: Sequence[tuple[str, str, Sequence[int], Buffer]]) -> str: ...

@final
class Payload:
    def __new__(cls, buffer: Buffer) -> Payload: ...
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
