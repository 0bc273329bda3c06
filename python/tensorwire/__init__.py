"""tensorwire: a fast, safe, self-describing wire format for model weights and updates.

>>> import numpy as np, tensorwire as tw
>>> blob = tw.encode({"w": np.ones((2, 3), np.float32)})
>>> tw.decode(blob)["w"].shape
(2, 3)
"""

from __future__ import annotations

from . import formats, frameworks
from ._aggregate import (
    Aggregator,
    MismatchError,
    MismatchWarning,
    UpdateInfo,
    aggregate,
    update_info,
)
from ._chunk import CHUNK_HEADER_LEN, Chunks, Reassembler, chunk, chunk_info, encode_chunks
from ._client import ErrorFeedback, encode_update
from ._container import CodecSpec, Reader, TensorInfo, decode, encode, load, open, save
from ._core import FORMAT_VERSION, __version__
from ._errors import (
    ClosedError,
    CodecError,
    FormatError,
    InputError,
    IntegrityError,
    TensorwireError,
)

__all__ = [
    "CHUNK_HEADER_LEN",
    "FORMAT_VERSION",
    "Aggregator",
    "ErrorFeedback",
    "MismatchError",
    "MismatchWarning",
    "UpdateInfo",
    "aggregate",
    "encode_update",
    "update_info",
    "ClosedError",
    "CodecError",
    "Chunks",
    "CodecSpec",
    "FormatError",
    "InputError",
    "IntegrityError",
    "Reader",
    "Reassembler",
    "TensorInfo",
    "TensorwireError",
    "__version__",
    "chunk",
    "chunk_info",
    "decode",
    "encode",
    "formats",
    "frameworks",
    "encode_chunks",
    "load",
    "open",
    "save",
]
