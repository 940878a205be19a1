"""The task ledger: queries, results after a client dies, a controller that dies and is
restored (with --db sqlite), and labelled sweeps that resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import ipcluster as ipp
from tests.conftest import _fixture_pids, wait_until


@pytest.fixture
def durable():
    """A cluster whose controller keeps its ledger in SQLite."""
    cluster = ipp.Cluster(n=2, restart=True, db="sqlite")
    rc = cluster.start_and_connect_sync()
    try:
        yield cluster, rc
    finally:
        cluster.stop_cluster_sync()


def test_db_query_by_label_and_time(rc):
    # a label of its own: the cluster is the module's, and a run of this test less than a
    # second before (pytest-repeat runs it again at once) matches the same time window
    label = f"q-test-{time.time_ns()}"
    view = rc.load_balanced_view(label=label)
    t0 = time.time()
    ars = [view.apply_async(abs, -i) for i in range(5)]
    [ar.get(timeout=10) for ar in ars]
    found = rc.db_query({"label": label, "status": "ok", "submitted": {"$gte": t0 - 1}},
                        keys=["msg_id", "engine_id"])
    assert sorted(r["msg_id"] for r in found) == sorted(ar.msg_ids[0] for ar in ars)
    assert rc.db_query({"label": {"$in": ["nope"]}}) == []
    with pytest.raises(ipp.RemoteError, match="cannot query on 'colour'"):
        rc.db_query({"colour": "red"})


def test_db_query_times_compare_as_the_datetimes_they_are_shown_as(rc):
    """ipyparallel's test_db_query_dt: a record's own time (a datetime, in microseconds) is
    not `$lt` itself; with sub-microsecond times stored, about 4 in 10 records were."""
    ars = [rc[0].apply_async(abs, -i) for i in range(20)]
    ids = sorted(ar.msg_ids[0] for ar in ars)
    [ar.get(timeout=10) for ar in ars]
    for record in rc.db_query({"msg_id": {"$in": ids}}, keys=["submitted", "completed"]):
        for key in ("submitted", "completed"):
            earlier = rc.db_query({key: {"$lt": record[key]}, "msg_id": {"$in": ids}})
            assert record["msg_id"] not in {r["msg_id"] for r in earlier}, key


SWEEP = """
import sys, time, ipcluster
rc = ipcluster.Client(sys.argv[1])
def slow(x):
    import time
    time.sleep(0.02)
    return x * 10
view = rc.load_balanced_view()
ar = view.map_async(slow, range(400), chunksize=4, label="sweep-dies")
while ar.progress < 20:
    time.sleep(0.01)
