"""atheris fuzz targets for tensorwire's Python-side readers of hostile bytes.

Run one target (libFuzzer options after the name, corpus directories included)::

    python fuzz/python/targets.py safetensors fuzz/python/corpus/safetensors -max_total_time=60

or every target with ``python fuzz/python/run.py --seconds 60``. Targets:

- ``safetensors``, ``npz``, ``md5list``, ``ptth``: ``tensorwire.formats.<name>.loads``
  (plus ``safetensors.metadata`` / ``npz.stored``), then every returned array read
  through, and the arrays' total size checked against the input's (memory bounded by the
  bytes received: ``nbytes <= len(data)``; for deflated npz members, deflate's 1032:1).
- ``decode``: ``tw.decode`` verified, unverified and copying.
- ``open``: ``tw.open`` and every fact of the header (names, infos, metadata, ids,
  version), ``.verify()``, each tensor read alone, then all of them.
- ``cli``: the ``tensorwire inspect`` / ``inspect --json`` / ``verify`` commands on the
  input written to a file of a format picked by the first byte: never an internal
  error, never an unprintable character on the terminal, ``--json`` always valid JSON.

A ``tw.TensorwireError`` is an expected outcome (the input was refused); anything else
escapes and libFuzzer saves the input as a crash.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from typing import Any, Callable

import atheris

with atheris.instrument_imports(include=["tensorwire", "zipfile", "numpy.lib._format_impl"]):
    import zipfile  # noqa: F401  (imported here so that it is instrumented)

    import numpy as np

    import tensorwire as tw
    from tensorwire import cli
    from tensorwire.formats import md5list, npz, ptth, safetensors

__all__ = ["TARGETS", "main"]

_DEFLATE_MAX_RATIO = 1032


def _touch(arrays: Iterable[np.ndarray]) -> int:
    """Read every byte of every array (a bad view would fault here); their total size."""
    total = 0
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise AssertionError(f"a reader returned {type(a).__name__}, not an array")
        np.ascontiguousarray(a).tobytes()
        total += a.nbytes
    return total


def _check_bounded(total: int, limit: int, what: str) -> None:
    if total > limit:
        raise AssertionError(f"{what}: {total} bytes of arrays from {limit} allowed")


def fuzz_safetensors(data: bytes) -> None:
    """``safetensors.loads`` and ``safetensors.metadata``."""
    try:
        out = safetensors.loads(data)
    except tw.TensorwireError:
        return
    _check_bounded(_touch(out.values()), len(data), "safetensors")
    meta = safetensors.metadata(data)  # accepted once: must be accepted again
    if meta is not None and not all(isinstance(v, str) for v in meta.values()):
        raise AssertionError("safetensors metadata holds non-strings")


def fuzz_npz(data: bytes) -> None:
    """``npz.loads`` (stored members read in place, deflated ones inflated) and ``npz.stored``."""
    try:
        sizes = npz.stored(data)
    except tw.TensorwireError:
        sizes = None
    try:
        out = npz.loads(data)
    except tw.TensorwireError:
        return
    if sizes is None or list(sizes) != list(out):
        raise AssertionError("npz.stored refused or disagreed with what npz.loads read")
    limit = sum(n * (_DEFLATE_MAX_RATIO if m == "deflate" else 1) + 64 for m, n in sizes.values())
    _check_bounded(_touch(out.values()), limit, "npz")


def fuzz_md5list(data: bytes) -> None:
    """``md5list.loads``; also with the MD5 trailer recomputed, so that mutations reach
    the parser behind the checksum."""
    import hashlib

    body = data[:-16]
    for blob in (data, body + hashlib.md5(body).digest()):
        try:
            out = md5list.loads(blob)
        except tw.TensorwireError:
            continue
        _check_bounded(_touch(out), len(blob), "md5list")


def fuzz_ptth(data: bytes) -> None:
    """``ptth.loads``."""
    try:
        out = ptth.loads(data)
    except tw.TensorwireError:
        return
    _check_bounded(_touch(out.values()), len(data), "ptth")


def _leaves(tree: Any) -> list[np.ndarray]:
    from tensorwire._structure import flatten

    return [np.asarray(a) for _, a in flatten(tree)[0]] if tree else []


def fuzz_decode(data: bytes) -> None:
    """``tw.decode``: verified, unverified, and copying."""
    for kwargs in ({}, {"verify": False}, {"copy": True}):
        try:
            _touch(_leaves(tw.decode(data, **kwargs)))
        except tw.TensorwireError:
            pass


def fuzz_open(data: bytes) -> None:
    """``tw.open``: every header fact, ``verify()``, each tensor, then all of them."""
    try:
        r = tw.open(data)
    except tw.TensorwireError:
        return
    names = r.keys()
    for name in names:
        r.info(name)
        if name not in r:
            raise AssertionError(f"{name!r} listed but not in the reader")
    for fact in ("metadata", "content_id", "base_id", "version"):
        with contextlib.suppress(tw.TensorwireError):
            getattr(r, fact)
    repr(r)
    with contextlib.suppress(tw.TensorwireError):
        r.verify()
    for name in names:
        for verify in (False, True):
            with contextlib.suppress(tw.TensorwireError):
                _touch([r.get(name, verify=verify)])
    with contextlib.suppress(tw.TensorwireError):
        _touch(_leaves(r.tensors(verify=False)))
    r.close()


_CLI_FORMATS = (".safetensors", ".npz", ".md5list", ".ptth", ".tw", ".bin")


def fuzz_cli(data: bytes) -> None:
    """``tensorwire inspect``, ``inspect --json`` and ``verify`` on the input as a file."""
    if not data:
        return
    ext = _CLI_FORMATS[data[0] % len(_CLI_FORMATS)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "input" + ext)
        with open(path, "wb") as f:
            f.write(data[1:])
        for args in (["inspect", path], ["inspect", "--json", path], ["verify", path]):
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    cli.main(args)
                except SystemExit:
                    pass
            text = out.getvalue() + err.getvalue()
            if "internal error" in text or "Traceback" in text:
                raise AssertionError(f"{args[:-1]}: {err.getvalue()}")
            bad = {c for c in text if c != "\n" and not c.isprintable()}
            if bad:
                raise AssertionError(f"{args[:-1]} wrote unprintable {sorted(bad)!r}")
            if "--json" in args and out.getvalue():
                json.loads(out.getvalue())


TARGETS: dict[str, Callable[[bytes], None]] = {
    "cli": fuzz_cli,
    "decode": fuzz_decode,
    "md5list": fuzz_md5list,
    "npz": fuzz_npz,
    "open": fuzz_open,
    "ptth": fuzz_ptth,
    "safetensors": fuzz_safetensors,
}


def main(argv: list[str]) -> None:
    """``targets.py TARGET [libFuzzer arguments]``."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options and corpus]")
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
