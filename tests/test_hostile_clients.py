"""The hostile-client suite (tests/hostile_clients.py): every attack of the hardening
issue, forged from the spec with valid hashes, each in its own process under an
address-space limit; each must end in what it states (a tensorwire error, a refusal,
or an accepted honest outcome), with the process alive and its memory bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import hostile_clients  # noqa: E402


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("hostile") / "rows.json"
    subprocess.run(
        [sys.executable, str(HERE / "hostile_clients.py"), "--json", str(out)],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return {r["name"]: r for r in json.loads(out.read_text())}


@pytest.mark.parametrize("name", list(hostile_clients.ATTACKS))
def test_attack(rows: dict[str, dict[str, Any]], name: str) -> None:
    row = rows[name]
    assert row["verdict"] is None, row["verdict"]
