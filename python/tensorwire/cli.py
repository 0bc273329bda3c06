"""The ``tensorwire`` command: look inside, verify, convert and compare weight files.

Formats: tensorwire (``.tw``, ``.tensorwire``), safetensors, npz, md5list (the Kafka
seed's format) and ptth (the iOS seed's format), chosen by extension, by ``--from`` /
``--to``, or for unknown extensions by sniffing the file. Errors are one line on
stderr and a non-zero exit status: 1 for a bad file or a failed check, 2 for misuse.

Every string shown comes from somewhere hostile (tensor names, metadata, paths, error
messages quoting them), so all human-readable output goes through :func:`printable`,
which writes unprintable characters (terminal escapes, C0/C1 controls, bidi overrides,
zero-width characters, lone surrogates) as ``\\x1b``/``\\u202e`` escapes, and rich never
interprets markup or emoji codes in it; ``--json`` output goes through
:func:`printable_json`, exact JSON with those characters as ``\\u`` escapes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

import click
import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._core import FORMAT_VERSION, __version__
from ._errors import InputError, TensorwireError
from ._structure import flatten
from .formats import FORMATS, Format, StoredTensor, by_extension, sniff

__all__ = ["main", "printable", "printable_json"]

T = TypeVar("T")
_FORMAT_CHOICE = click.Choice([*FORMATS, "tw"], case_sensitive=False)
#: What long work reports its progress to: called with the bytes just done.
Advance = Callable[[int], None]


def _canonical(fmt: Optional[str]) -> Optional[str]:
    if fmt is None:
        return None
    fmt = fmt.lower()
    return "tensorwire" if fmt == "tw" else fmt


# ----------------------------------------------------------------------------------------
# Showing strings from hostile files

_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(c: str) -> str:
    n = ord(c)
    if c in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[c]
    if n < 0x100:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def printable(text: object) -> str:
    """``str(text)`` safe to write to a terminal: every character that is not printable
    (``str.isprintable``: C0 and C1 controls, DEL, format characters such as bidi
    overrides and zero-width spaces, line/paragraph separators, lone surrogates,
    unassigned code points) is written as a Python-style escape (``\\x1b``, ``\\u202e``,
    ``\\U000e0001``); printable text, non-ASCII included, is unchanged. The one function
    every human-readable line of the CLI goes through."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape(c) for c in s)


def _json_escape(c: str) -> str:
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def printable_json(doc: Any, *, ascii_only: bool = False, **dumps_args: Any) -> str:
    """``json.dumps(doc, ensure_ascii=False, **dumps_args)`` with every unprintable
    character written as a JSON ``\\u`` escape: exact JSON (it parses back to ``doc``),
    safe to write to a terminal, readable non-ASCII kept as is (unless ``ascii_only``,
    for outputs that cannot encode it)."""
    text = json.dumps(doc, ensure_ascii=ascii_only, **dumps_args)
    if text.isprintable():
        return text
    # json.dumps has escaped every control character inside strings already; what is left
    # raw is the indentation's newlines (kept) and non-ASCII inside strings
    return "".join(c if c == "\n" or c.isprintable() else _json_escape(c) for c in text)


def _unicode_out(stream: Any) -> bool:
    """Whether ``stream`` encodes every character (a UTF encoding)."""
    return str(getattr(stream, "encoding", None) or "").lower().replace("_", "-").startswith("utf")


