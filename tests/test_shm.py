"""Large buffers through shared memory on one host: one segment per buffer with a name per
reader, mapped copy-on-write, names gone once mapped; the memory each process pays; nothing
left in the directory after kills mid-transfer; the fallback when the directory is too small."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import psutil
import pytest

import ipcluster
from ipcluster import protocol, serialize, shm
from ipcluster.config import ipcluster_dir
from ipcluster.errors import EngineError, SerializationError
from tests.conftest import start_cluster, wait_until

MB = 1 << 20


def ours(where: Path, key: bytes, kind: str = "") -> list[str]:
    """Files of the cluster with `key` in `where` ("s": segments, "p": probes, "": both)."""
    return sorted(n for n in os.listdir(where) if n.startswith(shm.prefix(key) + kind))


@pytest.fixture
def local_host(tmp_path, monkeypatch):
    monkeypatch.setenv(shm.DIRECTORY_VARIABLE, str(tmp_path))
    key = os.urandom(32)
    host = shm.host(key)
    yield host, key
    host.close()


def received(frames, key):
    msg = protocol.decode(protocol.Signer(key), frames)
    return msg.header, msg.buffers


def content_of(frames) -> bytes:
    """The content of a small message: in its first frame, after the header."""
    return frames[0][protocol.HEAD + protocol.head(frames[0])[0]:]


# -- the mechanism, in one process ------------------------------------------------------------

def test_a_buffer_is_one_file_with_a_private_name_per_reader_gone_once_mapped(local_host, tmp_path):
    host, key = local_host
    other = "0123456789ab"  # a second reader's token
    array = np.arange(MB, dtype=np.float64)  # 8 MiB
    content, buffers = serialize.dumps(array)
    frames = protocol.encode(protocol.Signer(key), {"kind": "apply", "id": "x"}, content,
                             buffers, (host, [host.token, other]))
    assert [len(f) for f in frames[1:]] == [0]  # nothing of the array in the message
    names = ours(tmp_path, key, "s")
    assert len(names) == 2 and {n.rsplit(".", 1)[1] for n in names} == {host.token, other}
    inodes = {os.stat(tmp_path / n).st_ino for n in names}
    assert len(inodes) == 1  # one file, two names
    assert all(stat.S_IMODE(os.stat(tmp_path / n).st_mode) == 0o600 for n in names)

    header, buffers = received(frames, key)
    first = serialize.loads(content_of(frames), buffers)
    assert ours(tmp_path, key, "s") == [n for n in names if n.endswith(other)]  # ours is gone
    host.token, mine = other, host.token  # now read as the other process would
    try:
        second = serialize.loads(content_of(frames), received(frames, key)[1])
    finally:
        host.token = mine
    assert ours(tmp_path, key, "s") == []  # every reader mapped it: no name left
    assert first.flags.writeable and np.array_equal(first, array)
    first[0] = -1  # copy-on-write: the other reader's array is untouched
    assert second[0] == 0 and np.array_equal(second, array)


def test_a_held_mapping_sent_back_unwritten_is_the_same_file_and_written_a_copy(local_host, tmp_path):
    host, key = local_host
    host.hold = True
    try:
        frames = protocol.encode(protocol.Signer(key), {"kind": "apply", "id": "y"},
                                 *serialize.dumps(np.arange(MB, dtype=np.float64)), (host, [host.token]))
        array = serialize.loads(content_of(frames), received(frames, key)[1])
        assert ours(tmp_path, key, "s") == [] and len(ours(tmp_path, key, "h")) == 1  # held
        held = os.stat(tmp_path / ours(tmp_path, key, "h")[0]).st_ino

        def sent_back():
            frames = protocol.encode(protocol.Signer(key), {"kind": "result", "id": "z"},
                                     *serialize.dumps(array), (host, [host.token]))
            name = ours(tmp_path, key, "s")[0]
            inode = os.stat(tmp_path / name).st_ino
            return inode, serialize.loads(content_of(frames), received(frames, key)[1])

        inode, back = sent_back()
        assert inode == held and host.relinked == 1 and np.array_equal(back, array)  # no copy
        array[5] = -1  # one page now the process's own
        inode, back = sent_back()
        assert inode != held and host.relinked == 1 and back[5] == -1  # a copy, as written
        del array, back
        assert ours(tmp_path, key) == ours(tmp_path, key, "p")  # held names went with them
    finally:
        host.hold = False


def test_a_segment_swept_between_open_and_rename_is_mapped_all_the_same(local_host, monkeypatch):
    host, key = local_host
    host.hold = True
    try:
        frames = protocol.encode(protocol.Signer(key), {"kind": "apply", "id": "w"},
                                 *serialize.dumps(np.arange(MB, dtype=np.float64)), (host, [host.token]))
        def swept(path, _):  # the cluster's stop removed the name after the reader opened it
            os.unlink(path)
            raise FileNotFoundError(path)
        monkeypatch.setattr(shm.os, "rename", swept)
        array = serialize.loads(content_of(frames), received(frames, key)[1])
        assert array[-1] == MB - 1 and ours(host.dir, key) == ours(host.dir, key, "p")
    finally:
        host.hold = False


def test_the_held_names_of_a_departed_engine_are_dropped_only_on_its_host(local_host, tmp_path):
    host, key = local_host
    mine, other = host.identity, host.identity.replace(host.token, "0123456789ab")
    for name in (f"h{host.token}-1", f"h{host.token}-2", "h0123456789ab-1", f"s{host.token}-1.x"):
        (tmp_path / (shm.prefix(key) + name)).touch()
    elsewhere = "another-host|" + mine.split("|", 1)[1]
    assert shm.drop_held(key, elsewhere) == 0 and shm.drop_held(key, None) == 0
    assert shm.drop_held(key, mine) == 2
    assert ours(tmp_path, key, "h") == [shm.prefix(key) + "h0123456789ab-1"]  # another's stays
    assert shm.drop_held(key, other) == 1 and len(ours(tmp_path, key, "s")) == 1


def test_a_segment_read_twice_or_forged_is_refused_before_unpickling(local_host, tmp_path):
    host, key = local_host
    signer = protocol.Signer(key)
    content, buffers = serialize.dumps(np.zeros(MB, np.uint8))
    frames = protocol.encode(signer, {"kind": "result", "id": "y"}, content, buffers,
                             (host, [host.token]))
    serialize.loads(content_of(frames), received(frames, key)[1])
    with pytest.raises(SerializationError, match="is gone: it was read already"):
        serialize.loads(content_of(frames), received(frames, key)[1])
    for name in ("../../etc/passwd", shm.prefix(key) + "s../x", "ipc-zz"):
        header = {"kind": "result", "id": "z", "segments": [[0, 10, name]]}
        forged = protocol.encode(signer, header, content, [b""])
        with pytest.raises(protocol.BadMessage, match="bad shared-memory segments"):
            protocol.decode(signer, forged)
    header = msgpack.unpackb(frames[0][protocol.HEAD:protocol.HEAD + protocol.head(frames[0])[0]])
    header["segments"][0][1] = 5  # a size the file does not have: refused, and the name removed
    frames = protocol.encode(signer, header, content, [b""])
    os.close(os.open(tmp_path / f"{header['segments'][0][2]}.{host.token}", os.O_CREAT, 0o600))
    with pytest.raises(SerializationError, match="not as signed"):
        serialize.loads(content_of(frames), received(frames, key)[1])
    assert ours(tmp_path, key, "s") == []


def test_a_small_buffer_stays_in_the_message_and_a_full_directory_falls_back_once(
        local_host, tmp_path, monkeypatch, caplog):
    host, key = local_host
    small = np.zeros(shm.THRESHOLD // 2, np.uint8)
    frames = protocol.encode(protocol.Signer(key), {"kind": "apply", "id": "a"},
                             *serialize.dumps(small), (host, [host.token]))
    assert len(frames[1]) == small.nbytes and ours(tmp_path, key, "s") == []
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result(  # as if it were full
        (*real(path)[:4], 0, *real(path)[5:])))
    caplog.set_level(logging.WARNING, "ipcluster.shm")
    for i in range(3):
        big = np.full(2 * MB, i, np.uint8)
        frames = protocol.encode(protocol.Signer(key), {"kind": "apply", "id": f"b{i}"},
                                 *serialize.dumps(big), (host, [host.token]))
        assert np.array_equal(serialize.loads(content_of(frames), received(frames, key)[1]), big)
    assert [r.message.count("has no room") for r in caplog.records] == [1]
    assert host.fallbacks == 3 and ours(tmp_path, key, "s") == []


# -- through a cluster ----------------------------------------------------------------------

def backing(x):
    """On an engine: is `x` writable, and the inode and path of the mapping it lives in."""
    address = x.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            low, high = (int(v, 16) for v in fields[0].split("-"))
            if low <= address < high:
                return bool(x.flags.writeable), fields[4], fields[5].strip() if len(fields) > 5 else ""


def touch(x):
    return int(x[::4096].sum())  # reads every page


@pytest.fixture(scope="module")
def pair():
    cluster = start_cluster(2)
    yield cluster
    cluster.stop_cluster_sync()


@pytest.fixture
def rc2(pair):
    client = ipcluster.Client(pair.connection_file)
    client.wait_for_engines(2, timeout=30)
    yield client
    client.close()


def test_push_to_many_engines_is_one_segment_they_all_map_and_pull_comes_back_the_same_way(rc2):
    key, where = rc2._session.info.key_bytes, shm.directory()
    array = np.arange(4 * MB, dtype=np.float64)
    rc2[:].push({"b": array}, block=True)
    seen = rc2[:].apply_sync(backing, ipcluster.Reference("b"))
    assert [s[0] for s in seen] == [True, True]  # writable where it arrived
    assert len({s[1] for s in seen}) == 1  # one file, mapped by both engines
    # each engine holds the file under a name of its own while it maps it
    assert len({s[2] for s in seen}) == 2 and all(f"{shm.prefix(key)}h" in s[2] for s in seen)
    back = rc2[0].pull("b", block=True)
    assert back.flags.writeable and np.array_equal(back, array)
    assert backing(back)[2].startswith(str(where / shm.prefix(key)))  # mapped, not copied
    assert backing(back)[1] == seen[0][1]  # unwritten on the engine: the same file went back
    assert ours(where, key, "s") == []  # every name was removed by its reader
    rc2[0].execute("b[0] = -1", block=True)  # written on the engine: a page of its own
    again = rc2[0].pull("b", block=True)
    assert again[0] == -1 and np.array_equal(again[1:], array[1:]) and back[0] == 0
    assert backing(again)[1] != seen[0][1]  # so it went back as a copy
    rc2[:].execute("del b", block=True)
    wait_until(lambda: ours(where, key, "h") == [])  # held names go with the arrays


def test_a_call_whose_arguments_came_through_shared_memory_runs_and_its_bytes_are_hashed(rc2):
    array = np.arange(MB, dtype=np.float64)
    ar = rc2[0].apply_async(lambda a: float(a.sum()), array)
    assert ar.get(timeout=30) == float(array.sum())
    assert ar.metadata["engine_id"] == 0 and rc2[0].apply_sync(os.getpid)  # the engine lives


def test_pushing_s_bytes_raises_each_process_private_memory_by_at_most_a_quarter_more(rc2):
    size = 256 * MB
    array = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    me, engine = psutil.Process(), psutil.Process(rc2[0].apply_sync(os.getpid))
    rc2[0].apply_sync(touch, np.zeros(8, np.uint8))  # warm: the function's first run imports
    base = {p.pid: p.memory_full_info().uss for p in (me, engine)}
    peak = dict(base)
    stop = threading.Event()

    def sample():  # 100 Hz, as long as the transfer lasts
        while not stop.is_set():
            for p in (me, engine):
                peak[p.pid] = max(peak[p.pid], p.memory_full_info().uss)
            stop.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        rc2[0].push({"m": array}, block=True)
        assert rc2[0].apply_sync(touch, ipcluster.Reference("m")) == touch(array)
        back = rc2[0].pull("m", block=True)
        assert touch(back) == touch(array)
    finally:
        stop.set()
        sampler.join()
    rise = {pid: peak[pid] - base[pid] for pid in base}
    assert rise[engine.pid] <= 1.25 * size, f"engine: +{rise[engine.pid] / MB:.0f} MiB for {size / MB:.0f} MiB"
    assert rise[me.pid] <= 1.25 * size, f"client: +{rise[me.pid] / MB:.0f} MiB for {size / MB:.0f} MiB"
    assert rise[engine.pid] >= 0.75 * size  # the sampler sees the pages the engine read
    del back
    rc2[0].execute("del m", block=True)


PUSHER = """
import sys, numpy as np, ipcluster
rc = ipcluster.Client(sys.argv[1])
array = np.ones(int(sys.argv[2]), np.uint8)
while True:
    rc[int(sys.argv[3])].push({"g": array}, block=True)
