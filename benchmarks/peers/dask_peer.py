"""dask.distributed, from its own venv: a `LocalCluster` of single-threaded worker processes."""

from __future__ import annotations

import logging
import os

import psutil
from distributed import Client, LocalCluster, wait

import measure


class Session:
    CHUNKS_BY_DEFAULT = False  # Client.map makes one task per item

    def __init__(self, n: int, noop) -> None:
        # the scheduler and the nannies live in this process: its growth is their memory
        self.rss_before = psutil.Process().memory_info().rss
        self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                    dashboard_address=":0", silence_logs=logging.ERROR)
        self.client = Client(self.cluster)
        try:
            self.client.wait_for_workers(n)
            self.workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
            self.client.gather([self.client.submit(noop, i, pure=False, workers=[w])
                                for i, w in enumerate(self.workers)])
            # taken now, idle after start: later cases leave their own garbage in this process
            self.scheduler_mb = (psutil.Process().memory_info().rss - self.rss_before) / measure.MiB
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
        return (measure.rss_mb(pids), round(self.scheduler_mb, 1),
                "in the client process: its RSS growth from before start to after start")


def start(n: int, noop) -> Session:
    return Session(n, noop)