def _escape_unencodable(stream: Any) -> None:
    """Make ``stream`` write characters its encoding lacks (``é`` on an ASCII terminal)
    as ``\\xe9`` escapes instead of failing with UnicodeEncodeError."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None and not _unicode_out(stream):
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors="backslashreplace")


def _text(value: object, style: str = "") -> Text:
    """A rich Text of ``printable(value)``: never parsed as markup or emoji codes."""
    return Text(printable(value), style=style)


# ----------------------------------------------------------------------------------------
# Reading any format


@dataclass
class Source:
    """One input file: its format, its tensors as stored, facts from its header, and how
    to get its tensors."""

    path: str
    format: Format
    rows: list[StoredTensor]
    load: Callable[[], Any]
    verify: Callable[[Optional[Advance]], None]
    metadata: Any = None
    facts: Mapping[str, str] = field(default_factory=dict)


def _format_of(path: str, given: Optional[str], *, sniff_content: bool) -> Format:
    if given:
        return FORMATS[given]
    fmt = by_extension(path)
    if fmt is not None:
        return fmt
    if sniff_content:
        return sniff(path)
    ext = os.path.splitext(path)[1].lower()
    raise InputError(
        f"{path}: unknown extension {ext or '(none)'!r}; name the format with --to "
        f"({', '.join(FORMATS)})"
    )


def _open_source(path: str, given: Optional[str], **read_options: Any) -> Source:
    fmt = _format_of(path, given, sniff_content=True)
    read_options = {k: v for k, v in read_options.items() if v is not None}
    if read_options and fmt.name != "tensorwire":
        raise InputError(f"--key-file and --trusted apply to tensorwire files, not {fmt.name}")
    rows, load, meta, facts, verify = fmt.module.describe(path, **read_options)
    return Source(path, fmt, rows, load, verify, meta, dict(facts))


def _read_key(path: Optional[str]) -> Optional[bytes]:
    """The shared key in the file ``path``: exactly 32 raw bytes (never printed)."""
    if path is None:
        return None
    with open(path, "rb") as f:
        key = f.read(33)
    if len(key) != 32:
        raise InputError(f"{path}: a key file holds exactly 32 raw bytes")
    return key


def _read_public_keys(paths: Sequence[str]) -> Optional[list[bytes]]:
    """The public keys in the files ``paths``: 32 raw bytes or 64 hex digits each."""
    if not paths:
        return None
    keys = []
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read(200)
        text = raw.strip()
        if len(raw) == 32:
            keys.append(raw)
        elif len(text) == 64 and re.fullmatch(rb"[0-9a-fA-F]{64}", text):
            keys.append(bytes.fromhex(text.decode()))
        else:
            raise InputError(f"{path}: a public key file holds 32 raw bytes or 64 hex digits")
    return keys


_KEY_FILE = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="A file of 32 raw bytes: the shared key of an authenticated tensorwire file.",
)
_TRUSTED = click.option(
    "--trusted",
    "trusted",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="A signer's public key file (32 raw bytes or 64 hex digits); accept only files "
    "signed by one of them. Repeatable.",
)


# ----------------------------------------------------------------------------------------
# Writing any format


def _metadata_for_safetensors(meta: Any) -> Optional[dict[str, str]]:
    if meta is None:
        return None
    if isinstance(meta, Mapping):
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    return {"metadata": json.dumps(meta)}


def _write(tensors: Any, path: str, fmt: Format, codec: Optional[str], meta: Any) -> list[str]:
    """Write ``tensors`` to ``path`` in ``fmt``; returns notes about what was dropped."""
    notes = []
    options: dict[str, Any] = {}
    if fmt.codecs is None:
        options["codec"] = codec or "raw"
    elif codec not in (None, "raw"):
        if codec not in fmt.codecs:
            takes = ", ".join(f"--codec {c}" for c in fmt.codecs)
            hint = f" ({fmt.name} takes {takes})" if takes else ""
            raise InputError(f"--codec {codec} applies to tensorwire output, not {fmt.name}{hint}")
        options.update(fmt.codecs[codec])
    if meta is not None and fmt.metadata is None:
        notes.append(f"metadata dropped: {fmt.name} cannot carry it")
    elif fmt.metadata == "json":
        options["metadata"] = meta
    elif fmt.metadata == "strings":
        options["metadata"] = _metadata_for_safetensors(meta)
    if not fmt.names and isinstance(tensors, Mapping):
        notes.append(f"tensor names dropped: {fmt.name} is a plain list")
    fmt.module.dump(tensors, path, **options)
    return notes


# ----------------------------------------------------------------------------------------
# Output helpers


def _console(stderr: bool = False) -> Console:
    """A rich console that never reads markup, emoji codes or highlighting into text
    (everything printed is also a :class:`Text` of :func:`printable` strings)."""
    width = None if (sys.stderr if stderr else sys.stdout).isatty() else 200
    return Console(stderr=stderr, width=width, markup=False, emoji=False, highlight=False)


def _emit_json(doc: Any) -> None:
    """Write ``doc`` as one JSON document on stdout (exact, terminal safe)."""
    click.echo(printable_json(doc, indent=2, ascii_only=not _unicode_out(sys.stdout)))


class _Progress:
    """Progress bars on stderr, counted in the bytes of real work done, shown only when
    stderr is a terminal and ``--no-progress`` was not given; transient (erased when
    done), never touching stdout. When they are off, :meth:`task` is None and the work
    runs exactly as without them."""

    def __init__(self, no_progress: bool) -> None:
        self._bars: Any = None
        if no_progress or not sys.stderr.isatty():
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bars = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=_console(stderr=True),
            transient=True,
            redirect_stdout=False,  # stdout is for results: it never goes through the bars
            redirect_stderr=False,
        )

    def __enter__(self) -> _Progress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def task(self, description: str, total: int) -> Optional[Advance]:
        """A bar of ``total`` bytes; the function advancing it by the bytes just done
        (None when bars are off)."""
        if self._bars is None:
            return None
        bars = self._bars
        task = bars.add_task(printable(description), total=total)
        return lambda n: bars.advance(task, n)


_NO_PROGRESS = click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bar (one is shown on stderr only when stderr is a terminal).",
)
_JSON = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document on stdout instead (keys: docs/cli.md); errors too.",
)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # unreachable


def _ratio(stored: int, nbytes: int) -> str:
    return f"{stored / nbytes:.3f}" if nbytes else "-"


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


# ----------------------------------------------------------------------------------------
# Commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__,
    prog_name="tensorwire",
    message=f"%(prog)s %(version)s (wire format {FORMAT_VERSION[0]}.{FORMAT_VERSION[1]})",
)
def cli() -> None:
    """Inspect, verify, convert and compare model weight files.

    Formats: tensorwire (.tw), safetensors, npz, md5list, ptth.
    """


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--from", "fmt", type=_FORMAT_CHOICE, help="The file's format (default: by extension)."
)
@_JSON
@_KEY_FILE
@_TRUSTED
def inspect(
    file: str, fmt: Optional[str], as_json: bool, key_file: Optional[str], trusted: Sequence[str]
) -> None:
    """Show a file's format, version, metadata and tensors (for tensorwire files also
    the key id, signer and creation time of authenticated or signed ones)."""
    src = _open_source(
        file,
        _canonical(fmt),
        key=_read_key(key_file),
        trusted_keys=_read_public_keys(trusted),
    )
    stored = sum(r.stored for r in src.rows)
    nbytes = sum(r.nbytes for r in src.rows)
    if as_json:
        _emit_json(
            {
                "ok": True,
                "file": file,
                "format": src.format.name,
                **{k.replace(" ", "_"): v for k, v in src.facts.items()},
                "metadata": src.metadata,
                "file_bytes": os.path.getsize(file),
                "stored_bytes": stored,
                "decoded_bytes": nbytes,
                "tensors": [
                    {
                        "name": r.name,
                        "dtype": r.dtype,
                        "shape": list(r.shape),
                        "codec": r.codec,
                        "stored_bytes": r.stored,
                        "decoded_bytes": r.nbytes,
                    }
                    for r in src.rows
                ],
            }
        )
        return
    out = _console()
    out.print(_text(file, style="bold"))
    out.print(_text(f"  format:     {src.format.name}"))
    for k, v in src.facts.items():
        out.print(_text(f"  {k + ':':<11} {v}"))
    if src.metadata is not None:
        # one line, never wrapped: it is exact JSON, like --json's
        meta = printable_json(src.metadata, ascii_only=not _unicode_out(sys.stdout))
        out.print(Text(f"  metadata:   {meta}"), soft_wrap=True)
    out.print(
        _text(
            f"  tensors:    {len(src.rows)}, {_size(nbytes)} decoded, {_size(stored)} stored "
            f"(ratio {_ratio(stored, nbytes)}), file {_size(os.path.getsize(file))}"
        )
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("name", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("codec")
    table.add_column("stored", justify="right")
    table.add_column("ratio", justify="right")
    for r in src.rows:
        table.add_row(
            *map(
                _text,
                (
                    r.name,
                    r.dtype,
                    _shape(r.shape),
                    r.codec,
                    _size(r.stored),
                    _ratio(r.stored, r.nbytes),
                ),
            )
        )
    out.print(table)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--from", "fmt", type=_FORMAT_CHOICE, help="The file's format (default: by extension)."
)
@_JSON
@_NO_PROGRESS
@_KEY_FILE
@_TRUSTED
def verify(
    file: str,
    fmt: Optional[str],
    as_json: bool,
    no_progress: bool,
    key_file: Optional[str],
    trusted: Sequence[str],
) -> None:
    """Check a file's checksums and structure; exit status 1 if anything is wrong.

    tensorwire files: every blake3 checksum, the signature of signed files, and with
    --key-file the key of authenticated ones (--trusted: only these signers); md5list:
    the MD5 trailer; npz: every CRC; safetensors and ptth have no checksums, so their
    structure is checked.
    """
    with _Progress(no_progress) as progress:
        src = _open_source(
            file,
            _canonical(fmt),
            key=_read_key(key_file),
            trusted_keys=_read_public_keys(trusted),
        )
        src.verify(progress.task(f"verifying {file}", sum(r.stored for r in src.rows)))
    nbytes = sum(r.nbytes for r in src.rows)
    if as_json:
        _emit_json(
            {
                "ok": True,
                "file": file,
                "format": src.format.name,
                "tensors": len(src.rows),
                "decoded_bytes": nbytes,
                "stored_bytes": sum(r.stored for r in src.rows),
                "checksums": src.format.checks is not None,
                "checked": src.format.checks or "structure",
            }
        )
        return
    what = src.format.checks or f"structure valid ({src.format.name} has no checksums)"
    click.echo(
        printable(f"OK {file}: {src.format.name}, {len(src.rows)} tensors, {_size(nbytes)}; {what}")
    )


@cli.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--from", "from_fmt", type=_FORMAT_CHOICE, help="SOURCE's format.")
@click.option("--to", "to_fmt", type=_FORMAT_CHOICE, help="DEST's format.")
@click.option(
    "--codec",
    help='tensorwire codec spec for DEST (e.g. "zstd", "shuffle+zstd:3"); '
    'for npz, "deflate" compresses.',
)
@_JSON
@_NO_PROGRESS
def convert(
    source: str,
    dest: str,
    from_fmt: Optional[str],
    to_fmt: Optional[str],
    codec: Optional[str],
    as_json: bool,
    no_progress: bool,
) -> None:
    """Convert SOURCE to DEST, formats by extension or --from/--to."""
    out_fmt = _format_of(dest, _canonical(to_fmt), sniff_content=False)
    in_size = os.path.getsize(source)
    with _Progress(no_progress) as progress:
        # each step is one call (into the core, for tensorwire): the bars advance per step
        reading = progress.task(f"reading {source}", in_size)
        src = _open_source(source, _canonical(from_fmt))
        tensors = src.load()
        if reading is not None:
            reading(in_size)
        writing = progress.task(f"writing {dest}", sum(r.nbytes for r in src.rows))
        notes = _write(tensors, dest, out_fmt, codec, src.metadata)
        if writing is not None:
            writing(sum(r.nbytes for r in src.rows))
    out_size = os.path.getsize(dest)
    if as_json:
        _emit_json(
            {
                "ok": True,
                "source": {"file": source, "format": src.format.name, "file_bytes": in_size},
                "dest": {"file": dest, "format": out_fmt.name, "file_bytes": out_size},
                "tensors": len(src.rows),
                "ratio": out_size / in_size if in_size else None,
                "notes": notes,
            }
        )
        return
    for note in notes:
        click.echo(printable(f"note: {note}"), err=True)
    click.echo(
        printable(
            f"{source} ({src.format.name}, {_size(in_size)}) -> {dest} ({out_fmt.name}, "
            f"{_size(out_size)}): {len(src.rows)} tensors, ratio {_ratio(out_size, in_size)}"
        )
    )


def _named(src: Source) -> dict[str, np.ndarray]:
    leaves, _ = flatten(src.load())
    return {n: np.asarray(a) for n, a in leaves}


_CHUNK = 1 << 20


def _chunks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    fa, fb = a.reshape(-1), b.reshape(-1)
    for i in range(0, fa.size, _CHUNK):
        yield fa[i : i + _CHUNK], fb[i : i + _CHUNK]


def _as_wide(x: np.ndarray) -> np.ndarray:
    return x.astype(np.complex128 if x.dtype.kind == "c" else np.float64)


def _differences(a: np.ndarray, b: np.ndarray, advance: Optional[Advance]) -> tuple[float, float]:
    """Largest absolute and relative element difference (NaN vs NaN counts as equal);
    ``advance``, when given, is called with the bytes of ``a`` each chunk compared."""
    max_abs = max_rel = 0.0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for ca, cb in _chunks(a, b):
            wa, wb = _as_wide(ca), _as_wide(cb)
            diff = np.abs(wa - wb)
            same = (wa == wb) | (np.isnan(wa) & np.isnan(wb))
            diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
            scale = np.maximum(np.abs(wa), np.abs(wb))
            rel = np.where(diff == 0, 0.0, diff / np.where(scale == 0, np.inf, scale))
            rel = np.where(np.isnan(rel), np.inf, rel)
            if diff.size:
                max_abs = max(max_abs, float(diff.max()))
                max_rel = max(max_rel, float(rel.max()))
            if advance is not None:
                advance(ca.nbytes)
    return max_abs, max_rel


@dataclass
class _Compared:
    """One row of ``diff``: the tensor of A and of B (None when missing), what was found,
    and the largest differences (None when not compared)."""

    name: str
    a: Optional[tuple[str, np.ndarray]]
    b: Optional[tuple[str, np.ndarray]]
    status: str = ""
    max_abs: Optional[float] = None
    max_rel: Optional[float] = None


def _compare(row: _Compared, atol: float, rtol: float, advance: Optional[Advance]) -> None:
    """Fill ``row``'s status and differences (``advance``: by the bytes of A compared)."""
    if row.a is None or row.b is None:
        row.status = "only in B" if row.a is None else "only in A"
        return
    xa, xb = row.a[1], row.b[1]
    if xa.shape != xb.shape:
        row.status = "shape differs"
        return
    identical = xa.dtype == xb.dtype and np.ascontiguousarray(xa).tobytes() == (
        np.ascontiguousarray(xb).tobytes()
    )
    if identical:
        row.status, row.max_abs, row.max_rel = "same", 0.0, 0.0
        if advance is not None:
            advance(xa.nbytes)
        return
    row.max_abs, row.max_rel = _differences(xa, xb, advance)
    row.status = "close" if row.max_abs <= atol or row.max_rel <= rtol else "different"


