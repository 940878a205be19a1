"""The ipcluster command: start (foreground and --daemonize), list, stop."""

from __future__ import annotations

import ast
import concurrent.futures
import json
import time
import os
import signal
import subprocess
import sys

import psutil
import pytest

from ipcluster.config import ipcluster_dir
from tests.conftest import wait_until


def ipcluster(*args, timeout=90, **kwargs):
    return subprocess.run([sys.executable, "-m", "ipcluster", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def alive(pid) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_daemonize_then_client_then_list_then_stop():
    started = ipcluster("start", "-n", "4", "--daemonize")
    assert started.returncode == 0, started.stderr
    assert "running in the background with 4 engines" in started.stdout
    state = json.loads((ipcluster_dir() / "default" / "cluster.json").read_text())
    pids = [state["owner"]["pid"], state["controller_pid"], *state["engine_pids"]]
    try:
        count = subprocess.run(
            [sys.executable, "-c", "import ipcluster; print(len(ipcluster.Client().ids))"],
            capture_output=True, text=True, timeout=60)
        assert count.stdout.strip() == "4", count.stderr
        table = ipcluster("list")
        assert "default" in table.stdout and "running" in table.stdout
        rows = json.loads(ipcluster("list", "-o", "json").stdout)  # (other tests' failed ones too)
        assert [(r["state"], r["engines"]) for r in rows if r["cluster_id"] == "default"] == [("running", 4)]
        again = ipcluster("start", "-n", "1", "--daemonize")
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = ipcluster("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(p) for p in pids)
    assert "default" not in [r["cluster_id"] for r in json.loads(ipcluster("list", "-o", "json").stdout)]


def test_foreground_start_stops_cleanly_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "ipcluster", "start", "-n", "2", "--cluster-id", "fg"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "2 engines ready" in line, line + proc.stdout.read()
        state = json.loads((ipcluster_dir() / "fg" / "cluster.json").read_text())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "stopped" in proc.stdout.read()
        assert not any(alive(p) for p in [state["controller_pid"], *state["engine_pids"]])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stop_of_an_unknown_cluster_says_so():
    out = ipcluster("stop", "--cluster-id", "nope")
    assert out.returncode == 1 and "no cluster 'nope'" in out.stderr


def test_bad_arguments_get_usage_errors():
    for n in ("four", "-1", "2.5"):
        out = ipcluster("start", "-n", n, "--cluster-id", "bad-n")
        assert out.returncode == 2, out
        assert f"expected a whole number of engines, 0 or more; got '{n}'" in out.stderr
    assert not (ipcluster_dir() / "bad-n").exists()
    out = ipcluster("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_an_unknown_launcher_lists_the_known_ones():
    out = ipcluster("start", "-n", "1", "--engines", "nosuch", "--cluster-id", "bad-launcher")
    assert out.returncode == 1 and "known launchers: " in out.stderr and "local" in out.stderr
    assert not (ipcluster_dir() / "bad-launcher" / "connection.json").exists()


@pytest.mark.parametrize("argv", [["--help"], ["start", "--help"]])
def test_help(argv):
    out = ipcluster(*argv)
    assert out.returncode == 0 and "usage: ipcluster" in out.stdout


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "ipcluster")
    out = subprocess.run([exe, "list"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_status_shows_each_engine_and_the_queue(cluster):
    import ipcluster as ipp

    with ipp.Client(cluster.connection_file) as rc:
        busy = rc[1].apply_async(time.sleep, 3)
        out = ipcluster("status", "--cluster-id", cluster.cluster_id, "-o", "json")
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        engines = {e["engine"]: e for e in status["engines"]}
        assert sorted(engines) == rc.ids and status["queued"] == 0
        assert engines[1]["state"] == "busy" and engines[1]["task"] == busy.msg_ids[0]
        assert engines[0]["state"] == "idle" and engines[0]["rss"] > 10 << 20
        table = ipcluster("status", "--cluster-id", cluster.cluster_id)
        assert "ENGINE" in table.stdout and "CPU%" in table.stdout and "4 engines" in table.stdout
        busy.get(timeout=30)
        # 12 labelled tasks: 4 run, 8 wait (4 given to engines behind a running one, 4 unassigned)
        view = rc.load_balanced_view()
        with view.temp_flags(label="slow-step"):
            slow = [view.apply_async(time.sleep, 20) for _ in range(12)]
        wait_until(lambda: all(e["state"] == "busy" for e in rc.engine_info().values()))
        status = json.loads(ipcluster("status", "--cluster-id", cluster.cluster_id, "-o", "json").stdout)
        assert status["queued"] == 8
        assert {e["label"] for e in status["engines"]} == {"slow-step"}
        table = ipcluster("status", "--cluster-id", cluster.cluster_id).stdout
        assert "LABEL" in table and "slow-step" in table and "4 engines; 8 tasks queued" in table
        rc.abort(slow)  # queued ones never run, running ones are interrupted
        done, _ = concurrent.futures.wait(slow, timeout=60)
        assert len(done) == 12
    out = ipcluster("status", "--cluster-id", "nope")
    assert out.returncode == 1 and "no connection file" in out.stderr


def test_start_with_a_durable_ledger():
    started = ipcluster("start", "-n", "1", "--daemonize", "--cluster-id", "durable", "--db", "sqlite")
    assert started.returncode == 0, started.stderr
    try:
        code = ("import ipcluster; rc = ipcluster.Client('durable'); "
                "rc.load_balanced_view(label='kept').apply_sync(abs, -3); "
                "print(rc.db_query({'label': 'kept'}, keys=['status']))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        (record,) = ast.literal_eval(out.stdout.strip())  # msg_id always comes, as in ipyparallel
        assert record["status"] == "ok" and set(record) == {"msg_id", "status"}, out.stderr
        assert (ipcluster_dir() / "durable" / "tasks.db").exists()
    finally:
        assert ipcluster("stop", "--cluster-id", "durable").returncode == 0


def test_a_durable_cluster_replaces_a_controller_that_dies():
    from ipcluster import connection

    started = ipcluster("start", "-n", "2", "--daemonize", "--cluster-id", "phoenix", "--db", "sqlite")
    assert started.returncode == 0, started.stderr
    conn = ipcluster_dir() / "phoenix" / "connection.json"
    try:
        code = ("import ipcluster, os, sys; rc = ipcluster.Client('phoenix', timeout=30); "
                "rc.wait_for_engines(2, timeout=60); rc[:].push({'kept': 7}, block=True); "
                "print(sorted(rc[:].apply_sync(os.getpid)), rc[:].pull('kept', block=True))")
        first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
        assert first.returncode == 0, first.stderr
        old = connection.read(conn).controller_pid
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if connection.read(conn).controller_pid not in (old, 0):
                    break
            except Exception:
                pass
            time.sleep(0.1)
        again = subprocess.run([sys.executable, "-c", code.replace("rc[:].push({'kept': 7}, block=True); ", "")],
                               capture_output=True, text=True, timeout=90)
        assert again.returncode == 0, again.stderr
        assert again.stdout == first.stdout  # the same engine processes, their namespaces intact
    finally:
        assert ipcluster("stop", "--cluster-id", "phoenix").returncode == 0

