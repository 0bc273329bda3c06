"""The extras: `import tensorwire` and every module import with no optional package
installed, and each feature that needs one says which extra installs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import tomllib

import tensorwire as tw
from tensorwire._extras import EXTRAS

ROOT = Path(__file__).resolve().parent.parent

# The child: every optional module made unimportable (None in sys.modules), then each
# feature tried; prints one line per feature with the error it raised.
CHILD = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
import importlib
for module in {modules!r}:
    importlib.import_module(module)
import tensorwire as tw
from tensorwire.integrations import flower
from tensorwire.transport import kafka

def attempt(feature, call):
    try:
        call()
    except Exception as e:
        print(feature, "|", type(e).__name__, "|", e)
    else:
        print(feature, "| no error")

attempt("kafka", lambda: kafka.publish(object(), "t", b"x"))
attempt("flower", lambda: flower.payload_record(b"x"))
attempt("bf16", lambda: tw.decode(open({bf16_payload!r}, "rb").read()))
from tensorwire import frameworks
attempt("torch", lambda: frameworks.to_torch({{"w": [1.0]}}))
attempt("jax", lambda: frameworks.to_jax({{"w": [1.0]}}))
"""


def test_pyproject_declares_every_extra_the_code_names() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(declared) == set(EXTRAS)
    for extra, (_, package) in EXTRAS.items():
        assert any(dep.startswith(package) for dep in declared[extra]), (extra, declared[extra])


def test_every_module_imports_without_extras_and_each_feature_names_its_extra(
    tmp_path: Path,
) -> None:
    payload = tmp_path / "bf16.tw"
    payload.write_bytes(tw.encode({"w": np.ones(4, dtype=ml_dtypes.bfloat16)}))
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from installed_smoke import MODULES
    finally:
        sys.path.pop(0)
    blocked = sorted({module for module, _ in EXTRAS.values()})
    child = CHILD.format(blocked=blocked, modules=MODULES, bf16_payload=str(payload))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(child)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" | ", 1) for line in out.stdout.splitlines())
    assert set(lines) == {"kafka", "flower", "bf16", "torch", "jax"}, out.stdout
    for feature, said in lines.items():
        assert f"pip install 'tensorwire[{feature}]'" in said, (feature, said)
    assert lines["kafka"].startswith("ModuleNotFoundError | tensorwire.transport.kafka needs")
    assert lines["flower"].startswith("ModuleNotFoundError | tensorwire.integrations.flower")
    assert lines["bf16"].startswith('InputError | tensor "w": dtype bfloat16')
    assert lines["torch"].startswith("ModuleNotFoundError | tensorwire.frameworks.to_torch needs")
    assert lines["jax"].startswith("ModuleNotFoundError | tensorwire.frameworks.to_jax needs")


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_each_extra_is_importable_here(extra: str, request: pytest.FixtureRequest) -> None:
    """The test environment holds every extra, so none of the suite is skipped for one."""
    from tensorwire._extras import require

    if extra == "torch":
        request.getfixturevalue("torch")  # `make torch`; skipped without it, failed in CI
    with warnings.catch_warnings():  # flwr imports click's deprecated names
        warnings.simplefilter("ignore", DeprecationWarning)
        assert require(extra, "this test") is not None
