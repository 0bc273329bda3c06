"""tensorwire: a fast, safe, self-describing wire format for model weights and updates.

>>> import numpy as np, tensorwire as tw
>>> blob = tw.encode({"w": np.ones((2, 3), np.float32)})
>>> tw.decode(blob)["w"].shape
(2, 3)

The top level holds the design contract and what users reach for; the rest lives in
public submodules: :mod:`tensorwire.fl` (federated rounds), :mod:`tensorwire.chunking`
(pieces for brokers), :mod:`tensorwire.types` (types for annotations),
:mod:`tensorwire.errors` (every exception), :mod:`tensorwire.formats` (foreign formats),
:mod:`tensorwire.frameworks` (torch, JAX, Keras), :mod:`tensorwire.transport` (brokers)
and :mod:`tensorwire.integrations` (Flower).
"""

from __future__ import annotations

from . import formats
from ._aggregate import Aggregator, aggregate
from ._chunk import Reassembler, chunk, encode_chunks
from ._client import encode_update
from ._container import Reader, decode, encode, encode_into, encoded_size, load, open, save
from ._core import FORMAT_VERSION, __version__
from ._errors import (
    AuthenticationError,
    CodecError,
    FormatError,
    InputError,
    IntegrityError,
    TensorwireError,
)
from ._trust import generate_signing_key, key_id, public_key

__all__ = [
    "FORMAT_VERSION",
    "Aggregator",
    "AuthenticationError",
    "CodecError",
    "FormatError",
    "InputError",
    "IntegrityError",
    "Reader",
    "Reassembler",
    "TensorwireError",
    "__version__",
    "aggregate",
    "chunk",
    "decode",
    "encode",
    "encode_chunks",
    "encode_into",
    "encode_update",
    "encoded_size",
    "formats",
    "generate_signing_key",
    "key_id",
    "load",
    "open",
    "public_key",
    "save",
]
