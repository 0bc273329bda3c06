"""Federated rounds: the client's update (``encode_update``, ``ErrorFeedback``), the
server's average (``aggregate``, ``Aggregator``), the update record a payload carries
(``update_info``, ``UpdateInfo``, ``UPDATE_KEY``), what a partial aggregate counts
(``partial_info``, ``PartialInfo``) and the refusals (``MismatchError``,
``MismatchWarning``). See docs/federated.md.

>>> import numpy as np
>>> from tensorwire import fl
>>> old = {"w": np.zeros(3, np.float32)}
>>> update = fl.encode_update(old, {"w": np.ones(3, np.float32)}, num_samples=10)
>>> fl.update_info(update).samples
10.0
"""

from __future__ import annotations

from ._aggregate import (
    UPDATE_KEY,
    Aggregator,
    MismatchError,
    MismatchWarning,
    PartialInfo,
    UpdateInfo,
    aggregate,
    partial_info,
    update_info,
)
from ._client import ErrorFeedback, encode_update

__all__ = [
    "UPDATE_KEY",
    "Aggregator",
    "ErrorFeedback",
    "MismatchError",
    "MismatchWarning",
    "PartialInfo",
    "UpdateInfo",
    "aggregate",
    "encode_update",
    "partial_info",
    "update_info",
]
