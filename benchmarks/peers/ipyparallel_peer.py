"""ipyparallel 9.2, from its own venv: `ipp.Cluster` with local engines, as its docs show."""

from __future__ import annotations

import logging
import os

import ipyparallel as ipp

import measure


class Session:
    CHUNKS_BY_DEFAULT = False  # LoadBalancedView.map sends one task per item (chunksize=1)

    def __init__(self, n: int, noop) -> None:
        self.cluster = ipp.Cluster(n=n, log_level=logging.WARNING)
        self.rc = self.cluster.start_and_connect_sync()
        try:
            self.rc[:].apply_sync(noop)
        except BaseException:
            self.stop()
            raise
        self.first = self.rc[self.rc.ids[0]]
        self.lview = self.rc.load_balanced_view()

    def stop(self) -> None:
        self.rc.close()
        self.cluster.stop_cluster_sync()

    def roundtrip(self, f) -> None:
        self.first.apply_sync(f)

    def submit_many(self, f, n: int) -> None:
        ars = [self.lview.apply_async(f, i) for i in range(n)]
        for ar in ars:
            ar.get()

    def map(self, f, items, chunksize):
        if chunksize is None:
            return self.lview.map_sync(f, items)
        return self.lview.map_sync(f, items, chunksize=chunksize)

    def push_pull(self, a):
        self.first.push({"a": a}, block=True)
        return self.first.pull("a", block=True)

    def broadcast_ways(self) -> list[str]:
        return ["DirectView.push", "BroadcastView.push"]

    def broadcast(self, a, how: str) -> None:
        view = self.rc[:] if how == "DirectView.push" else self.rc.broadcast_view()
        view.push({"b": a}, block=True)

    def memory(self):
        engines = measure.rss_mb(self.rc[:].apply_sync(os.getpid))
        # the controller is a hub plus one process per scheduler; all descend from this pid
        controller = measure.rss_mb([self.cluster.controller.process.pid])[0]
        count = 1 + len(measure.psutil.Process(self.cluster.controller.process.pid).children(recursive=True))
        return engines, controller, f"{count} processes"


def start(n: int, noop) -> Session:
    return Session(n, noop)
