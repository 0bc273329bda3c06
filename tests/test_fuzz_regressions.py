"""The atheris targets' seeds and every input a fuzzer ever crashed on, replayed through
the same target functions (``fuzz/python/targets.py``; atheris is not needed for this).

A crash found by fuzzing is kept as ``tests/fixtures/hostile/<target>/<name>`` with the
fix that made it harmless; a target function raises for anything but a tensorwire error
(and checks that what it reads is bounded by the input), so these tests fail if one of
those fixes regresses.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import tensorwire as tw
from tensorwire.formats import md5list, npz, ptth, safetensors

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz" / "python"
HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"


def _load_targets():
    spec = importlib.util.spec_from_file_location("tensorwire_fuzz_targets", FUZZ / "targets.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


MODULE = _load_targets()
TARGETS = MODULE.TARGETS
SEEDS = {"decode": "tensorwire", "open": "tensorwire"}


def _cases():
    for target in sorted(TARGETS):
        for folder in (FUZZ / "corpus" / SEEDS.get(target, target), HOSTILE / target):
            for path in sorted(folder.glob("*")) if folder.is_dir() else []:
                yield pytest.param(target, path, id=f"{target}-{folder.parent.name}-{path.name}")


@pytest.mark.parametrize(("target", "path"), list(_cases()))
def test_replay(target, path):
    TARGETS[target](path.read_bytes())


def test_every_target_has_seeds_and_the_format_seeds_are_valid_files():
    for target in TARGETS:
        assert any((FUZZ / "corpus" / SEEDS.get(target, target)).iterdir()), target
    for name, loads in [
        ("safetensors", safetensors.loads),
        ("npz", npz.loads),
        ("md5list", md5list.loads),
        ("ptth", ptth.loads),
    ]:
        for path in (FUZZ / "corpus" / name).iterdir():
            loads(path.read_bytes())  # a seed the reader refuses explores nothing
    for path in (FUZZ / "corpus" / "tensorwire").iterdir():
        r = tw.open(path.read_bytes())
        r.verify()


def test_the_targets_refuse_nothing_silently(monkeypatch):
    # a target must let a non-tensorwire exception out: the fuzzer relies on it
    def broken(data):
        raise KeyError("a bug")

    monkeypatch.setattr(safetensors, "loads", broken)
    with pytest.raises(KeyError):
        TARGETS["safetensors"](b"anything")
    with pytest.raises(AssertionError, match="bytes of arrays"):
        MODULE._check_bounded(10, 9, "x")
