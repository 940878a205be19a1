"""Cluster: start, connect, stop; cleanly on error; sync forms inside a running loop."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from pathlib import Path

import psutil
import pytest

import ipcluster
from ipcluster import state


def _gone(pids) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)


def test_context_manager_gives_a_client_and_stops_everything():
    cluster = ipcluster.Cluster(n=2)
    with cluster as rc:
        assert rc.ids == [0, 1]
        template = cluster.launcher.template.process.pid  # engines are forked from one process
        pids = [cluster.controller.pid, template, *cluster.launcher.pids]
        assert sorted(rc[:].apply_sync(os.getpid)) == sorted(cluster.launcher.pids)
        assert rc[:].apply_sync(os.getppid) == [template, template]
        assert cluster.connection_file.exists()
    assert _gone(pids)
    assert not cluster.cluster_dir.exists()


def test_an_error_inside_the_block_still_stops_the_cluster():
    cluster = ipcluster.Cluster(n=1)
    with pytest.raises(ZeroDivisionError):
        with cluster as rc:
            pids = [cluster.controller.pid, *cluster.launcher.pids]
            assert rc.ids == [0]
            1 / 0
    assert _gone(pids)


class FailingEngines(ipcluster.Cluster):
    def engine_command(self):
        return [sys.executable, "-c", "import sys; print('engine cannot start: no GPU'); sys.exit(3)"]


def test_an_engine_that_cannot_start_is_reported_with_its_log():
    cluster = FailingEngines(n=2)
    t0 = time.monotonic()
    with pytest.raises(ipcluster.NoEnginesRegistered, match="(?s)exited before registering.*no GPU") as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 20
    assert _gone([cluster.controller.pid])
    log = re.search(r"its log (\S+) ends with", str(info.value))[1]
    assert "no GPU" in Path(log).read_text()  # the evidence is kept
    assert state.status(cluster.cluster_id) == "failed"
    shutil.rmtree(cluster.cluster_dir)


def test_async_context_manager():
    async def main():
        async with ipcluster.Cluster(n=1) as rc:
            return await rc[0].apply_async(os.getpid)

    assert isinstance(asyncio.run(main()), int)


def test_sync_forms_work_inside_a_running_event_loop():
    async def notebook_cell():
        cluster = ipcluster.Cluster(n=1)
        rc = cluster.start_and_connect_sync()
        try:
            return rc[0].apply_sync(lambda: "from a cell")
        finally:
            cluster.stop_cluster_sync()

    assert asyncio.run(notebook_cell()) == "from a cell"


def test_start_to_eight_engines_usable(record_property):
    t0 = time.perf_counter()
    with ipcluster.Cluster(n=8) as rc:
        assert len(set(rc[:].apply_sync(os.getpid))) == 8
        elapsed = time.perf_counter() - t0
    record_property("start_8_engines_s", round(elapsed, 3))
    print(f"\nstart to 8 engines usable: {elapsed:.2f} s")


def test_a_second_cluster_with_the_same_id_is_refused():
    cluster = ipcluster.Cluster(n=0, cluster_id="twin")
    cluster.start_cluster_sync()
    try:
        with pytest.raises(ipcluster.IpclusterError, match="already has a connection file"):
            ipcluster.Cluster(n=0, cluster_id="twin").start_cluster_sync()
        assert cluster.controller.poll() is None
        with ipcluster.Client("twin") as rc:  # the first cluster is untouched
            assert rc.ids == []
    finally:
        cluster.stop_cluster_sync()


@pytest.mark.parametrize("engines, options, said", [
    ("lsf", {}, "'bsub' not found; is lsf installed, and on PATH"),
    ("mpi", {"mpiexec": "no-such-mpiexec"}, "'no-such-mpiexec' not found; is it installed and on PATH?"),
])
def test_a_missing_command_says_so_and_keeps_the_log_it_names(engines, options, said):
    cluster = ipcluster.Cluster(n=2, engines=engines, **options)
    with pytest.raises(ipcluster.IpclusterError, match=re.escape(said)) as info:
        cluster.start_and_connect_sync()
    kept = re.search(r"the logs stay in (\S+);", str(info.value))[1]
    assert Path(kept) == cluster.cluster_dir and (cluster.cluster_dir / "controller.log").exists()
    assert _gone([cluster.controller.pid])
    assert state.status(cluster.cluster_id) == "failed"
    shutil.rmtree(cluster.cluster_dir)


@pytest.mark.parametrize("n", ["4", -1, 2.0, True])
def test_a_bad_n_is_a_clear_error(n):
    with pytest.raises(ValueError, match=re.escape(f"n must be a whole number of engines, 0 or "
                                                   f"more; got {n!r} ({type(n).__name__})")):
        ipcluster.Cluster(n=n)
