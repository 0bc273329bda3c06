#!/usr/bin/env python3
"""What the stable ABI costs: the abi3 extension users install (``abi3-py39``) against
the same code built for this interpreter's full API, on the same workloads, in one run.

    python benches/abi3.py                 # builds the full-API variant, writes results/abi3/
    python benches/abi3.py --smoke         # tiny sizes, the installed build on both sides

The full-API variant is the same crate with pyo3's ``abi3-py39`` feature left off
(``cargo build --release``, its own target directory). Each side runs in processes of its
own (benches/children/abi3_timings.py) with PYTHONPATH at a copy of the package holding
that side's extension; the sides alternate for ROUNDS rounds, each time is the median of
the rounds' best-of-REPEAT, and every workload's result must be identical on both sides.
The report gives abi3 / full-API time per workload, the median of the rounds' paired
ratios (fresh memory makes single processes vary by 20% here) and their range; the goal
is a median of at most 1.05 (the hot paths are in Rust, so the ABI should not show).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "benches" / "children" / "abi3_timings.py"
GOAL = 1.05


def _full_api_extension(build_dir: Path) -> Path:
    """The crate built without ``abi3-py39``: the interpreter's full API."""
    env = {**os.environ, "PYO3_PYTHON": sys.executable, "CARGO_TARGET_DIR": str(build_dir)}
    subprocess.run(
        ["cargo", "build", "--release", "--lib", "--quiet",
         "--features", "python,pyo3/extension-module"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    return build_dir / "release" / "libtensorwire.so"


def _package(where: Path, extension: Path, suffix: str) -> Path:
    """A copy of python/tensorwire whose only extension is ``extension``."""
    shutil.copytree(ROOT / "python" / "tensorwire", where / "tensorwire",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))  # fmt: skip
    shutil.copy2(extension, where / "tensorwire" / f"_core{suffix}")
    return where


def _run(side: Path, scale: float, repeat: int, expect: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(side)}
    command = [sys.executable, str(CHILD), str(scale), str(repeat), expect]
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if out.returncode:
        raise SystemExit(f"{side}: {out.stderr}")
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes; the installed build twice")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out", default=str(ROOT / "benches" / "results" / "abi3"))
    args = p.parse_args(argv)
    import tensorwire as tw

    installed = Path(tw._core.__file__)
    assert installed.name.endswith(".abi3.so"), f"the installed build is not abi3: {installed}"
    full_suffix = sysconfig.get_config_var("EXT_SUFFIX")
    scale, rounds, repeat = (0.01, 2, 1) if args.smoke else (1.0, args.rounds, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        full = installed if args.smoke else _full_api_extension(ROOT / "target" / "full-api")
        sides = {
            "abi3": (_package(tmp_path / "abi3", installed, ".abi3.so"), ".abi3.so"),
            "full": (_package(tmp_path / "full", full, full_suffix), full_suffix),
        }
        runs: dict[str, list[dict]] = {"abi3": [], "full": []}
        for _ in range(rounds):
            for name, (side, suffix) in sides.items():
                runs[name].append(_run(side, scale, repeat, suffix))
    digests = {name: [r["digest"] for r in rs] for name, rs in runs.items()}
    first = digests["abi3"][0]
    assert all(d == first for rs in digests.values() for d in rs), "the builds' results differ"
    rows = []
    for work in runs["abi3"][0]["seconds"]:
        med = {n: statistics.median(r["seconds"][work] for r in rs) for n, rs in runs.items()}
        paired = sorted(
            a["seconds"][work] / f["seconds"][work] for a, f in zip(runs["abi3"], runs["full"])
        )
        rows.append((work, med["abi3"], med["full"], statistics.median(paired), paired))
    worst = max(r[3] for r in rows)
    lines = [
        "# The stable ABI's cost: abi3-py39 against the full API",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `benches/abi3.py"
        f"{' --smoke' if args.smoke else ''}` on {platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; {rounds} rounds alternating the builds, each"
        f" time the median of the rounds' best of {repeat}, each ratio the median of the"
        " rounds' ratios (each round runs the two builds back to back). Every result is"
        " identical on both sides.",
        "",
        "| workload | abi3 ms | full API ms | abi3 / full | range over rounds |",
        "|---|---|---|---|---|",
        *(
            f"| {w} | {a * 1e3:.2f} | {f * 1e3:.2f} | {r:.3f} | {p[0]:.2f} to {p[-1]:.2f} |"
            for w, a, f, r, p in rows
        ),
        "",
        f"Goal `abi3-cost`: abi3 / full API <= {GOAL} on every workload: worst {worst:.3f}, "
        f"**{'MET' if worst <= GOAL else 'NOT MET'}**.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.smoke:
        os.makedirs(args.out, exist_ok=True)
        Path(args.out, "report.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
