"""Shared fixtures: a private IPCLUSTER_DIR, one cluster per test module, and a check that no
test leaves a process behind."""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback

import psutil
import pytest

import ipcluster
from ipcluster import connection
from ipcluster.controller.main import ControllerOptions
from ipcluster.controller.server import Controller

# Every test (and every process a test starts) keeps its cluster state in a private directory.
_STATE = tempfile.mkdtemp(prefix="ipcluster-tests-")
os.environ["IPCLUSTER_DIR"] = _STATE


def pytest_sessionfinish(session, exitstatus):
    """A run that passed leaves no directory behind; one that failed keeps its logs."""
    if exitstatus == 0:
        shutil.rmtree(_STATE, ignore_errors=True)

# Processes that belong to long-lived fixtures, not to the test that is running.
_fixture_pids: set[int] = set()


def _children() -> dict[int, psutil.Process]:
    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def _descendants_by_session() -> dict[int, psutil.Process]:
    """Children, and every process started with our IPCLUSTER_DIR (daemons are re-parented)."""
    procs = _children()
    for p in psutil.process_iter(["pid"]):
        if p.pid == os.getpid() or p.pid in procs:
            continue
        try:
            if p.environ().get("IPCLUSTER_DIR") == _STATE:
                procs[p.pid] = p
        except psutil.Error:
            pass
    return procs


@pytest.fixture(autouse=True)
def no_leaked_processes():
    before = set(_descendants_by_session())
    yield
    deadline = time.monotonic() + 10
    while True:
        leaked = {pid: p for pid, p in _descendants_by_session().items()
                  if pid not in before and pid not in _fixture_pids}
        leaked = {pid: p for pid, p in leaked.items() if p.is_running()
                  and p.status() != psutil.STATUS_ZOMBIE}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if leaked:
        names = [f"{pid}: {' '.join(p.cmdline())[:120]}" for pid, p in leaked.items()]
        for p in leaked.values():
            p.kill()
        pytest.fail(f"the test left processes behind: {names}")


def wait_until(predicate, timeout: float = 30) -> None:
    """Poll `predicate` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def errors_of_threads_at_once(work, n: int) -> list[str]:
    """Run `work(k)` in `n` threads at once, switching between them as often as the
    interpreter can (as they may under load); the tracebacks of what they raised."""
    errors = []

    def run(k):
        try:
            work(k)
        except Exception:
            errors.append(traceback.format_exc())

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    return errors


class InProcessController:
    """A controller served by a thread of the test, which can run code on its loop."""

    def __init__(self, path) -> None:
        self.path = path
        self.ctl = Controller("in-process", ControllerOptions(), connection.new_key())
        connection.write(path, self.ctl.info)
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.stopped = False
        self.thread = threading.Thread(target=self.ctl.serve, args=(self._between,))
        self.thread.start()

    def _between(self) -> bool:  # runs on the loop's thread between two polls
        while not self.calls.empty():
            f, out = self.calls.get()
            out.put(f())
        return self.stopped

    def call(self, f):
        out: queue.SimpleQueue = queue.SimpleQueue()
        self.calls.put((f, out))
        return out.get(timeout=10)

    def close(self) -> None:
        self.stopped = True
        self.thread.join(timeout=10)
        self.ctl.close()


@pytest.fixture
def served(tmp_path):
    """A controller in this process, its connection file at ``served.path``."""
    controller = InProcessController(tmp_path / "cluster.json")
    yield controller
    controller.close()


def start_cluster(n: int, **kwargs) -> ipcluster.Cluster:
    cluster = ipcluster.Cluster(n=n, **kwargs)
    cluster.start_and_connect_sync()
    _fixture_pids.update([cluster.controller.pid, *cluster.launcher.pids])
    return cluster


@pytest.fixture(scope="module")
def cluster():
    """A running 4-engine cluster shared by the tests of one module."""
    cluster = start_cluster(4)
    yield cluster
    cluster.stop_cluster_sync()


@pytest.fixture
def rc(cluster):
    """A fresh client of the module's cluster, closed after the test."""
    client = ipcluster.Client(cluster.connection_file)
    client.wait_for_engines(cluster.n, timeout=30)
    yield client
    client.close()
