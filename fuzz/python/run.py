"""Run every atheris target for a fixed time; exit non-zero if any crashed.

    python fuzz/python/run.py --seconds 30            # every target, 30 s each
    python fuzz/python/run.py --seconds 600 --targets npz,safetensors --jobs 2
    python fuzz/python/run.py --seconds 300 --targets decode,open --native

``--native`` fuzzes with the coverage-instrumented extension that ``build_native.py``
builds (Rust branches guide the fuzzer too; overflow checks on).

Each target starts from its committed seeds (``fuzz/python/corpus/``) plus what earlier
runs found (``fuzz/python/.work/<target>/``, not committed), with the dictionary
``tensorwire.dict``. A crashing input is saved as ``fuzz/python/crashes/<target>-crash-*``
(reproduce: ``python fuzz/python/targets.py <target> <that file>``); logs go to
``fuzz/python/.work/<target>.log``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

__all__ = ["Result", "main", "run_target"]

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ("safetensors", "npz", "md5list", "ptth", "decode", "open", "cli")
SEEDS = {"decode": "tensorwire", "open": "tensorwire"}  # targets sharing a corpus


class Result(NamedTuple):
    """How one target's run ended."""

    target: str
    returncode: int
    seconds: float
    runs: int
    crashes: list[str]
    log: str


NATIVE = os.path.join(HERE, ".work", "native")


def run_target(
    target: str,
    seconds: int,
    rss_limit_mb: int,
    timeout: int,
    native: bool = False,
    ignore: str = "",
) -> Result:
    """Fuzz ``target`` for ``seconds``; a non-zero return code means it found a crash."""
    work = os.path.join(HERE, ".work", target + ("-native" if native else ""))
    crashes = os.path.join(HERE, "crashes")
    os.makedirs(work, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    prefix = os.path.join(crashes, f"{target}-")
    before = set(glob.glob(prefix + "*"))
    log = os.path.join(HERE, ".work", f"{target}{'-native' if native else ''}.log")
    cmd = [
        sys.executable,
        os.path.join(HERE, "targets.py"),
        target,
        work,
        os.path.join(HERE, "corpus", SEEDS.get(target, target)),
        f"-max_total_time={seconds}",
        f"-rss_limit_mb={rss_limit_mb}",
        f"-timeout={timeout}",
        f"-artifact_prefix={prefix}",
        f"-dict={os.path.join(HERE, 'tensorwire.dict')}",
        "-print_final_stats=1",
    ]
    env = dict(os.environ, TW_FUZZ_IGNORE=ignore)
    if native:
        env["TW_FUZZ_NATIVE"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [NATIVE, env.get("PYTHONPATH")]))
    start = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    elapsed = time.monotonic() - start
    with open(log, errors="replace") as f:
        text = f.read()
    runs = [int(n) for n in re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)]
    found = sorted(set(glob.glob(prefix + "*")) - before)
    return Result(target, rc, elapsed, runs[-1] if runs else 0, found, log)


def main(argv: list[str]) -> int:
    """Parse arguments, run the targets (``--jobs`` at a time), print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="time per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--timeout", type=int, default=20, help="seconds per input")
    parser.add_argument(
        "--native", action="store_true", help="use build_native.py's instrumented extension"
    )
    parser.add_argument(
        "--ignore",
        default="",
        metavar="NAMES",
        help="comma-separated exception type names not to count as crashes (a known bug "
        "being fixed elsewhere, e.g. MemoryError); default: none",
    )
    args = parser.parse_args(argv[1:])
    if args.native and not os.path.isdir(os.path.join(NATIVE, "tensorwire")):
        parser.error("--native: run fuzz/python/build_native.py first")
    targets = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(
            pool.map(
                lambda t: run_target(
                    t, args.seconds, args.rss_limit_mb, args.timeout, args.native, args.ignore
                ),
                targets,
            )
        )
    failed = 0
    for r in results:
        status = "ok" if r.returncode == 0 else f"CRASH (exit {r.returncode})"
        print(f"{r.target:12} {r.seconds:7.1f} s {r.runs:10} runs  {status}")
        for path in r.crashes:
            print(f"    {path}")
            print(f"    reproduce: {sys.executable} {HERE}/targets.py {r.target} {path}")
        if r.returncode != 0:
            failed += 1
            if not r.crashes:
                print(f"    no input saved; see {r.log}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
