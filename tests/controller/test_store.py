"""The SQLite store on a disk that fills up: never silent, never blocking, and writing again
once there is space."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

import ipcluster as ipp
from ipcluster import connection
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


def test_a_replacement_controller_that_cannot_start_says_why_and_starts_once_there_is_space(
        small_disk):
    env = {**os.environ, "IPCLUSTER_DIR": str(small_disk / "state")}  # all of it on the disk
    start = subprocess.Popen([sys.executable, "-m", "ipcluster", "start", "-n", "1", "--db",
                              "sqlite", "--cluster-id", "full"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(start.stderr), daemon=True)
    reader.start()
    path = small_disk / "state" / "full" / "connection.json"
    try:
        assert "engines ready" in start.stdout.readline()
        first = connection.read(path).controller_pid
        fill(small_disk)
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: any("could not restore the controller" in line for line in said))
        assert any("No space left" in line for line in said), "".join(said)
        (small_disk / "filler").unlink()
        wait_until(lambda: controller_pid(path) not in (first, None), timeout=30)
        with ipp.Client(path, timeout=30) as rc:
            assert rc.store_problem is None
    finally:
        start.send_signal(signal.SIGINT)
        start.wait(timeout=60)
        reader.join(timeout=10)


def controller_pid(path):
    try:
        return connection.read(path).controller_pid
    except ipp.IpclusterError:  # between two controllers
        return None
