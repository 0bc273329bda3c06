"""The types tensorwire's signatures name, for annotations: ``CodecSpec`` (what
``codec=`` takes), ``Reader`` (what ``tensorwire.open`` returns), ``TensorInfo`` (what
``Reader.info`` returns), ``Chunks`` (what ``tensorwire.chunk`` returns) and
``UpdateInfo`` (what ``tensorwire.fl.update_info`` returns)."""

from __future__ import annotations

from ._aggregate import UpdateInfo
from ._chunk import Chunks
from ._container import CodecSpec, Reader, TensorInfo

__all__ = ["Chunks", "CodecSpec", "Reader", "TensorInfo", "UpdateInfo"]