def _json_number(x: Optional[float]) -> Any:
    """A difference for JSON: a number, ``"inf"`` (JSON has no infinity), or None."""
    return "inf" if x is not None and np.isinf(x) else x


def _side(t: Optional[tuple[str, np.ndarray]]) -> Optional[dict[str, Any]]:
    if t is None:
        return None
    return {"name": t[0], "dtype": t[1].dtype.name, "shape": list(t[1].shape)}


def _both(row: _Compared, cell: Callable[[np.ndarray], str]) -> str:
    """A table cell for A's and B's tensor: one value, or "A's | B's" when they differ."""
    shown = [cell(t[1]) for t in (row.a, row.b) if t is not None]
    return shown[0] if len(set(shown)) == 1 else " | ".join(shown)


@cli.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--from-a", type=_FORMAT_CHOICE, help="A's format.")
@click.option("--from-b", type=_FORMAT_CHOICE, help="B's format.")
@click.option(
    "--atol", type=float, default=0.0, help="Tensors within this max abs diff are 'close'."
)
@click.option(
    "--rtol", type=float, default=0.0, help="Tensors within this max rel diff are 'close'."
)
@_JSON
@_NO_PROGRESS
@click.pass_context
def diff(
    ctx: click.Context,
    a: str,
    b: str,
    from_a: Optional[str],
    from_b: Optional[str],
    atol: float,
    rtol: float,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Compare the tensors of A and B, by name (or by position when no names match).

    Per tensor: same (bit-identical), close (within --atol or --rtol), different, or
    missing; with the largest absolute and relative element difference. Exit status 0
    when every tensor is same or close, 1 otherwise.
    """
    with _Progress(no_progress) as progress:
        sources = [(a, from_a), (b, from_b)]
        reading = progress.task("reading", sum(os.path.getsize(p) for p, _ in sources))
        tensors = []
        for path, fmt in sources:
            src = _open_source(path, _canonical(fmt))
            tensors.append((src, _named(src)))
            if reading is not None:
                reading(os.path.getsize(path))
        (src_a, ta), (src_b, tb) = tensors
        positional = bool(not set(ta) & set(tb) and len(ta) == len(tb) and ta)
        if positional:
            rows = [
                _Compared(na if na == nb else f"{na} | {nb}", (na, xa), (nb, xb))
                for (na, xa), (nb, xb) in zip(ta.items(), tb.items())
            ]
        else:
            rows = [_Compared(n, (n, x), (n, tb[n]) if n in tb else None) for n, x in ta.items()]
            rows += [_Compared(n, None, (n, x)) for n, x in tb.items() if n not in ta]
        work = sum(r.a[1].nbytes for r in rows if r.a and r.b and r.a[1].shape == r.b[1].shape)
        comparing = progress.task("comparing", work)
        for row in rows:
            _compare(row, atol, rtol, comparing)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    ok = all(s in ("same", "close") for s in counts)
    if as_json:
        _emit_json(
            {
                "ok": ok,
                "a": {"file": a, "format": src_a.format.name},
                "b": {"file": b, "format": src_b.format.name},
                "matched_by": "position" if positional else "name",
                "atol": atol,
                "rtol": rtol,
                "counts": dict(sorted(counts.items())),
                "tensors": [
                    {
                        "name": row.name,
                        "status": row.status,
                        "a": _side(row.a),
                        "b": _side(row.b),
                        "max_abs_diff": _json_number(row.max_abs),
                        "max_rel_diff": _json_number(row.max_rel),
                    }
                    for row in rows
                ],
            }
        )
        ctx.exit(0 if ok else 1)
    out = _console()
    if positional:
        out.print(_text("note: no tensor names in common; matching by position"))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col, justify in [("name", "left"), ("status", "left"), ("dtype", "left")]:
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    table.add_column("shape")
    table.add_column("max abs diff", justify="right")
    table.add_column("max rel diff", justify="right")
    for row in rows:
        cells = [
            _both(row, lambda x: x.dtype.name),
            _both(row, lambda x: _shape(x.shape)),
            "-" if row.max_abs is None else f"{row.max_abs:.6g}",
            "-" if row.max_rel is None else f"{row.max_rel:.6g}",
        ]
        table.add_row(*map(_text, (row.name, row.status, *cells)))
    out.print(table)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out.print(_text(f"{len(rows)} tensors: {summary or 'none'}"))
    ctx.exit(0 if ok else 1)


# ----------------------------------------------------------------------------------------
# Entry point


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the command line; errors become one line on stderr and a non-zero exit (and,
    with ``--json``, also a JSON error document on stdout)."""
    _escape_unencodable(sys.stdout)
    _escape_unencodable(sys.stderr)
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    try:
        rc = cli.main(args=args, prog_name="tensorwire", standalone_mode=False)
    except click.exceptions.ClickException as e:  # usage errors quote arguments (paths)
        shown = io.StringIO()
        e.show(file=shown)
        lines = shown.getvalue().split("\n")
        for line in lines[:-1] if lines[-1] == "" else lines:
            click.echo(printable(line), err=True)
        kind = "UsageError" if isinstance(e, click.exceptions.UsageError) else type(e).__name__
        _fail(as_json, kind, e.format_message(), e.exit_code, shown=True)
    except click.exceptions.Abort:
        _fail(as_json, "Aborted", "aborted", 130, prefix="tensorwire: ")
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): nothing left to say
        sys.exit(1)
    except TensorwireError as e:
        _fail(as_json, type(e).__name__, _message(e), 1)
    except OSError as e:
        _fail(as_json, "OSError", _message(e), 1)
    except Exception as e:  # anything else is a bug: still no traceback for the user
        message = f"{type(e).__name__}: {_message(e)}"
        _fail(as_json, "InternalError", message, 1, prefix="tensorwire: internal error: ")
    sys.exit(rc if isinstance(rc, int) else 0)


def _fail(
    as_json: bool,
    kind: str,
    message: str,
    status: int,
    *,
    prefix: str = "tensorwire: error: ",
    shown: bool = False,
) -> None:
    """Say what went wrong: one line on stderr (unless click has ``shown`` it), the JSON
    error document on stdout with ``--json``; then exit with ``status``."""
    if not shown:
        click.echo(f"{prefix}{printable(message)}", err=True)
    if as_json:
        with contextlib.suppress(OSError):  # stdout gone: stderr has said it
            _emit_json({"ok": False, "error": {"type": kind, "message": message}})
    sys.exit(status)


def _message(e: BaseException) -> str:
    """The message of ``e`` on one line (it may quote names, paths, data: print it only
    through :func:`printable` or :func:`printable_json`)."""
    text = (
        str(e)
        if not isinstance(e, OSError) or not e.filename
        else (f"{e.filename}: {e.strerror or e}")
    )
    return re.sub(r"[ \t]*\r?\n[ \t]*", " ", text).strip() or type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    main()
