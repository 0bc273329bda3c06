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
  Both also try the input with its header hash (and header length) rewritten to match
  its header, so mutations of the header JSON reach the parser behind the hash.
- ``cli``: the ``tensorwire`` commands (``inspect``, ``inspect --json``, ``verify``,
  ``diff`` with itself, ``convert`` to another format) on the input written to a file of
  a format picked by the first byte: never an internal error, never an unprintable
  character on the terminal, ``--json`` always valid JSON.

A ``tw.TensorwireError`` is an expected outcome (the input was refused); anything else
escapes and libFuzzer saves the input as a crash. The functions in :data:`TARGETS` need no
atheris: ``tests/test_fuzz_regressions.py`` replays the seeds and every past crash
through them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import sys
import tempfile
from collections.abc import Iterable
from typing import Any, Callable

NATIVE = bool(os.environ.get("TW_FUZZ_NATIVE"))
if NATIVE:
    # A tensorwire._core built with sanitizer coverage (fuzz/python/README.md) calls
    # libFuzzer's __sanitizer_cov_* hooks, which atheris' libFuzzer provides once
    # Fuzz() has loaded it: load it with global symbols, and import tensorwire only
    # then (on the first input), so that the Rust code's coverage guides the fuzzer.
    sys.setdlopenflags(sys.getdlopenflags() | os.RTLD_GLOBAL)

try:
    import atheris
except ImportError:  # the target functions still run (tests replay corpora through them)
    atheris = None

# Set by _import(): the modules under test (instrumented for coverage under atheris).
np: Any = None
tw: Any = None
cli: Any = None
md5list: Any = None
npz: Any = None
ptth: Any = None
safetensors: Any = None
_INSTRUMENTED = ["tensorwire", "zipfile"]  # (numpy.lib.format would pull in all numpy)


def _import() -> None:
    global np, tw, cli, md5list, npz, ptth, safetensors
    if tw is not None:
        return
    instrumented = atheris.instrument_imports(include=_INSTRUMENTED) if atheris else None
    with instrumented or contextlib.nullcontext():
        import zipfile  # noqa: F401  (imported here so that it is instrumented)

        import numpy

        import tensorwire
        import tensorwire.cli
        from tensorwire.formats import md5list as md5list_
        from tensorwire.formats import npz as npz_
        from tensorwire.formats import ptth as ptth_
        from tensorwire.formats import safetensors as safetensors_
    np, tw, cli = numpy, tensorwire, tensorwire.cli
    md5list, npz, ptth, safetensors = md5list_, npz_, ptth_, safetensors_


if not NATIVE:
    _import()

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


_TW_MAGIC = b"\x89TWR\r\n\x1a\n"


def _payloads(data: bytes) -> list[bytes]:
    """``data``, and versions whose preamble agrees with a mutated header, so that the
    fuzzer gets past the header hash (docs/FORMAT.md section 1): with the hash recomputed,
    and with the header taken as everything between the preamble and the last
    ``data_len`` bytes (re-padded with spaces to a multiple of 64, its length and hash
    rewritten)."""
    import blake3

    out = [data]
    if len(data) < 64 or not data.startswith(_TW_MAGIC):
        return out
    header_len, data_len = struct.unpack_from("<QQ", data, 16)

    def sealed(fixed: bytes, header: bytes, rest: bytes) -> bytes:
        return fixed + blake3.blake3(fixed + header).digest() + header + rest

    if 64 + header_len <= len(data):
        header = data[64 : 64 + header_len]
        out.append(sealed(data[:32], header, data[64 + header_len :]))
    if data_len <= len(data) - 64:
        header = data[64 : len(data) - data_len]
        header += b" " * (-len(header) % 64)
        fixed = data[:16] + struct.pack("<QQ", len(header), data_len)
        out.append(sealed(fixed, header, data[len(data) - data_len :]))
    return out


def fuzz_decode(data: bytes) -> None:
    """``tw.decode``: verified, unverified, and copying (each header-hash fix-up too)."""
    for payload in _payloads(data):
        for kwargs in ({}, {"verify": False}, {"copy": True}):
            try:
                _touch(_leaves(tw.decode(payload, **kwargs)))
            except tw.TensorwireError:
                pass


def fuzz_open(data: bytes) -> None:
    """``tw.open`` (and the header-hash fix-ups): every header fact, ``verify()``, each
    tensor, then all of them."""
    for payload in _payloads(data):
        _open_one(payload)


def _open_one(data: bytes) -> None:
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
    """``tensorwire inspect``, ``inspect --json``, ``verify``, ``diff`` against itself and
    ``convert`` to another format, on the input as a file."""
    if not data:
        return
    ext = _CLI_FORMATS[data[0] % len(_CLI_FORMATS)]
    dest = _CLI_FORMATS[(data[0] // len(_CLI_FORMATS)) % (len(_CLI_FORMATS) - 1)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "input" + ext)
        with open(path, "wb") as f:
            f.write(data[1:])
        for args in (
            ["inspect", path],
            ["inspect", "--json", path],
            ["verify", path],
            ["diff", path, path],
            ["convert", path, os.path.join(tmp, "output" + dest)],
        ):
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
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris")
    target = TARGETS[argv[1]]

    # exception type names to let pass while a known bug is being fixed (run.py --ignore)
    ignored = frozenset(filter(None, os.environ.get("TW_FUZZ_IGNORE", "").split(",")))

    def one_input(data: bytes) -> None:
        _import()  # a no-op after the first input
        try:
            target(data)
        except BaseException as e:
            if type(e).__name__ not in ignored:
                raise

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
