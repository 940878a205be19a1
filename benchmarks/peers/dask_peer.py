"""dask.distributed, from its own venv: a `LocalCluster` of single-threaded worker processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from distributed import Client, LocalCluster, wait

import measure


class Session:
    CHUNKS_BY_DEFAULT = False  # Client.map makes one task per item

    def __init__(self, n: int, noop) -> None:
        self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                    dashboard_address=":0", silence_logs=logging.ERROR)
        self.client = Client(self.cluster)
        try:
            self.client.wait_for_workers(n)
            self.workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
            self.client.gather([self.client.submit(noop, i, pure=False, workers=[w])
                                for i, w in enumerate(self.workers)])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def roundtrip(self, f) -> None:
        self.client.submit(f, pure=False, workers=self.workers[:1]).result()

    def submit_many(self, f, n: int) -> None:
        futures = [self.client.submit(f, i, pure=False) for i in range(n)]
        wait(futures)
        del futures

    def map(self, f, items, chunksize):
        # no chunking in Client.map: chunksize=1 and the default are the same call
        futures = self.client.map(f, items, pure=False)
        out = self.client.gather(futures)
        del futures
        return out

    def push_pull(self, a):
        # hash=False: a fresh key each time, so a released copy never collides with the next
        future = self.client.scatter(a, workers=self.workers[:1], hash=False)
        back = future.result()
        future.release()
        return back

    def broadcast_ways(self) -> list[str]:
        return ["Client.scatter(broadcast=True)"]

    def broadcast(self, a, how: str) -> None:
        future = self.client.scatter(a, broadcast=True, hash=False)
        wait(future)
        future.release()

    def memory(self):
        pids = list(self.client.run(os.getpid).values())
        return measure.rss_mb(pids), standalone_scheduler_mb(), STANDALONE_NOTE


STANDALONE_NOTE = ("a standalone, idle `dask scheduler` process: with LocalCluster the scheduler "
                   "lives in the client process, where its memory cannot be told apart")


def standalone_scheduler_mb() -> float:
    """RSS of a fresh `dask scheduler` process once it is up and idle."""
    with tempfile.TemporaryDirectory() as tmp:
        info = Path(tmp) / "scheduler.json"
        proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                 "--port", "0", "--dashboard-address", ":0",
                                 "--scheduler-file", str(info)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not info.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # settled, as the workers' figures are
            return measure.rss_mb([proc.pid])[0]
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def start(n: int, noop) -> Session:
    return Session(n, noop)
