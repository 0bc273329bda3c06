"""A throwaway Kafka-protocol broker for the tests: tansu (crates.io), memory storage, on a
free loopback port in a scratch directory, stopped after. `make kafka-broker` builds it
once into ~/.cache/tensorwire/tansu; TANSU names another binary."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any, Optional

import pytest
from local_process import free_port, listening

__all__ = [
    "CACHED_BINARY",
    "consumer_config",
    "create_topic",
    "find_broker_binary",
    "local_broker",
    "require_broker",
]

CACHED_BINARY = os.path.expanduser("~/.cache/tensorwire/tansu/bin/tansu")


def find_broker_binary() -> Optional[str]:
    """The tansu executable: $TANSU, then PATH, then the cache `make kafka-broker` fills."""
    for candidate in (os.environ.get("TANSU"), shutil.which("tansu"), CACHED_BINARY):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_broker() -> None:
    """Skip without the broker or confluent-kafka, except in CI (`make test` installs
    both), where their absence is a failure."""
    missing = []
    if find_broker_binary() is None:
        missing.append("the tansu broker (`make kafka-broker`)")
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        missing.append("confluent-kafka")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing {' and '.join(missing)}")
        pytest.skip(f"missing {' and '.join(missing)}")


@contextlib.contextmanager
def local_broker(timeout: float = 20.0) -> Iterator[str]:
    """Run tansu on a free loopback port with in-memory storage; yields the bootstrap
    address (``127.0.0.1:PORT``). It reads ``./.env`` if present, so it starts in an
    empty directory of its own."""
    binary = find_broker_binary()
    if binary is None:
        raise FileNotFoundError("tansu not found: run `make kafka-broker`")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    scratch = tempfile.mkdtemp(prefix="tansu-")
    args = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]  # fmt: skip
    try:
        with listening(args, port, timeout=timeout, cwd=scratch):
            yield f"127.0.0.1:{port}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def create_topic(bootstrap: str, partitions: int = 1, name: Optional[str] = None) -> str:
    """A new topic with ``partitions`` partitions (a fresh name unless given)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = name or f"t-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=20)
    return name


def consumer_config(bootstrap: str, group: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    """What a tensorwire subscription's consumer needs: no auto-commit, reading from the
    start, a fresh group id (tansu may wedge a group all of whose members left) and a
    short fetch wait (tansu holds every fetch for the client's full fetch.wait.max.ms)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group or f"g-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
    }
    config.update(extra)
    return config