"""


def test_kill_9_of_an_engine_and_of_a_client_during_a_1_gb_push_leaves_nothing_once_stopped(tmp_path):
    size, where = 1000 * MB, shm.directory()
    cluster = start_cluster(2)
    key = ipcluster.connection.read(cluster.connection_file).key_bytes
    try:
        rc = cluster.client
        pids = rc[:].apply_sync(os.getpid)
        rc[0].push({"held": np.ones(MB, np.uint8)}, block=True)  # engine 0 holds a file
        assert len(ours(where, key, "h")) == 1
        busy = rc[0].apply_async(time.sleep, 60)  # engine 0 will not map what it is sent
        push = rc[0].push({"g": np.ones(size, np.uint8)}, block=False)
        assert len(ours(where, key, "s")) == 1  # written, waiting for engine 0 to map it
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(EngineError):
            push.get(timeout=30)
        with pytest.raises(EngineError):
            busy.get(timeout=30)
        assert ours(where, key, "s") == []  # the client removed the name engine 0 never mapped
        assert ours(where, key, "h") == []  # the controller removed what engine 0 held

        rc[1].apply_async(time.sleep, 60)  # engine 1 will not map the second client's push
        pusher = subprocess.Popen([sys.executable, "-c", PUSHER, str(cluster.connection_file),
                                   str(size), "1"])
        try:
            wait_until(lambda: ours(where, key, "s"))  # the second client's first segment
            pusher.kill()  # during its first push: writing, or sent and not yet mapped
        finally:
            pusher.wait(timeout=30)
        assert ours(where, key, "s")  # left behind by the killed client, until the stop
        os.kill(cluster.controller.pid, signal.SIGKILL)  # no sweep of its own: the Cluster's
    finally:
        cluster.stop_cluster_sync()
    assert ours(where, key) == []  # segments and probes of the cluster all gone


def test_ipcluster_stop_of_a_cluster_whose_owner_and_controller_were_killed_leaves_no_probe():
    """Each process of a cluster keeps a 0-byte probe file while it lives; one killed -9 (here
    the `ipcluster start` that owns the cluster, and its controller, which would sweep them)
    leaves its probe for `ipcluster stop` to remove (it removed none before)."""
    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "ipcluster", *args], capture_output=True,
                              text=True, timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr

    cli("start", "-n", "1", "--daemonize", "--cluster-id", "killed-owner")
    where = ipcluster_dir() / "killed-owner"
    record = json.loads((where / "cluster.json").read_text())
    key = ipcluster.connection.read(where / "connection.json").key_bytes
    try:
        wait_until(lambda: len(ours(shm.directory(), key, "p")) >= 2)  # the owner's, the engine's
        for pid in (record["owner"]["pid"], record["controller_pid"]):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not psutil.pid_exists(record["controller_pid"]))
        assert ours(shm.directory(), key, "p")  # the killed owner's probe, at least
    finally:
        cli("stop", "killed-owner")
    assert ours(shm.directory(), key) == []


def test_a_durable_cluster_keeps_large_results_as_bytes_for_any_client():
    cluster = start_cluster(1, db="sqlite")
    try:
        array = np.arange(MB, dtype=np.float64)
        ar = cluster.client[0].apply_async(lambda a: a, array)
        assert np.array_equal(ar.get(timeout=30), array)
        key = ipcluster.connection.read(cluster.connection_file).key_bytes
        assert ours(shm.directory(), key, "s") == []
        with ipcluster.Client(cluster.connection_file) as other:  # the ledger has the bytes
            assert np.array_equal(other.get_result(ar.msg_ids[0]).get(timeout=30), array)
    finally:
        cluster.stop_cluster_sync()


@pytest.fixture
def small_shm(tmp_path, monkeypatch):
    """IPCLUSTER_SHM_DIR on a tmpfs of 4 MiB, as containers often have (64 MiB)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the small-/dev/shm test needs root (to mount a tmpfs) in CI")
        pytest.skip("needs root to mount a small tmpfs")
    where = tmp_path / "shm"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=1777", "tmpfs", str(where)],
                   check=True)
    monkeypatch.setenv(shm.DIRECTORY_VARIABLE, str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_directory_too_small_falls_back_to_the_sockets_and_says_so_once(small_shm, caplog):
    caplog.set_level(logging.WARNING, "ipcluster.shm")
    cluster = start_cluster(1)
    try:
        rc, arrays = cluster.client, [np.full(8 * MB, i, np.uint8) for i in range(3)]
        for i, array in enumerate(arrays):
            rc[0].push({f"x{i}": array}, block=True)
            assert np.array_equal(rc[0].pull(f"x{i}", block=True), array)
        rc[0].push({"small": np.ones(MB, np.uint8)}, block=True)  # this one fits
        assert rc[0].apply_sync(backing, ipcluster.Reference("small"))[2].startswith(str(small_shm))
        key = ipcluster.connection.read(cluster.connection_file).key_bytes
        assert ours(small_shm, key, "s") == []
        assert [r.message.count("has no room") for r in caplog.records] == [1]
        engine_log = (cluster.cluster_dir / "engine-0.log").read_text()
        assert engine_log.count("has no room") == 1, engine_log
    finally:
        cluster.stop_cluster_sync()
    assert ours(small_shm, key) == []
