"""The optional dependencies: each imported only when a feature needs it, and when it is
missing, an ``ImportError`` naming the extra that installs it (``tensorwire[kafka]``)."""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra -> (the module imported, the distribution pip installs)
EXTRAS: dict[str, tuple[str, str]] = {
    "bf16": ("ml_dtypes", "ml_dtypes"),
    "flower": ("flwr.app", "flwr"),
    "jax": ("jax", "jax"),
    "kafka": ("confluent_kafka", "confluent-kafka"),
    "nats": ("nats", "nats-py"),
    "torch": ("torch", "torch"),
}


def missing(extra: str, feature: str) -> ImportError:
    """The error for ``feature`` when the extra ``extra`` is not installed."""
    module, package = EXTRAS[extra]
    return ModuleNotFoundError(
        f"{feature} needs {package}: pip install 'tensorwire[{extra}]'", name=module
    )


def require(extra: str, feature: str, module: str | None = None) -> ModuleType:
    """The module of ``extra`` (or its submodule ``module``), imported now, or the error
    naming the extra."""
    try:
        return importlib.import_module(module or EXTRAS[extra][0])
    except ImportError as e:
        raise missing(extra, feature) from e
