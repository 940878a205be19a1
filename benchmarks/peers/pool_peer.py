"""concurrent.futures.ProcessPoolExecutor (fork): one machine, no controller, no namespace.

The floor for what one machine's pipes cost. Its workers start lazily, so `start(n)` makes each
of the n workers run a task that waits at a barrier, which needs n distinct processes.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, wait

import measure

COPY_REFERENCE = True  # this peer also measures the in-process copy rate

_barrier = None


def _keep_barrier(barrier) -> None:
    global _barrier
    _barrier = barrier


def _meet() -> int:
    _barrier.wait(timeout=60)
    return os.getpid()


class Session:
    def __init__(self, n: int, noop) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pool = ProcessPoolExecutor(n, mp_context=ctx, initializer=_keep_barrier,
                                        initargs=(ctx.Barrier(n),))
        pids = {f.result() for f in [self.pool.submit(_meet) for _ in range(n)]}
        assert len(pids) == n, pids

    def stop(self) -> None:
        self.pool.shutdown()

    def roundtrip(self, f) -> None:
        self.pool.submit(f).result()

    def submit_many(self, f, n: int) -> None:
        wait([self.pool.submit(f, i) for i in range(n)])

    def map(self, f, items, chunksize):
        return list(self.pool.map(f, items, chunksize=chunksize or 1))

    def memory(self):
        return measure.rss_mb(list(self.pool._processes)), None, None


def start(n: int, noop) -> Session:
    return Session(n, noop)
