"""The artefact users install: the wheel in dist/ (its tags and contents) and, when the
suite runs against the installed wheel (`make test-python` sets TENSORWIRE_INSTALLED),
that it is what was imported, with no Rust toolchain on PATH."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import tensorwire as tw

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = os.environ.get("TENSORWIRE_INSTALLED") == "1"
WHEEL_NAME = re.compile(
    r"tensorwire-(?P<version>[^-]+)-cp39-abi3-manylinux_(?P<major>\d+)_(?P<minor>\d+)_x86_64\.whl"
)


def _installed_only() -> None:
    if not INSTALLED:
        if os.environ.get("CI"):
            pytest.fail("CI runs the suite against the installed wheel (make test-python)")
        pytest.skip("checks the installed wheel: run through `make test-python`")


def _wheel() -> Path:
    wheels = sorted((ROOT / "dist").glob("*.whl"))
    if not wheels:
        _installed_only()
        pytest.skip("no wheel in dist/: `make wheel` builds one")
    assert len(wheels) == 1, f"dist/ holds more than one wheel: {wheels}"
    return wheels[0]


def test_wheel_is_abi3_manylinux_within_this_glibc() -> None:
    wheel = _wheel()
    tag = WHEEL_NAME.fullmatch(wheel.name)
    assert tag, f"{wheel.name} is not a cp39-abi3 manylinux x86_64 wheel"
    assert tag["version"] == tw.__version__
    libc, glibc = platform.libc_ver()
    assert libc == "glibc"
    claimed = (int(tag["major"]), int(tag["minor"]))
    assert claimed <= tuple(int(p) for p in glibc.split(".")[:2]), (claimed, glibc)


def test_wheel_holds_the_extension_the_stubs_and_the_console_script() -> None:
    with zipfile.ZipFile(_wheel()) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = z.read(entry_points).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for member in ("tensorwire/py.typed", "tensorwire/_core.pyi", "tensorwire/_core.abi3.so"):
        assert member in names, f"{member} is missing from the wheel"
    assert not [n for n in names if n.endswith(".rs") or n.startswith("tests/")]
    assert re.search(r"^tensorwire\s*=\s*tensorwire\.cli:main$", scripts, re.M), scripts
    assert "Requires-Python: >=3.9" in metadata


def test_the_installed_wheel_is_what_runs() -> None:
    _installed_only()
    source = ROOT / "python"
    for module in (tw, tw._core):
        where = Path(module.__file__).resolve()
        assert source not in where.parents, f"{module.__name__} comes from the source tree"
        assert Path(sys.prefix).resolve() in where.parents, where
    assert Path(tw._core.__file__).name == "_core.abi3.so"


def test_no_rust_toolchain_on_path() -> None:
    _installed_only()
    found = {tool: shutil.which(tool) for tool in ("cargo", "rustc", "maturin")}
    assert not any(found.values()), found


def test_console_script_is_installed() -> None:
    _installed_only()
    script = shutil.which("tensorwire")
    assert script and Path(script).parent == Path(sys.executable).parent, script
    out = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert "Usage" in out.stdout
