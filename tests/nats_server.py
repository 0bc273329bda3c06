"""A throwaway nats-server for the tests (and the docs' examples they run): started on a
free loopback port, stopped after. The ``nats_url`` fixture (conftest.py) serves one per
test module; anyone else starts one with ``nats-server -a 127.0.0.1 -p 4222``."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Optional

import pytest
from local_process import free_port, listening

__all__ = ["find_server_binary", "local_server", "require_server_binary"]


def require_server_binary() -> None:
    """Skip the test when nats-server is missing, except in CI (`make test` installs it),
    where its absence is a failure."""
    if find_server_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("nats-server is missing: `make nats-server` installs it")
        pytest.skip("nats-server is not installed (`make nats-server`)")


def find_server_binary() -> Optional[str]:
    """Path of the ``nats-server`` executable (Debian installs it in /usr/sbin), or None."""
    found = shutil.which("nats-server")
    if found is None and os.access("/usr/sbin/nats-server", os.X_OK):
        found = "/usr/sbin/nats-server"
    return found


@contextlib.contextmanager
def local_server(*, max_payload: Optional[int] = None, timeout: float = 10.0) -> Iterator[str]:
    """Run a throwaway ``nats-server`` on a free loopback port; yields its URL and stops
    the server on exit. Needs the ``nats-server`` binary
    (``apt-get install nats-server``; ``make nats-server`` does it)."""
    binary = find_server_binary()
    if binary is None:
        raise FileNotFoundError("nats-server not found: run `make nats-server`")
    port = free_port()
    args = [binary, "-a", "127.0.0.1", "-p", str(port)]
    config = None
    if max_payload is not None:  # only settable in a configuration file
        config = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        with config:
            config.write(f"max_payload: {int(max_payload)}\n")
        args += ["-c", config.name]
    try:
        with listening(args, port, timeout=timeout):
            yield f"nats://127.0.0.1:{port}"
    finally:
        if config is not None:
            os.unlink(config.name)
