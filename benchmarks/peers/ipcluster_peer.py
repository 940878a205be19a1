"""ipcluster, run from the repo's venv: a local `Cluster` and the ipyparallel-style API."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import ipcluster as ipp

import measure

REPO = Path(__file__).resolve().parents[2]


class Session:
    CHUNKS_BY_DEFAULT = True  # LoadBalancedView.map chunks by itself

    def __init__(self, n: int, noop) -> None:
        self.cluster = ipp.Cluster(n=n)
        self.rc = self.cluster.start_and_connect_sync()
        try:
            self.rc[:].apply_sync(noop)
        except BaseException:
            self.stop()
            raise
        self.first = self.rc[self.rc.ids[0]]
        self.lview = self.rc.load_balanced_view()

    def stop(self) -> None:
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
        return ["DirectView.push"]

    def broadcast(self, a, how: str) -> None:
        self.rc[:].push({"b": a}, block=True)

    def memory(self):
        engines = measure.rss_mb(self.cluster.launcher.pids)
        controller = measure.rss_mb([self.cluster.controller.pid])[0]
        return engines, controller, "the controller process"


def start(n: int, noop) -> Session:
    return Session(n, noop)


def scale(runner, noop) -> None:
    """Simulated engines (benchmarks/simulated.py) against a real controller and client."""
    sizes = runner.sizes
    _raise_fd_limit()  # before the controller starts: it inherits the limit
    cluster = ipp.Cluster(n=0)
    cluster.start_controller_sync()
    try:
        rc = cluster.connect_client_sync()
        for engines in (8, sizes["scale_engines"]):
            seconds, rate, rss = _scale_round(cluster, rc, engines, sizes["scale_tasks"], noop)
            if engines != 8:
                runner.record("scale_register", round(seconds, 3), engines=engines)
                runner.record("scale_controller_memory", rss, engines=engines)
            runner.record(f"scale_tasks_{8 if engines == 8 else 'many'}", round(rate),
                          engines=engines, tasks=sizes["scale_tasks"])
    finally:
        cluster.stop_cluster_sync()


def _scale_round(cluster, rc, engines: int, tasks: int, noop) -> tuple[float, float, float]:
    per_process = 1000  # sockets per load-generator process; ten processes for 10,000 engines
    counts = [min(per_process, engines - i) for i in range(0, engines, per_process)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.simulated", "--connection-file",
                               str(cluster.connection_file), "--engines", str(k)], cwd=REPO)
             for k in counts]
    try:
        try:
            rc.wait_for_engines(engines, timeout=60)
        except (ipp.NoEnginesRegistered, ipp.ControllerLost) as exc:  # how far it got, and at
            rss = measure.rss_mb([cluster.controller.pid])[0]  # what memory, is the figure
            raise RuntimeError(f"{exc}; {len(rc.ids)} engines seen; controller RSS {rss} MiB") from None
        registered = time.perf_counter() - t0
        lview = rc.load_balanced_view()
        for ar in [lview.apply_async(noop, i) for i in range(100)]:  # warm up
            ar.get()
        t0 = time.perf_counter()
        for ar in [lview.apply_async(noop, i) for i in range(tasks)]:
            ar.get()
        rate = tasks / (time.perf_counter() - t0)
        rss = measure.rss_mb([cluster.controller.pid])[0]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)  # each simulated engine unregisters
        for p in procs:
            p.wait(timeout=30)
        deadline = time.monotonic() + 15
        while rc.ids and time.monotonic() < deadline:
            time.sleep(0.05)
    return registered, rate, rss


def _raise_fd_limit() -> None:
    """One socket per simulated engine: the soft limit on open files up to the hard one (the
    controller and load generators inherit it). A hard limit too low is said, not hidden."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 25_000:
        print(f"note: the hard limit on open files is {hard}; 10,000 engines need about 2 per "
              "engine in their process and 1 in the controller", file=sys.stderr)
