"""The installed ``tensorwire`` console script, run in a subprocess on real files."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import tensorwire as tw
from tensorwire.cli import printable, printable_json
from tensorwire.formats import md5list, npz, ptth, safetensors

SCRIPT = Path(sys.executable).with_name("tensorwire")
EXT = {"tensorwire": ".tw", "safetensors": ".safetensors", "npz": ".npz", "md5list": ".md5list"}
EXT["ptth"] = ".ptth"


def run(*args, ok=None):
    exe = str(SCRIPT) if SCRIPT.exists() else shutil.which("tensorwire")
    assert exe, "the tensorwire console script is not installed"
    p = subprocess.run(
        [exe, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert "Traceback" not in p.stderr + p.stdout
    if ok is True:
        assert p.returncode == 0, p.stderr
    elif ok is False:
        assert p.returncode != 0, p.stdout
    return p


def one_line_error(p, *fragments):
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("tensorwire: error: ")
    for f in fragments:
        assert f in lines[0], lines[0]


RNG = np.random.default_rng(5)
# what every format can carry: ptth limits us to float32/float64/int32
COMMON = {
    "encoder.layer.0.weight": RNG.standard_normal((16, 8)).astype(np.float32),
    "encoder.layer.0.bias": RNG.standard_normal(8).astype(np.float64),
    "step": np.array([3, 1, 4], np.int32),
}


def write(fmt, path, tensors=COMMON, **kw):
    if fmt == "tensorwire":
        tw.save(tensors, path, **kw)
    elif fmt == "md5list":
        md5list.dump(list(tensors.values()), path)
    else:
        {"safetensors": safetensors, "npz": npz, "ptth": ptth}[fmt].dump(tensors, path, **kw)
    return path


def read(path, fmt=None):
    fmt = fmt or next(f for f, e in EXT.items() if str(path).endswith(e))
    if fmt == "tensorwire":
        return tw.load(path)
    return {"safetensors": safetensors, "npz": npz, "md5list": md5list, "ptth": ptth}[fmt].load(
        path
    )


# --------------------------------------------------------------------------------------
# inspect


@pytest.mark.parametrize("fmt", list(EXT))
def test_inspect_every_format(fmt, tmp_path):
    path = write(fmt, tmp_path / f"model{EXT[fmt]}")
    p = run("inspect", path, ok=True)
    assert f"format:     {fmt}" in p.stdout
    names = [str(i) for i in range(3)] if fmt == "md5list" else list(COMMON)
    for name, a in zip(names, COMMON.values()):
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith(name + " "))
        assert a.dtype.name in line and "[" + ", ".join(map(str, a.shape)) + "]" in line

    doc = json.loads(run("inspect", "--json", path, ok=True).stdout)
    assert doc["format"] == fmt
    shapes = sorted(tuple(t["shape"]) for t in doc["tensors"])
    assert shapes == sorted(a.shape for a in COMMON.values())
    assert doc["decoded_bytes"] == sum(a.nbytes for a in COMMON.values())
    assert doc["file_bytes"] == path.stat().st_size


def test_inspect_tensorwire_shows_codec_ratio_version_and_metadata(tmp_path):
    z = {"zeros": np.zeros((256, 256), np.float32), "emb": np.ones(8, ml_dtypes.bfloat16)}
    path = write("tensorwire", tmp_path / "m.tw", z, codec="zstd", metadata={"round": 7})
    p = run("inspect", path, ok=True)
    assert "version:    1." in p.stdout and '{"round": 7}' in p.stdout
    zeros = next(ln for ln in p.stdout.splitlines() if ln.startswith("zeros"))
    assert "zstd" in zeros and "[256, 256]" in zeros
    doc = json.loads(run("inspect", "--json", path, ok=True).stdout)
    assert doc["metadata"] == {"round": 7} and doc["version"].startswith("1.")
    (zinfo,) = [t for t in doc["tensors"] if t["name"] == "zeros"]
    assert (
        zinfo["codec"].startswith("zstd") and zinfo["stored_bytes"] < 0.01 * zinfo["decoded_bytes"]
    )
    ratio = float(zeros.split()[-1])
    assert ratio == pytest.approx(zinfo["stored_bytes"] / zinfo["decoded_bytes"], abs=1e-3)


def test_inspect_npz_shows_compressed_sizes_and_sniffs_unknown_extensions(tmp_path):
    path = write("npz", tmp_path / "m.npz", {"z": np.zeros(4096, np.float32)}, compressed=True)
    doc = json.loads(run("inspect", "--json", path, ok=True).stdout)
    assert doc["tensors"][0]["codec"] == "deflate"
    assert doc["tensors"][0]["stored_bytes"] < 1000
    for fmt in EXT:
        odd = write(fmt, tmp_path / f"weights-{fmt}.bin")
        assert json.loads(run("inspect", "--json", odd, ok=True).stdout)["format"] == fmt
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"hello world, not weights" * 3)
    one_line_error(run("inspect", garbage), "cannot tell its format", "--from")


# --------------------------------------------------------------------------------------
# verify


@pytest.mark.parametrize("fmt", list(EXT))
def test_verify_good_files(fmt, tmp_path):
    p = run("verify", write(fmt, tmp_path / f"m{EXT[fmt]}"), ok=True)
    assert p.stdout.startswith("OK ") and "3 tensors" in p.stdout


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("tensorwire", "tensor"),
        ("md5list", "MD5"),
        ("npz", "CRC"),
    ],
)
def test_verify_catches_a_flipped_data_bit(fmt, message, tmp_path):
    path = write(fmt, tmp_path / f"m{EXT[fmt]}")
    data = bytearray(path.read_bytes())
    needle = COMMON["encoder.layer.0.weight"].tobytes()[:16]
    at = bytes(data).index(needle)
    data[at + 5] ^= 0x10
    path.write_bytes(bytes(data))
    one_line_error(run("verify", path), message)


@pytest.mark.parametrize("fmt", list(EXT))
def test_verify_and_inspect_refuse_truncated_files(fmt, tmp_path):
    path = write(fmt, tmp_path / f"m{EXT[fmt]}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])
    one_line_error(run("verify", path))
    one_line_error(run("inspect", path))


def test_verify_and_inspect_authenticated_and_signed_files(tmp_path):
    key, sk = os.urandom(32), tw.generate_signing_key()
    pk = tw.public_key(sk)
    path = tmp_path / "signed.tw"
    tw.save(COMMON, path, key=key, signing_key=sk)
    key_file, raw_pk, hex_pk = tmp_path / "k", tmp_path / "pk", tmp_path / "pk.hex"
    key_file.write_bytes(key)
    raw_pk.write_bytes(pk)
    hex_pk.write_text(pk.hex() + "\n")
    other = tmp_path / "other.pk"
    other.write_bytes(tw.public_key(tw.generate_signing_key()))
    kid = tw.key_id(key)
    one_line_error(run("verify", path), f"key id {kid}; pass key= or keys=")
    p = run("verify", path, "--key-file", key_file, ok=True)
    assert p.stdout.startswith("OK ") and "3 tensors" in p.stdout
    run("verify", path, "--key-file", key_file, "--trusted", other, "--trusted", raw_pk, ok=True)
    run("verify", path, "--key-file", key_file, "--trusted", hex_pk, ok=True)
    one_line_error(run("verify", path, "--key-file", key_file, "--trusted", other), pk.hex())
    wrong = tmp_path / "wrong"
    wrong.write_bytes(os.urandom(32))
    one_line_error(run("verify", path, "--key-file", wrong), kid)
    short = tmp_path / "short"
    short.write_bytes(b"x" * 31)
    one_line_error(run("verify", path, "--key-file", short), "32 raw bytes")
    p = run("inspect", path, "--key-file", key_file, ok=True)
    assert kid in p.stdout and pk.hex() in p.stdout and "created:" in p.stdout
    p = run("inspect", path, "--key-file", key_file, "--json", ok=True)
    doc = json.loads(p.stdout)
    assert doc["key_id"] == kid and doc["signer"] == pk.hex() and doc["created"].endswith("Z")
    for out in (p.stdout, p.stderr):
        assert key.hex() not in out and sk.hex() not in out
    # Encrypted: inspect says what is hidden; verify checks the ciphertext's checksums.
    for encrypt, shown in ((True, "tensors"), ("all", "tensors and header")):
        enc = tmp_path / f"enc-{encrypt}.tw"
        tw.save(COMMON, enc, key=key, encrypt=encrypt)
        p = run("inspect", enc, "--key-file", key_file, "--json", ok=True)
        assert json.loads(p.stdout)["encrypted"] == shown
        assert f"encrypted:  {shown}" in run("inspect", enc, "--key-file", key_file, ok=True).stdout
        run("verify", enc, "--key-file", key_file, ok=True)
        one_line_error(run("inspect", enc), f"key id {kid}")
    assert "encrypted" not in run("inspect", path, "--key-file", key_file, ok=True).stdout
    # A plain file with a key: not authenticated; a foreign format: the options do not apply.
    plain = write("tensorwire", tmp_path / "plain.tw")
    one_line_error(run("verify", plain, "--key-file", key_file), "not authenticated")
    one_line_error(run("verify", plain, "--trusted", raw_pk), "not signed")
    npz_file = write("npz", tmp_path / "m.npz")
    one_line_error(run("verify", npz_file, "--key-file", key_file), "tensorwire files")


# --------------------------------------------------------------------------------------
# convert


@pytest.mark.parametrize(("src", "dst"), list(itertools.permutations(EXT, 2)))
def test_convert_between_every_pair(src, dst, tmp_path):
    a = write(src, tmp_path / f"in{EXT[src]}")
    b = tmp_path / f"out{EXT[dst]}"
    p = run("convert", a, b, ok=True)
    assert f"-> {b} ({dst}" in p.stdout
    got = read(b)
    values = list(got.values()) if isinstance(got, dict) else got
    # safetensors stores tensors by dtype size, so compare in dtype order (unique here)
    values = sorted(values, key=lambda a: a.dtype.name)
    want = sorted(COMMON.values(), key=lambda a: a.dtype.name)
    assert [(v.dtype, v.shape, v.tobytes()) for v in values] == [
        (w.dtype, w.shape, w.tobytes()) for w in want
    ]
    if "md5list" not in (src, dst):
        assert set(got) == set(COMMON)
    # and the diff command agrees that nothing changed
    d = run("diff", a, b, ok=True)
    assert "3 tensors: 3 same" in d.stdout


def test_convert_with_codec_and_explicit_formats(tmp_path):
    big = {"w": np.zeros((512, 512), np.float32), "b": np.arange(10, dtype=np.float32)}
    src = write("safetensors", tmp_path / "in.safetensors", big, metadata={"epoch": "2"})
    out = tmp_path / "out.data"
    run("convert", src, out, "--to", "tw", "--codec", "shuffle+zstd", ok=True)
    with tw.open(out) as r:
        assert r.info("w").codec.startswith("shuffle+zstd")
        assert r.metadata == {"epoch": "2"}
    assert out.stat().st_size < src.stat().st_size / 20
    back = tmp_path / "back.bin"
    run("convert", out, back, "--from", "tensorwire", "--to", "safetensors", ok=True)
    assert back.read_bytes() == src.read_bytes()  # exact round trip, metadata included
    run("convert", src, tmp_path / "c.npz", "--codec", "deflate", ok=True)
    assert npz.stored(Path(tmp_path / "c.npz").read_bytes())["w"][0] == "deflate"


def test_convert_errors_are_one_clear_line(tmp_path):
    bf = write("safetensors", tmp_path / "bf.safetensors", {"emb": np.ones(4, ml_dtypes.bfloat16)})
    one_line_error(run("convert", bf, tmp_path / "x.ptth"), "'emb'", "float32, float64 and int32")
    one_line_error(run("convert", bf, tmp_path / "x.npz"), "'emb'", "bfloat16")
    one_line_error(run("convert", bf, tmp_path / "x.weird"), "unknown extension", "--to")
    one_line_error(run("convert", bf, tmp_path / "x.safetensors", "--codec", "zstd"), "--codec")
    one_line_error(run("convert", bf, tmp_path / "x.tw", "--codec", "nonsense:9"))
    one_line_error(run("convert", tmp_path / "missing.tw", tmp_path / "y.tw"), "missing.tw")
    assert not (tmp_path / "x.ptth").exists() and not (tmp_path / "y.tw").exists()


def test_convert_notes_what_the_target_cannot_carry(tmp_path):
    src = write("tensorwire", tmp_path / "m.tw", metadata={"k": 1})
    p = run("convert", src, tmp_path / "m.md5list", ok=True)
    assert "metadata dropped" in p.stderr and "names dropped" in p.stderr


# --------------------------------------------------------------------------------------
# diff


def test_diff_reports_max_abs_and_relative_differences(tmp_path):
    a = {
        "w": np.array([1.0, 2.0, -4.0, 0.0], np.float32),
        "same": np.arange(3.0),
        "gone": np.ones(1),
    }
    b = {
        "w": np.array([1.0, 2.5, -4.0, 0.0], np.float32),
        "same": np.arange(3.0),
        "new": np.ones(1),
    }
    pa = write("tensorwire", tmp_path / "a.tw", a)
    pb = write("safetensors", tmp_path / "b.safetensors", b)
    p = run("diff", pa, pb)
    assert p.returncode == 1
    rows = {ln.split()[0]: ln.split() for ln in p.stdout.splitlines() if ln.strip()}
    assert rows["w"][1] == "different"
    assert float(rows["w"][-2]) == pytest.approx(0.5)
    assert float(rows["w"][-1]) == pytest.approx(0.2)  # 0.5 / max(|2|, |2.5|)
    assert rows["same"][1] == "same"
    assert "only in A" in " ".join(rows["gone"]) and "only in B" in " ".join(rows["new"])
    # within tolerance: close, and exit 0
    b2 = write(
        "npz", tmp_path / "b2.npz", {k: v for k, v in b.items() if k != "new"} | {"gone": a["gone"]}
    )
    p = run("diff", pa, b2, "--atol", "0.6")
    assert p.returncode == 0 and "close" in p.stdout


def test_diff_a_lossy_codec_and_nan_handling(tmp_path):
    w = RNG.standard_normal(1000).astype(np.float32)
    w[3] = np.nan
    pa = write("tensorwire", tmp_path / "a.tw", {"w": w})
    half = w.astype(np.float16).astype(np.float32)
    pb = write("tensorwire", tmp_path / "b.tw", {"w": half})
    p = run("diff", pa, pb)
    assert p.returncode == 1
    cells = next(ln for ln in p.stdout.splitlines() if ln.startswith("w ")).split()
    want_abs = float(np.nanmax(np.abs(w - half)))
    assert float(cells[-2]) == pytest.approx(want_abs, rel=1e-5)
    finite = ~np.isnan(w)
    want_rel = np.max(np.abs(w - half)[finite] / np.maximum(np.abs(w), np.abs(half))[finite])
    assert float(cells[-1]) == pytest.approx(float(want_rel), rel=1e-5)
    assert 0 < want_rel < 0.01


def test_diff_by_position_and_shape_mismatch(tmp_path):
    arrays = list(COMMON.values())
    pa = write("md5list", tmp_path / "a.md5list")
    pb = write("ptth", tmp_path / "b.ptth")
    p = run("diff", pa, pb, ok=True)
    assert "matching by position" in p.stdout and "3 same" in p.stdout
    pc = write(
        "md5list", tmp_path / "c.md5list", {"x": arrays[0].T.copy(), "y": arrays[1], "z": arrays[2]}
    )
    p = run("diff", pa, pc)
    assert p.returncode == 1 and "shape differs" in p.stdout


def test_usage_errors_exit_2_without_traceback(tmp_path):
    p = run("frobnicate")
    assert p.returncode == 2 and "No such command" in p.stderr
    p = run("inspect", "--from", "pickle", tmp_path / "x")
    assert p.returncode == 2
    assert run("--version", ok=True).stdout.startswith("tensorwire")


# --------------------------------------------------------------------------------------
# hostile strings: names, metadata and paths from a file (or a client) reach the terminal
# only as printable text, rich never reads them as markup, --json stays exact

HOSTILE_NAMES = [
    "[/]",  # rich: "closing tag '[/]' has nothing to close" (was an internal error)
    "[bold red]alarm[/bold red]",
    "[link=https://evil.example]click[/link]",
    ":thumbs_up: :smile:",  # rich emoji codes
    "\x1b]0;pwned title\x07",  # OSC: set the terminal title
    "\x1b[2J\x1b[H",  # clear the screen, cursor home
    "\x1b[31mred\x1b[0m",
    "\x9b31mC1 CSI",  # the 8-bit form of ESC [
    "\x1bP+q\x1b\\",  # DCS ... ST
    "report\u202egnp.exe",  # right-to-left override
    "a\u200bb\ufeff",  # zero-width space, BOM
    "over\rwrite",  # carriage return
    "back\x08\x08space\x7f",
    "line\nbreak\u2028sep\x85",
    "tab\tand\x0bvt\x0cff\x00nul",
    "\U000e0041tag",  # an invisible tag character
]


def terminal_safe(text):
    """Nothing in ``text`` a terminal would act on: only printable characters and newlines."""
    bad = sorted({c for c in text if c != "\n" and not c.isprintable()})
    assert not bad, f"unprintable characters reached the terminal: {bad}"
    return text


def hostile_file(fmt, path, names):
    tensors = {n: np.full(2, i, np.float32) for i, n in enumerate(names)}
    if fmt == "npz":
        tensors = {n: a for n, a in tensors.items() if "\0" not in n}  # zip names hold no NUL
    write(fmt, path, tensors)
    return tensors


def test_printable_escapes_exactly_the_unprintable_characters():
    for n in range(0x110000):
        c = chr(n)
        out = printable(c)
        assert out.isprintable()
        if c.isprintable():
            assert out == c
        else:
            assert out.startswith("\\") and len(out) > 1
    assert printable("a\x1b]0;t\x07b") == "a\\x1b]0;t\\x07b"
    assert printable("r\u202el \U000e0041") == "r\\u202el \\U000e0041"
    assert printable("tab\tnl\ncr\r") == "tab\\tnl\\ncr\\r"
    assert printable("[/] :smile: é 字 \\") == "[/] :smile: é 字 \\"
    assert printable("\udcff") == "\\udcff"


def test_printable_json_is_exact_json_and_terminal_safe():
    for doc in [
        HOSTILE_NAMES,
        {n: n for n in HOSTILE_NAMES},
        "\udcff\ud800 lone surrogates",
        "astral \U000e0041 \U0001f600",
        {"é": ["字", 1, None, 2.5]},
    ]:
        for ascii_only in (False, True):
            text = printable_json(doc, indent=2, ascii_only=ascii_only)
            terminal_safe(text)
            assert json.loads(text) == doc
            if ascii_only:
                assert text.isascii()
    assert printable_json({"é": "字"}) == '{"é": "字"}'  # readable non-ASCII kept


@pytest.mark.parametrize("fmt", ["tensorwire", "safetensors", "npz", "ptth"])
def test_hostile_tensor_names_in_every_command(fmt, tmp_path):
    a = tmp_path / f"a{EXT[fmt]}"
    tensors = hostile_file(fmt, a, HOSTILE_NAMES)

    p = run("inspect", a, ok=True)
    terminal_safe(p.stdout + p.stderr)
    for name in tensors:
        assert printable(name) in p.stdout, name  # shown, escaped, not interpreted
    assert "👍" not in p.stdout and "😄" not in p.stdout

    doc = json.loads(terminal_safe(run("inspect", "--json", a, ok=True).stdout))
    names = [t["name"] for t in doc["tensors"]]
    assert names == (sorted(tensors) if fmt == "safetensors" else list(tensors))  # exact

    terminal_safe(run("verify", a, ok=True).stdout)

    b = tmp_path / "b.safetensors"
    p = run("convert", a, b, ok=True)
    terminal_safe(p.stdout + p.stderr)
    assert sorted(safetensors.load(b)) == sorted(tensors)

    p = run("diff", a, b, ok=True)
    terminal_safe(p.stdout)
    for name in tensors:
        assert any(
            ln.startswith(printable(name) + " ") and " same " in ln for ln in p.stdout.splitlines()
        ), name
    # by position, where names are shown as "A's | B's"
    m = write("md5list", tmp_path / "c.md5list", read(a))
    p = run("diff", a, m, ok=True)
    terminal_safe(p.stdout)
    assert "matching by position" in p.stdout


@pytest.mark.parametrize("fmt", ["tensorwire", "safetensors"])
def test_hostile_metadata_is_escaped_in_inspect_and_exact_in_json(fmt, tmp_path):
    meta = {n: n for n in HOSTILE_NAMES if "\0" not in n}
    path = tmp_path / f"m{EXT[fmt]}"
    write(fmt, path, {"w": np.ones(2, np.float32)}, metadata=meta)
    p = run("inspect", path, ok=True)
    terminal_safe(p.stdout)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("  metadata:"))
    assert json.loads(line.split(":", 1)[1]) == meta  # the metadata line is exact JSON too
    assert json.loads(run("inspect", "--json", path, ok=True).stdout)["metadata"] == meta


def test_hostile_paths_are_escaped_everywhere(tmp_path):
    evil = "\x1b]0;pwned\x07[red]:smile:\u202e"  # (no "/": it is a file name)
    src = write("safetensors", tmp_path / f"{evil}.safetensors")
    for args in (
        ("inspect", src),
        ("verify", src),
        ("convert", src, tmp_path / f"out{evil}.tw"),
        ("diff", src, src),
    ):
        p = run(*args, ok=True)
        terminal_safe(p.stdout + p.stderr)
        assert args[0] == "diff" or printable(evil) in p.stdout  # diff shows no paths
    doc = json.loads(terminal_safe(run("inspect", "--json", src, ok=True).stdout))
    assert doc["file"] == str(src)
    # error messages quote paths too: missing file, unknown format, a directory, usage
    for args, fragment in [
        (("inspect", tmp_path / f"missing{evil}.tw"), "No such file"),
        (("inspect", tmp_path / f"{evil}.bin"), "cannot tell its format"),
        (("convert", src, tmp_path / f"x{evil}.weird"), "unknown extension"),
    ]:
        if fragment == "cannot tell its format":
            (tmp_path / f"{evil}.bin").write_bytes(b"not weights at all, just text")
        p = run(*args)
        one_line_error(p, fragment, printable(evil))
        terminal_safe(p.stderr)
    (tmp_path / f"dir{evil}.tw").mkdir()
    p = run("inspect", tmp_path / f"dir{evil}.tw")
    assert p.returncode == 2 and printable(evil) in p.stderr
    terminal_safe(p.stderr)
    p = run(f"frob{evil}")
    assert p.returncode == 2 and "No such command" in p.stderr
    terminal_safe(p.stderr)


def test_non_utf8_file_names_are_shown_and_exact_in_json(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"\xff\xfe-bytes.safetensors")
    safetensors.dump(COMMON, raw)
    path = os.fsdecode(raw)  # with surrogate escapes, as Python sees argv
    p = run("inspect", path, ok=True)
    terminal_safe(p.stdout)
    assert "\\udcff\\udcfe-bytes.safetensors" in p.stdout
    doc = json.loads(terminal_safe(run("inspect", "--json", path, ok=True).stdout))
    assert doc["file"] == path


def test_a_checksum_error_naming_a_hostile_tensor_is_escaped(tmp_path):
    name = "\x1b]0;pwned\x07"
    path = write("tensorwire", tmp_path / "bad.tw", {name: np.arange(100, dtype=np.float32)})
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    p = run("verify", path)
    one_line_error(p, "checksum mismatch")
    terminal_safe(p.stderr)
    bad = tmp_path / "dup.ptth"  # a ptth file whose error quotes the name
    one = ptth.dumps({name: np.ones(1, np.float32)})
    bad.write_bytes(one[:8] + b"\x00\x00\x00\x02" + one[12:] + one[12:])
    p = run("inspect", bad)
    one_line_error(p, "appears twice")
    terminal_safe(p.stderr)


def test_ascii_only_terminals_get_escapes_not_crashes(tmp_path):
    tensors = {"é字": np.ones(1, np.float32)}
    path = write("safetensors", tmp_path / "u.safetensors", tensors, metadata={"ü": "ß"})
    ascii_env = {"PYTHONIOENCODING": "ascii"}
    p = run_env(ascii_env, "inspect", path)
    assert p.returncode == 0, p.stderr
    assert "\\xe9\\u5b57" in p.stdout  # the name, escaped, where the table shows it
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("  metadata:"))
    assert json.loads(line.split(":", 1)[1]) == {"ü": "ß"}
    p = run_env(ascii_env, "diff", path, path)
    assert p.returncode == 0 and "\\xe9\\u5b57" in p.stdout, p.stderr
    assert run_env(ascii_env, "verify", path).returncode == 0
    p = run_env(ascii_env, "inspect", "--json", path)
    assert p.returncode == 0 and p.stdout.isascii()
    doc = json.loads(p.stdout)
    assert doc["metadata"] == {"ü": "ß"} and doc["tensors"][0]["name"] == "é字"


def run_env(env, *args):
    exe = str(SCRIPT) if SCRIPT.exists() else shutil.which("tensorwire")
    return subprocess.run(
        [exe, *map(str, args)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **env},
        text=True,
        encoding="ascii",
        errors="strict",
    )


# --------------------------------------------------------------------------------------
# --version


def test_version_names_the_package_and_the_wire_format(tmp_path):
    major, minor = tw.FORMAT_VERSION
    p = run("--version", ok=True)
    assert p.stdout == f"tensorwire {tw.__version__} (wire format {major}.{minor})\n"
    assert p.stderr == ""
    assert tw.__version__ == importlib.metadata.version("tensorwire")
    written = write("tensorwire", tmp_path / "m.tw")
    assert json.loads(run("inspect", "--json", written).stdout)["version"] == f"{major}.{minor}"


# --------------------------------------------------------------------------------------
# progress bars: on stderr, only on a terminal, counted in real bytes


def run_tty(*args):
    """Run the command with stderr on a pseudo-terminal and stdout a pipe: its status,
    its stdout, and everything the terminal received."""
    exe = str(SCRIPT) if SCRIPT.exists() else shutil.which("tensorwire")
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "xterm-256color"}
    p = subprocess.Popen([exe, *map(str, args)], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    received = bytearray()

    def drain():
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            received.extend(data)

    reader = threading.Thread(target=drain)
    reader.start()
    out, _ = p.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(master)
    terminal = received.decode("utf-8", "replace")
    assert "Traceback" not in terminal
    return p.returncode, out.decode(), terminal


# 4 MiB stored, raw, in two tensors: the bars' totals are these bytes
TWO_MIB = {
    "a": np.arange(1 << 19, dtype=np.float32),
    "b": -np.arange(1 << 19, dtype=np.float32),
}


def test_progress_bars_appear_only_on_a_terminal_and_never_on_stdout(tmp_path):
    src = write("tensorwire", tmp_path / "m.tw", TWO_MIB)
    copy = write("safetensors", tmp_path / "m.safetensors", TWO_MIB)
    # verify: the stored bytes of every tensor
    rc, out, terminal = run_tty("verify", src)
    assert rc == 0 and out == run("verify", src, ok=True).stdout
    assert "verifying" in terminal and "4.0/4.0 MiB" in terminal
    # diff: both files read, then A's 4 MiB compared
    rc, out, terminal = run_tty("diff", src, copy)
    assert rc == 0 and out == run("diff", src, copy, ok=True).stdout
    size = _size_mib(src.stat().st_size + copy.stat().st_size)
    assert "reading" in terminal and f"{size}/{size} MiB" in terminal
    assert "comparing" in terminal and "4.0/4.0 MiB" in terminal
    # convert: the source file read, the decoded bytes written
    rc, out, terminal = run_tty("convert", src, tmp_path / "out.npz")
    assert rc == 0 and out.startswith(str(src)) and "\x1b" not in out
    assert "reading" in terminal and "writing" in terminal and "4.0/4.0 MiB" in terminal
    # --json on a terminal: the document on stdout is still the whole of stdout
    rc, out, terminal = run_tty("verify", "--json", src)
    assert rc == 0 and json.loads(out)["ok"] is True and "verifying" in terminal
    # off with --no-progress: the terminal gets nothing at all
    for args in (
        ("verify", src),
        ("diff", src, copy),
        ("convert", src, tmp_path / "out2.npz"),
    ):
        rc, out, terminal = run_tty(*args, "--no-progress")
        assert rc == 0 and out and terminal == "", (args, terminal)
        # and off without a terminal: stderr stays empty
        p = run(*args, ok=True)
        assert p.stderr == "" and "\x1b" not in p.stdout and "━" not in p.stdout


def _size_mib(n):
    return f"{n / (1 << 20):.1f}"


def test_a_failure_under_a_progress_bar_is_still_one_clear_line(tmp_path):
    src = write("tensorwire", tmp_path / "m.tw", TWO_MIB)
    data = bytearray(src.read_bytes())
    data[-100] ^= 1  # in tensor b
    src.write_bytes(bytes(data))
    rc, out, terminal = run_tty("verify", src)
    assert rc == 1 and out == ""
    assert 'tensorwire: error: tensor "b": checksum mismatch' in terminal
    rc, out, terminal = run_tty("verify", src, "--json")
    assert rc == 1 and json.loads(out)["error"]["type"] == "IntegrityError"


# --------------------------------------------------------------------------------------
# --json: one document on stdout, the keys docs/cli.md lists, errors too

DOC = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
# the facts inspect shows only where the file has them (docs/cli.md says which)
OPTIONAL_FACTS = {"version", "content_id", "base_id", "key_id", "signer", "created"}
OPTIONAL_FACTS |= {"encrypted", "checksum"}


def documented(command):
    """The example document docs/cli.md gives for ``command --json``."""
    section = DOC.split(f"### `{command} --json`", 1)[1]
    return json.loads(re.search(r"```json\n(.*?)```", section, flags=re.S).group(1))


def same_keys(doc, example, where="", optional=frozenset()):
    """``doc`` has the keys of ``example``, recursively (list items against the example's
    first; null on either side ends the comparison; metadata and counts are data; the
    values themselves are checked by the tests)."""
    if isinstance(example, dict) and isinstance(doc, dict):
        assert set(doc) - optional == set(example) - optional, where
        for k in set(doc) & set(example) - {"metadata", "counts"}:
            same_keys(doc[k], example[k], f"{where}.{k}")
    elif isinstance(example, list) and isinstance(doc, list):
        for item in doc[: len(doc) if example else 0]:
            same_keys(item, example[0], f"{where}[]")
    elif isinstance(example, (dict, list)) and doc is not None:
        raise AssertionError(f"{where}: {doc!r} where the example has {example!r}")


def json_run(*args, status=0):
    p = run(*args, "--json")
    assert p.returncode == status, p.stderr
    doc = json.loads(terminal_safe(p.stdout))  # one document: nothing before or after it
    return doc, p


@pytest.mark.parametrize("fmt", list(EXT))
def test_every_json_output_has_the_documented_keys(fmt, tmp_path):
    path = write(fmt, tmp_path / f"m{EXT[fmt]}")
    doc, _ = json_run("inspect", path)
    same_keys(doc, documented("inspect"), optional=OPTIONAL_FACTS)
    assert doc["ok"] is True and set(doc) - set(documented("inspect")) <= OPTIONAL_FACTS
    if fmt == "tensorwire":
        assert set(doc) == set(documented("inspect"))

    doc, _ = json_run("verify", path)
    same_keys(doc, documented("verify"))
    checks = tw.formats.FORMATS[fmt].checks
    assert doc["ok"] is True and doc["tensors"] == 3 and doc["format"] == fmt
    assert doc["decoded_bytes"] == sum(a.nbytes for a in COMMON.values())
    assert doc["checksums"] is (checks is not None) and doc["checked"] == (checks or "structure")

    out = tmp_path / "out.tw"
    doc, p = json_run("convert", path, out, "--codec", "zstd")
    same_keys(doc, documented("convert"))
    assert p.stderr == "" and doc["tensors"] == 3 and doc["notes"] == []
    assert doc["source"] == {"file": str(path), "format": fmt, "file_bytes": path.stat().st_size}
    assert doc["dest"]["file_bytes"] == out.stat().st_size
    assert doc["ratio"] == pytest.approx(out.stat().st_size / path.stat().st_size)

    doc, _ = json_run("diff", path, out)
    same_keys(doc, documented("diff"))
    assert doc["ok"] is True and doc["counts"] == {"same": 3}
    assert doc["matched_by"] == "name"  # (md5list's are "0", "1", ... in both)
    assert {t["status"] for t in doc["tensors"]} == {"same"}


def test_json_documents_of_diff_and_convert_carry_the_findings(tmp_path):
    a = write(
        "tensorwire",
        tmp_path / "a.tw",
        {
            "w": np.array([1.0, np.nan, 2.0], np.float32),
            "v": np.array([1.0, 2.0], np.float32),
            "shape": np.ones(4, np.float32),
            "gone": np.ones(2, np.float32),
        },
        metadata={"k": 1},
    )
    b = write(
        "safetensors",
        tmp_path / "b.safetensors",
        {
            "w": np.array([1.0, 1.0, 2.5], np.float32),
            "v": np.array([1.0, 2.5], np.float32),
            "shape": np.ones((2, 2), np.float32),
            "new": np.zeros(1, np.int32),
        },
    )
    doc, p = json_run("diff", a, b, "--rtol", "0.3", status=1)
    same_keys(doc, documented("diff"))
    rows = {t["name"]: t for t in doc["tensors"]}
    assert doc["ok"] is False and "error" not in doc and p.stderr == ""
    assert doc["counts"] == {
        "close": 1,
        "different": 1,
        "only in A": 1,
        "only in B": 1,
        "shape differs": 1,
    }
    assert rows["w"]["status"] == "different" and rows["w"]["max_abs_diff"] == "inf"
    assert rows["v"]["status"] == "close" and rows["v"]["max_abs_diff"] == pytest.approx(0.5)
    assert rows["v"]["max_rel_diff"] == pytest.approx(0.2) and doc["rtol"] == 0.3
    assert rows["shape"]["a"]["shape"] == [4] and rows["shape"]["b"]["shape"] == [2, 2]
    assert rows["shape"]["max_abs_diff"] is None
    assert rows["gone"]["b"] is None and rows["new"]["a"] is None
    assert rows["new"]["b"] == {"name": "new", "dtype": "int32", "shape": [1]}
    # by position: each side's own name
    m = write("md5list", tmp_path / "m.md5list", {"x": np.ones(3), "y": np.zeros(2)})
    n = write("ptth", tmp_path / "n.ptth", {"p": np.ones(3), "q": np.zeros(2)})
    doc, _ = json_run("diff", m, n)
    assert doc["matched_by"] == "position"
    assert [(t["a"]["name"], t["b"]["name"]) for t in doc["tensors"]] == [("0", "p"), ("1", "q")]
    # convert: what the target could not carry, in the document and not on stderr
    doc, p = json_run("convert", a, tmp_path / "c.md5list")
    assert p.stderr == "" and len(doc["notes"]) == 2
    assert any("metadata dropped" in n for n in doc["notes"])


def test_errors_with_json_are_a_json_document_and_a_nonzero_status(tmp_path):
    def error(*args, status=1):
        doc, p = json_run(*args, status=status)
        assert set(doc) == {"ok", "error"} and doc["ok"] is False
        assert set(doc["error"]) == {"type", "message"}
        assert p.stderr.strip()  # and still said on stderr
        return doc["error"]

    missing = tmp_path / "missing.tw"
    e = error("verify", missing)
    assert e["type"] == "OSError" and str(missing) in e["message"]
    bad = write("tensorwire", tmp_path / "bad.tw")
    data = bytearray(bad.read_bytes())
    data[-3] ^= 1
    bad.write_bytes(bytes(data))
    e = error("verify", bad)
    with pytest.raises(tw.TensorwireError) as raised:
        with tw.open(bad) as r:
            r.verify()
    assert e["type"] == type(raised.value).__name__ == "IntegrityError"
    assert e["message"] == str(raised.value)
    signed = tmp_path / "keyed.tw"
    tw.save(COMMON, signed, key=os.urandom(32))
    assert error("inspect", signed)["type"] == "AuthenticationError"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not weights, not at all")
    e = error("inspect", garbage)
    assert e["type"] == "InputError" and "cannot tell its format" in e["message"]
    src = write("tensorwire", tmp_path / "m.tw")
    assert error("convert", src, tmp_path / "x.tw", "--codec", "nonsense:9")["type"] == (
        "CodecError"
    )
    assert not (tmp_path / "x.tw").exists()
    e = error("verify", src, "--frob", status=2)
    assert e["type"] == "UsageError" and "--frob" in e["message"]
    assert error("diff", src, status=2)["type"] == "UsageError"
    # a hostile name quoted by the error: the exception's message, terminal safe
    name = "\x1b]0;pwned\x07\u202e"
    hostile = write("tensorwire", tmp_path / "h.tw", {name: np.arange(100, dtype=np.float32)})
    data = bytearray(hostile.read_bytes())
    data[-1] ^= 1
    hostile.write_bytes(bytes(data))
    with pytest.raises(tw.IntegrityError) as raised:
        tw.load(hostile)
    assert error("verify", hostile)["message"] == str(raised.value)
    p = run("inspect", tmp_path / f"{name}.tw", "--json")
    assert json.loads(terminal_safe(p.stdout))["error"]["message"].startswith(
        str(tmp_path / f"{name}.tw")  # the path exact in the document
    )
    terminal_safe(p.stderr)
    # "--json" after "--" is a file name, not the option
    p = run("inspect", "--", "--json")
    assert p.returncode == 1 and p.stdout == "" and "--json" in p.stderr
