"""A server the tests start themselves: run it, wait until it listens on its loopback
port, stop it after (nats_server.py and kafka_broker.py start theirs with it)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Optional

__all__ = ["free_port", "listening", "peak_mib"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def listening(
    args: list[str], port: int, *, timeout: float, cwd: Optional[str] = None
) -> Iterator[subprocess.Popen]:
    """Run ``args`` until it accepts connections on ``127.0.0.1:port`` (``RuntimeError``
    with the end of its output if it exits first, ``TimeoutError`` after ``timeout``
    seconds); stop it on exit."""
    log = tempfile.TemporaryFile()  # its output: read back only if it fails to start
    proc = subprocess.Popen(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                out = log.read()[-4000:].decode(errors="replace")
                raise RuntimeError(f"{args[0]} exited with {proc.returncode}: {out}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{args[0]} did not listen on port {port}") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def peak_mib() -> int:
    """This process's peak resident memory in MiB since it started (VmHWM: unlike
    ``ru_maxrss``, it does not carry over the peak of the process that forked it)."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) >> 10
