"""Timing, peak memory, machine description and the physical reference speeds.

Timing: one warm-up call (which also yields the result that is checked, and the peak
memory), then up to ``repeats`` timed calls, bounded by a time budget per operation; the
figure is the median. Peak memory: the Linux kernel's resident-set high-water mark
(``VmHWM``) is reset before the warm-up call by writing ``5`` to ``/proc/self/clear_refs``
and read after it; the figure is that peak minus the RSS just before the call, i.e. the
extra resident memory the operation needed (its output included). glibc's
``malloc_trim(0)`` runs first so that freed heap pages are returned rather than reused
unseen; memory an allocator still reuses from earlier calls can make a figure low.
Memory-mapped file pages that an operation touches count as resident, as they do for
the OS.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

__all__ = [
    "PeakRSS",
    "Timing",
    "machine_info",
    "physical_references",
    "reset_peak_rss",
    "status_bytes",
    "timed",
]


def status_bytes(field: str) -> Optional[int]:
    """A size field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (``VmHWM``) to the current RSS (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak extra resident memory of one call, via VmHWM reset (Linux); None elsewhere."""

    def __init__(self) -> None:
        self.available = reset_peak_rss()
        self._trim = self._malloc_trim()

    @staticmethod
    def _malloc_trim() -> Optional[Callable[[], Any]]:
        """glibc's malloc_trim(0): hand freed heap pages back to the OS before measuring,
        so that an operation's allocations show in RSS rather than reusing them."""
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            return lambda: libc.malloc_trim(0)
        except (OSError, AttributeError):
            return None

    def run(self, fn: Callable[[], Any]) -> tuple[Any, float, Optional[int]]:
        """Call ``fn``; return (result, seconds, peak extra RSS in bytes or None)."""
        if self._trim is not None:
            self._trim()
        ok = self.available and reset_peak_rss()
        before = status_bytes("VmRSS") if ok else None
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        peak = status_bytes("VmHWM") if ok else None
        extra = None if before is None or peak is None else max(0, peak - before)
        return result, dt, extra


@dataclass
class Timing:
    """Median of the timed runs after the warm-up."""

    median_s: float
    runs: int
    warmup_s: float
    peak_rss: Optional[int]
    times: list[float]


def timed(
    fn: Callable[[], Any],
    *,
    repeats: int,
    budget_s: float,
    rss: PeakRSS,
    keep: bool = True,
) -> tuple[Any, Timing]:
    """Warm up (keeping the result when ``keep``), then time up to ``repeats`` more calls.

    Fewer runs are made when the warm-up shows they would exceed ``budget_s``: at least
    one, except that an operation whose warm-up took over twice the budget (a slow peer
    on a large workload) is not repeated and its warm-up time is the figure (runs = 0).
    The run count is reported next to each figure.
    """
    result, warm, peak = rss.run(fn)
    if not keep:
        result = None
    if warm > 2 * budget_s:
        return result, Timing(warm, 0, warm, peak, [warm])
    fits = int(budget_s / max(warm, 1e-9))
    # fast operations get more runs (up to 25, in a quarter of the budget): a sub-ms
    # median of 5 is mostly scheduler noise on a shared machine
    n = max(1, min(repeats, fits), min(25, fits // 4))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = fn()
        times.append(time.perf_counter() - t0)
        del r
    return result, Timing(statistics.median(times), n, warm, peak, times)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """CPU model, cores, memory, OS and Python: the report's machine line."""
    import psutil

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": _cpu_model(),
        "logical cores": str(psutil.cpu_count(logical=True)),
        "physical cores": str(psutil.cpu_count(logical=False)),
        "cores usable by this process": str(affinity or os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB",
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}",
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
    }


def _gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else float("inf")


def physical_references(
    nbytes: int, *, repeats: int, budget_s: float, rss: PeakRSS
) -> dict[str, float]:
    """memcpy (numpy copyto into a preallocated array, 1 and all threads) and blake3 speed.

    Measured over ``nbytes`` of random bytes, in GB/s (1e9 bytes per second).
    """
    import blake3

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, threads or 1)
    src = np.random.default_rng(9).integers(0, 256, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    dst[:] = 0  # fault the pages in before timing

    def copy1() -> None:
        np.copyto(dst, src)

    bounds = [(i * nbytes // threads, (i + 1) * nbytes // threads) for i in range(threads)]
    pool = ThreadPoolExecutor(threads)

    def copy_n() -> None:
        list(pool.map(lambda b: np.copyto(dst[b[0] : b[1]], src[b[0] : b[1]]), bounds))

    def b3_1() -> bytes:
        return blake3.blake3(src, max_threads=1).digest()

    def b3_n() -> bytes:
        return blake3.blake3(src, max_threads=blake3.blake3.AUTO).digest()

    out = {}
    for label, fn in [
        ("memcpy 1 thread", copy1),
        (f"memcpy {threads} threads", copy_n),
        ("blake3 1 thread", b3_1),
        ("blake3 multi-threaded (AUTO)", b3_n),
    ]:
        _, t = timed(fn, repeats=repeats, budget_s=budget_s, rss=rss, keep=False)
        out[label] = _gbps(nbytes, t.median_s)
    pool.shutdown()
    out["threads"] = float(threads)
    return out
