"""Every Python example in README.md and docs/*.md runs as written.

Blocks that need more than the dev requirements say so by what they import: the Kafka
example (``confluent_kafka``) runs against the test suite's own tansu broker (the
``kafka_bootstrap`` fixture), whose address it reads from ``KAFKA_BOOTSTRAP``; the NATS
example (``import nats``) runs against its own nats-server (the ``nats_url`` fixture),
whose URL it reads from ``NATS_URL``; the torch examples (``import torch``) need
`make torch` (skipped without it, a failure in CI: the ``torch`` fixture).
Relative links point at files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (f"{page.relative_to(ROOT)}:{i}", code)
    for page in PAGES
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))
]


def test_docs_have_examples() -> None:
    assert len(PAGES) >= 10
    assert len(BLOCKS) >= 15
    for page in ["README.md", "docs/payloads.md", "docs/codecs.md", "docs/chunking.md",
                 "docs/federated.md", "docs/formats.md"]:  # fmt: skip
        assert any(where.startswith(f"{page}:") for where, _ in BLOCKS), page


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[w for w, _ in BLOCKS])
def test_docs_example_runs(code: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = dict(os.environ)
    if "confluent_kafka" in code:
        env["KAFKA_BOOTSTRAP"] = request.getfixturevalue("kafka_bootstrap")
    if re.search(r"^import torch$", code, flags=re.M):
        request.getfixturevalue("torch")
    if re.search(r"^import nats$", code, flags=re.M):
        pytest.importorskip("nats")
        env["NATS_URL"] = request.getfixturevalue("nats_url")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        path = (page.parent / target).resolve()
        assert path.exists(), f"{page.name} links {target}"
