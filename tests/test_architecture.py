"""docs/ARCHITECTURE.md against the tree: every source file listed, every listed path
real, no core file over the size a reader can hold, pyo3 only in the bindings, and the
core's modules depending on each other without cycles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "ARCHITECTURE.md"
MAX_CORE_LINES = 600


def _listed() -> set[str]:
    """Every backticked path (one with a directory) in a table row of the page; bare file
    names in a row's description are relative to that row's path."""
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith("|")]
    return {p for row in rows for p in re.findall(r"`([\w.-]+/[\w./-]+\.(?:rs|py|pyi|md))`", row)}


def _sources() -> list[Path]:
    files = [*(ROOT / "src").rglob("*.rs"), *(ROOT / "python" / "tensorwire").rglob("*.py")]
    return sorted(files)


def _is_test(path: Path) -> bool:
    return path.stem in ("tests", "fixtures") or path.stem.endswith("_tests")


def test_every_source_file_is_on_the_page() -> None:
    listed = _listed()
    missing = [
        str(p.relative_to(ROOT)) for p in _sources() if str(p.relative_to(ROOT)) not in listed
    ]
    assert not missing, f"files missing from docs/ARCHITECTURE.md: {missing}"


def test_every_path_on_the_page_exists() -> None:
    gone = sorted(p for p in _listed() if not (ROOT / p).exists())
    assert not gone, f"docs/ARCHITECTURE.md names files that do not exist: {gone}"


@pytest.mark.parametrize(
    "path", [p for p in _sources() if p.suffix == ".rs" and not _is_test(p)], ids=str
)
def test_no_core_file_is_too_long(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_CORE_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def test_only_the_bindings_touch_pyo3() -> None:
    core = [p for p in (ROOT / "src").rglob("*.rs") if "bindings" not in p.parts]
    users = [str(p.relative_to(ROOT)) for p in core if re.search(r"\bpyo3\b", p.read_text())]
    assert not users, f"pyo3 outside src/bindings: {users}"


def _core_modules() -> dict[str, list[Path]]:
    modules: dict[str, list[Path]] = {}
    for p in (ROOT / "src").iterdir():
        name = p.stem
        if name in ("lib", "bindings") or (p.is_file() and p.suffix != ".rs"):
            continue
        files = list(p.rglob("*.rs")) if p.is_dir() else [p]
        modules.setdefault(name, []).extend(files)
    return modules


def test_the_core_modules_form_no_cycle() -> None:
    modules = _core_modules()
    edges = {
        name: {
            used
            for f in files
            for used in re.findall(r"crate::(\w+)", f.read_text())
            if used in modules and used != name
        }
        for name, files in modules.items()
    }
    assert edges["error"] == set(), "error must depend on nothing"
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"module cycle: {' -> '.join([*path, node])}"
        state[node] = "open"
        for nxt in sorted(edges[node]):
            visit(nxt, [*path, node])
        state[node] = "done"

    for name in sorted(edges):
        visit(name, [])