print("HALFWAY", flush=True)
time.sleep(60)  # killed here
"""


def test_a_new_client_gets_every_finished_result_of_a_killed_client(durable, tmp_path):
    cluster, rc = durable
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    proc = subprocess.Popen([sys.executable, str(script), str(cluster.connection_file)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "HALFWAY"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rc.wait(timeout=1)
    deadline = time.monotonic() + 60
    while rc.db_query({"label": "sweep-dies", "status": None}, keys=["msg_id"]) and time.monotonic() < deadline:
        time.sleep(0.1)  # the dead client's queued work still runs
    records = rc.db_query({"label": "sweep-dies", "status": "ok"}, keys=["msg_id"])
    assert len(records) == 100
    chunks = rc.get_result([r["msg_id"] for r in records]).get(timeout=30)
    assert sorted(x for chunk in chunks for x in chunk) == [x * 10 for x in range(400)]


def slow_times_ten(x):
    import time
    time.sleep(0.01)
    return x * 10


def test_a_labelled_sweep_run_again_computes_only_what_is_missing(durable):
    cluster, rc = durable
    view = rc.load_balanced_view()
    first = view.map_async(slow_times_ten, range(200), chunksize=10, label="resume-me")
    first.get(timeout=60)
    before = rc.queue_status()
    completed_before = sum(s["completed"] for k, s in before.items() if k != "unassigned")
    again = view.map_sync(slow_times_ten, range(200), chunksize=10, label="resume-me")
    assert again == [x * 10 for x in range(200)]
    after = rc.queue_status()
    assert sum(s["completed"] for k, s in after.items() if k != "unassigned") == completed_before
    changed = view.map_sync(slow_times_ten, range(210), chunksize=10, label="resume-me")
    assert changed == [x * 10 for x in range(210)]
    done = sum(s["completed"] for k, s in rc.queue_status().items() if k != "unassigned")
    assert done == completed_before + 1  # only the new chunk ran


def sleep_then(seconds, value):
    import time
    time.sleep(seconds)
    return value


def test_a_killed_controller_restored_keeps_engines_namespaces_and_the_sweep(durable, caplog):
    """Every result arrives once: balanced and direct tasks, finished before, during and after
    the restart, with no re-asking on a timer and no duplicate (no "replayed" or "dropped a
    result" warning in the client)."""
    cluster, rc = durable
    rc[:].push({"kept": "namespace"}, block=True)
    pids = rc[:].apply_sync(os.getpid)
    view = rc.load_balanced_view()
    ar = view.map_async(slow_times_ten, range(300), chunksize=3, label="survives")
    while ar.progress < 10:
        time.sleep(0.01)
    direct = [rc[i % 2].apply_async(sleep_then, 0.5, i) for i in range(4)]  # unfinished at the kill
    ids = [d.msg_ids[0] for d in direct]
    wait_until(lambda: len(rc.db_query({"msg_id": {"$in": ids}}, keys=["msg_id"])) == 4)  # stored
    kill_and_restore_controller(cluster)
    try:
        assert ar.get(timeout=60) == [x * 10 for x in range(300)]
        assert [d.get(timeout=60) for d in direct] == list(range(4))
    except BaseException:
        print(open(cluster.cluster_dir / "controller.log").read()[-4000:])
        for i in range(len(cluster.launcher.processes)):
            print(open(cluster.cluster_dir / f"engine-{i}.log").read()[-1500:])
        raise
    client_warnings = [r.getMessage() for r in caplog.records if r.name == "ipcluster.client"]
    assert client_warnings == []
    rc.wait_for_engines(2, timeout=30)
    assert rc.ids == [0, 1]
    assert sorted(rc[:].apply_sync(os.getpid)) == sorted(pids)  # the same engine processes
    assert rc[:].pull("kept", block=True) == ["namespace", "namespace"]


def kill_and_restore_controller(cluster):
    """kill -9 of the cluster's controller, then a replacement started with --restore (which the
    cluster stops at the end)."""
    os.kill(cluster.controller.pid, signal.SIGKILL)
    cluster.controller.wait()
    log = open(cluster.cluster_dir / "controller.log", "ab")
    restored = subprocess.Popen([sys.executable, "-m", "ipcluster", "controller", "--cluster-id",
                                 cluster.cluster_id, "--restore"], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    cluster.controller = restored  # the cluster stops this one at the end
    _fixture_pids.add(restored.pid)


def note_run_then_wait(path, flag):
    import os
    import time
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    while not os.path.exists(flag):
        time.sleep(0.02)
    return os.getpid()


def test_tasks_an_engine_holds_at_a_restart_run_once(durable, tmp_path):
    """An engine registering again with a restored controller says which tasks it holds
    (running and queued): the controller does not send them again, so each runs once."""
    cluster, rc = durable
    flag = tmp_path / "flag"
    ars = [rc[0].apply_async(note_run_then_wait, str(tmp_path / f"runs-{i}"), str(flag))
           for i in range(2)]  # the first runs, the second waits behind it on engine 0
    view = rc.load_balanced_view(targets=[1])
    ars += [view.apply_async(note_run_then_wait, str(tmp_path / f"runs-{i}"), str(flag))
            for i in range(2, 4)]  # the same on engine 1, load-balanced
    wait_until(lambda: all((tmp_path / f"runs-{i}").exists() for i in (0, 2)))
    ids = [ar.msg_ids[0] for ar in ars]
    wait_until(lambda: len(rc.db_query({"msg_id": {"$in": ids}, "engine_id": {"$ne": None}},
                                       keys=["msg_id"])) == 4)  # stored as sent
    kill_and_restore_controller(cluster)

    def assigned():  # by the restored controller: both engines registered again
        status = rc.queue_status()
        return (status.get(0, {}).get("queue"), status.get(1, {}).get("tasks"),
                status["unassigned"]) == (2, 2, 0)

    wait_until(assigned, timeout=60)
    flag.touch()
    pids = [ar.get(timeout=60) for ar in ars]
    engine_pids = rc[:].apply_sync(os.getpid)
    assert pids == [engine_pids[0]] * 2 + [engine_pids[1]] * 2
    for i in range(4):  # each ran once, on the engine that held it
        assert (tmp_path / f"runs-{i}").read_text().split() == [str(pids[i])], i
