"""Engine sets, profiles and ClusterManager: ipyparallel 8's Cluster API as its users type it."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil
import pytest

import ipcluster
from ipcluster import state
from tests.conftest import wait_until


def _gone(pids) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)


def test_engine_sets_start_signal_stop_and_restart_apart(tmp_path):
    async def main():
        cluster = ipcluster.Cluster(n=1, profile_dir=str(tmp_path), cluster_id="sets")
        try:
            await cluster.start_controller()
            first = await cluster.start_engines()
            second = await cluster.start_engines(2, "pair")
            assert second == "pair" and list(cluster.engines) == [first, "pair"]
            assert cluster.engine_set is cluster.engines[first]
            assert repr(cluster) == (f"<Cluster(cluster_id='sets', profile_dir={str(tmp_path)!r}, "
                                     f"controller=<running>, engine_sets=[{first!r}, 'pair'])>")
            with pytest.raises(ValueError, match="running already"):
                await cluster.start_engines(1, "pair")
            rc = await cluster.connect_client()
            assert rc.cluster is cluster
            await cluster.wait_for_engines()  # as many as the sets started: 3
            assert len(rc.ids) == 3
            # each set writes apart: the first where a cluster's engines always did
            assert (cluster.cluster_dir / "engine-0.log").exists()
            assert (cluster.cluster_dir / "engines-pair" / "engine-1.log").exists()
            record = state.read("sets", tmp_path)
            assert record["engine_sets"] == {first: 1, "pair": 2}
            pair_pids = cluster.engines["pair"].pids

            # awaited inside the running loop, on one set only
            pids = dict(zip(rc.ids, rc[rc.ids].apply_sync(os.getpid)))
            pair_ids = [eid for eid, pid in pids.items() if pid in pair_pids]
            mark = str(tmp_path / "started-")
            ar = rc[rc.ids].apply_async(
                lambda m: (open(m + str(os.getpid()), "w").close(), time.sleep(30)), mark)
            wait_until(lambda: all(os.path.exists(mark + str(p)) for p in pids.values()))
            await cluster.signal_engines(signal.SIGINT, "pair")
            for eid, task in zip(rc.ids, ar.tasks):
                if eid in pair_ids:
                    with pytest.raises(ipcluster.RemoteError, match="KeyboardInterrupt"):
                        task.result(timeout=30)
                else:
                    assert not task.done()  # the other set's engine got no signal
            await cluster.stop_engines("pair")
            assert list(cluster.engines) == [first] and _gone(pair_pids)
            with pytest.raises(KeyError, match=f"no engine set 'pair'.*{first}"):
                await cluster.stop_engines("pair")
            await cluster.restart_engines(first)  # fresh processes, fresh engine ids
            assert len(rc.ids) == 1 and rc.ids[0] > 2
        finally:
            await cluster.stop_cluster()
        assert cluster.controller is None and cluster.engines == {}
        assert not cluster.cluster_dir.exists()

    asyncio.run(main())


def test_profile_names_the_cluster_and_from_file_finds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("IPCLUSTER_DIR", str(tmp_path))
    assert ipcluster.Cluster(profile="lab").cluster_id == "lab"
    assert ipcluster.Cluster(cluster_id="").cluster_id == "default"  # ipcluster start's
    with pytest.raises(ipcluster.IpclusterError, match="no cluster record.*ipcluster start"):
        ipcluster.Cluster.from_file()
    cluster = ipcluster.Cluster(n=1, profile="default", cluster_id="")
    with cluster as rc:
        loaded = ipcluster.Cluster.from_file()
        assert loaded.cluster_file == cluster.cluster_file and loaded.n == 1
        assert not loaded.shutdown_atexit
        with loaded.connect_client_sync() as rc2:
            assert rc2.ids == rc.ids
        # a loaded cluster adds engine sets; the cluster stays its owner's
        added = loaded.start_engines_sync(1)
        # its logs beside the owner's, not appended to them
        assert loaded.engines[added].log_dir == cluster.cluster_dir / f"engines-{added}"
        rc.wait_for_engines(2, timeout=30)
        loaded.stop_engines_sync()
        wait_until(lambda: len(rc.ids) == 1)
        assert cluster.controller.poll() is None


def test_cluster_manager_news_finds_and_forgets_clusters(tmp_path, monkeypatch):
    monkeypatch.setenv("IPCLUSTER_DIR", str(tmp_path / "default"))
    manager = ipcluster.ClusterManager()
    assert manager.load_clusters() == {}
    key, cluster = manager.new_cluster(n=1, cluster_id="one")
    assert key == "one" and manager.get_cluster("one") is cluster
    other_key, _ = manager.new_cluster(cluster_id="one", profile_dir=str(tmp_path / "elsewhere"))
    assert other_key == f"{tmp_path / 'elsewhere'}:one"
    with pytest.raises(KeyError, match="exists already"):
        manager.new_cluster(cluster_id="one")
    with pytest.raises(KeyError, match="no cluster 'nope'.*'one'"):
        manager.get_cluster("nope")
    manager.remove_cluster(other_key)
    assert manager.list_clusters() == ["one"]

    cluster.start_cluster_sync()
    try:
        fresh = ipcluster.ClusterManager()
        assert list(fresh.load_clusters()) == ["one"]
        assert fresh.get_cluster("one").connection_file == cluster.connection_file
    finally:
        cluster.stop_cluster_sync()
    assert fresh.load_clusters() == {}  # found on disk and stopped since: forgotten
    assert manager.load_clusters() == {"one": cluster}  # made here: kept until removed
    assert cluster.controller is None


def test_bad_engine_set_ids_and_counts_say_what_to_do():
    cluster = ipcluster.Cluster(n=1)
    with pytest.raises(KeyError, match="none .start_engines"):
        cluster.signal_engines_sync(signal.SIGINT, "nope")
    with pytest.raises(ValueError, match="whole number of engines"):
        cluster.start_engines_sync(-1)
    assert cluster.engines == {}
