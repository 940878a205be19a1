"""The SQLite store on a disk that fills up: never silent, never blocking, and writing again
once there is space."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ipcluster as ipp
from tests.conftest import start_cluster, wait_until
from tests.launchers.conftest import require


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs of our own (root only, as in CI): a disk we may fill."""
    require(os.getuid() == 0, "root (to mount a small tmpfs)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk) -> None:
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def blob(i):
    return bytes(20_000)


def test_a_full_disk_is_reported_to_every_client_and_the_store_writes_again_when_space_returns(
        small_disk):
    cluster = start_cluster(1, db=f"sqlite:{small_disk}/tasks.db")
    rc = cluster.client
    try:
        view = rc.load_balanced_view()
        first = view.map_async(abs, range(-3, 0))
        assert first.get(timeout=30) == [3, 2, 1]
        fill(small_disk)
        ar = view.map_async(blob, range(60), chunksize=1)  # 1.2 MB of results, and no room
        assert len(ar.get(timeout=60)) == 60  # the results still reach the client
        wait_until(lambda: rc.store_problem is not None)
        assert "cannot be written" in rc.store_problem and "full" in rc.store_problem
        with pytest.warns(RuntimeWarning, match="task store .* cannot be written"):
            rc.queue_status()  # the next call warns
        with pytest.raises(ipp.RemoteError, match="StoreError.*cannot be written"):
            rc.db_query({"status": "ok"})
        other = ipp.Client(cluster.connection_file)  # a client arriving later is told too
        assert "cannot be written" in other.store_problem
        other.close()
        status = subprocess.run([sys.executable, "-m", "ipcluster", "status", "--cluster-id",
                                 cluster.cluster_id], capture_output=True, text=True, timeout=60)
        assert "WARNING: the task store" in status.stdout, status.stdout + status.stderr
        (small_disk / "filler").unlink()  # space returns: the kept results are written
        wait_until(lambda: rc.store_problem is None)
        done = rc.db_query({"status": "ok"}, keys=["msg_id"])
        assert sorted(r["msg_id"] for r in done) == sorted(first.msg_ids + ar.msg_ids)
    finally:
        cluster.stop_cluster_sync()
