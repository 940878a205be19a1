"""Timing and memory helpers shared by every peer's runner (standard library and psutil only)."""

from __future__ import annotations

import statistics
import time

import psutil

MiB = 1024 * 1024


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - t0, value


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def tree_rss(pid: int) -> int:
    """RSS of a process and everything it started, in bytes (0 if it is gone)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def rss_mb(pids: list[int]) -> list[float]:
    return [round(tree_rss(pid) / MiB, 1) for pid in pids]
