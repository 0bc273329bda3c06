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

from ._errors import InputError, TensorwireError
from ._structure import flatten
from .formats import FORMATS, Format, StoredTensor, by_extension, sniff

__all__ = ["main", "printable", "printable_json"]

T = TypeVar("T")
_FORMAT_CHOICE = click.Choice([*FORMATS, "tw"], case_sensitive=False)


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
    verify: Callable[[], None]
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


def _status(text: str) -> contextlib.AbstractContextManager[Any]:
    """A transient spinner on stderr while long work runs (only on a terminal)."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    return _console(stderr=True).status(_text(text))


def _track(items: Sequence[T], text: str) -> Iterator[T]:
    """Iterate with a transient progress bar on stderr (only on a terminal)."""
    from rich.progress import track

    return iter(
        track(
            items,
            description=text,
            console=_console(stderr=True),
            transient=True,
            disable=not sys.stderr.isatty() or len(items) < 2,
        )
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
@click.version_option(package_name="tensorwire", prog_name="tensorwire")
def cli() -> None:
    """Inspect, verify, convert and compare model weight files.

    Formats: tensorwire (.tw), safetensors, npz, md5list, ptth.
    """


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--from", "fmt", type=_FORMAT_CHOICE, help="The file's format (default: by extension)."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
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
        doc = {
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
        click.echo(printable_json(doc, indent=2, ascii_only=not _unicode_out(sys.stdout)))
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
@_KEY_FILE
@_TRUSTED
def verify(file: str, fmt: Optional[str], key_file: Optional[str], trusted: Sequence[str]) -> None:
    """Check a file's checksums and structure; exit status 1 if anything is wrong.

    tensorwire files: every blake3 checksum, the signature of signed files, and with
    --key-file the key of authenticated ones (--trusted: only these signers); md5list:
    the MD5 trailer; npz: every CRC; safetensors and ptth have no checksums, so their
    structure is checked.
    """
    src = _open_source(
        file,
        _canonical(fmt),
        key=_read_key(key_file),
        trusted_keys=_read_public_keys(trusted),
    )
    src.verify()
    what = src.format.checks or f"structure valid ({src.format.name} has no checksums)"
    nbytes = sum(r.nbytes for r in src.rows)
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
def convert(
    source: str, dest: str, from_fmt: Optional[str], to_fmt: Optional[str], codec: Optional[str]
) -> None:
    """Convert SOURCE to DEST, formats by extension or --from/--to."""
    out_fmt = _format_of(dest, _canonical(to_fmt), sniff_content=False)
    with _status(f"converting {source} -> {dest}"):
        src = _open_source(source, _canonical(from_fmt))
        notes = _write(src.load(), dest, out_fmt, codec, src.metadata)
    for note in notes:
        click.echo(printable(f"note: {note}"), err=True)
    in_size, out_size = os.path.getsize(source), os.path.getsize(dest)
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


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Largest absolute and relative element difference (NaN vs NaN counts as equal)."""
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
    return max_abs, max_rel


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
@click.pass_context
def diff(
    ctx: click.Context,
    a: str,
    b: str,
    from_a: Optional[str],
    from_b: Optional[str],
    atol: float,
    rtol: float,
) -> None:
    """Compare the tensors of A and B, by name (or by position when no names match).

    Per tensor: same (bit-identical), close (within --atol or --rtol), different, or
    missing; with the largest absolute and relative element difference. Exit status 0
    when every tensor is same or close, 1 otherwise.
    """
    ta, tb = (
        _named(_open_source(a, _canonical(from_a))),
        _named(_open_source(b, _canonical(from_b))),
    )
    pairs: list[tuple[str, Optional[np.ndarray], Optional[np.ndarray]]]
    positional = not set(ta) & set(tb) and len(ta) == len(tb) and ta
    if positional:
        pairs = [
            (na if na == nb else f"{na} | {nb}", xa, xb)
            for (na, xa), (nb, xb) in zip(ta.items(), tb.items())
        ]
    else:
        pairs = [(n, x, tb.get(n)) for n, x in ta.items()]
        pairs += [(n, None, x) for n, x in tb.items() if n not in ta]
    out = _console()
    if positional:
        out.print(_text("note: no tensor names in common; matching by position"))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col, justify in [("name", "left"), ("status", "left"), ("dtype", "left")]:
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    table.add_column("shape")
    table.add_column("max abs diff", justify="right")
    table.add_column("max rel diff", justify="right")
    counts: dict[str, int] = {}
    for name, xa, xb in _track(pairs, "comparing"):
        cells = ["", "", "-", "-"]
        if xa is None or xb is None:
            status = "only in B" if xa is None else "only in A"
            x = xb if xa is None else xa
            cells[:2] = [x.dtype.name, _shape(x.shape)]  # type: ignore[union-attr]
        elif xa.shape != xb.shape:
            status = "shape differs"
            cells[:2] = [
                f"{xa.dtype.name} | {xb.dtype.name}",
                f"{_shape(xa.shape)} | {_shape(xb.shape)}",
            ]
        else:
            dt = xa.dtype.name if xa.dtype == xb.dtype else f"{xa.dtype.name} | {xb.dtype.name}"
            identical = xa.dtype == xb.dtype and np.ascontiguousarray(xa).tobytes() == (
                np.ascontiguousarray(xb).tobytes()
            )
            max_abs, max_rel = (0.0, 0.0) if identical else _differences(xa, xb)
            if identical:
                status = "same"
            elif max_abs <= atol or max_rel <= rtol:
                status = "close"
            else:
                status = "different"
            cells = [dt, _shape(xa.shape), f"{max_abs:.6g}", f"{max_rel:.6g}"]
        counts[status] = counts.get(status, 0) + 1
        table.add_row(*map(_text, (name, status, *cells)))
    out.print(table)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out.print(_text(f"{len(pairs)} tensors: {summary or 'none'}"))
    ok = all(s in ("same", "close") for s in counts)
    ctx.exit(0 if ok else 1)


# ----------------------------------------------------------------------------------------
# Entry point


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the command line; errors become one line on stderr and a non-zero exit."""
    _escape_unencodable(sys.stdout)
    _escape_unencodable(sys.stderr)
    try:
        rc = cli.main(args=argv, prog_name="tensorwire", standalone_mode=False)
    except click.exceptions.ClickException as e:  # usage errors quote arguments (paths)
        shown = io.StringIO()
        e.show(file=shown)
        lines = shown.getvalue().split("\n")
        for line in lines[:-1] if lines[-1] == "" else lines:
            click.echo(printable(line), err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("tensorwire: aborted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): nothing left to say
        sys.exit(1)
    except (TensorwireError, OSError) as e:
        click.echo(f"tensorwire: error: {_one_line(e)}", err=True)
        sys.exit(1)
    except Exception as e:  # anything else is a bug: still no traceback for the user
        click.echo(f"tensorwire: internal error: {type(e).__name__}: {_one_line(e)}", err=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one printable line (it may quote names, paths, data)."""
    text = (
        str(e)
        if not isinstance(e, OSError) or not e.filename
        else (f"{e.filename}: {e.strerror or e}")
    )
    return printable(re.sub(r"[ \t]*\r?\n[ \t]*", " ", text).strip()) or type(e).__name__


if __name__ == "__main__":  # pragma: no cover
    main()
