"""Build a tensorwire._core with sanitizer coverage, for fuzzing the Rust code through
the Python targets (``run.py --native``): libFuzzer then sees which Rust branches an
input reaches, not just the Python ones.

    python fuzz/python/build_native.py      # ~3 min; needs cargo (stable is enough)

writes ``fuzz/python/.work/native/tensorwire/``: links to the package's Python files
(edits show up) and the instrumented extension, built from ``src/`` as it is now
(``-Cdebug-assertions -Coverflow-checks`` on, so arithmetic overflow panics instead of
wrapping). Nothing outside ``fuzz/python/.work/`` is written.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

__all__ = ["main"]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.join(HERE, ".work")
TRIPLE = "x86_64-unknown-linux-gnu"
RUSTFLAGS = [
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=3",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cdebug-assertions",
    "-Coverflow-checks",
]


def main(argv: list[str]) -> int:
    """Build, then lay out the package; print the folder to pass to ``run.py --native``."""
    target_dir = os.path.join(WORK, "native-target")
    env = {
        **os.environ,
        "RUSTFLAGS": " ".join(RUSTFLAGS),
        "CARGO_TARGET_DIR": target_dir,
        "PYO3_PYTHON": sys.executable,
    }
    # --target keeps RUSTFLAGS off build scripts, which cannot link the coverage hooks
    subprocess.check_call(
        [
            "cargo",
            "build",
            "--release",
            "--lib",
            "--features",
            "python,pyo3/extension-module",
            "--target",
            TRIPLE,
        ],
        cwd=ROOT,
        env=env,
    )
    package = os.path.join(WORK, "native", "tensorwire")
    shutil.rmtree(os.path.dirname(package), ignore_errors=True)
    os.makedirs(package)
    source = os.path.join(ROOT, "python", "tensorwire")
    for entry in os.listdir(source):
        if (entry.startswith("_core.") and entry.endswith(".so")) or entry == "__pycache__":
            continue
        os.symlink(os.path.join(source, entry), os.path.join(package, entry))
    (built,) = glob.glob(os.path.join(target_dir, TRIPLE, "release", "libtensorwire.so"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    shutil.copy(built, os.path.join(package, f"_core{suffix}"))
    print(os.path.dirname(package))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
