"""A cluster dies with its owner: the Python process (or Jupyter kernel) that started it,
killed or exiting normally; ``shutdown_atexit=False`` and ``ipcluster start --daemonize`` keep it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import ipcluster
from ipcluster import state
from tests.conftest import wait_until

START = """
import json, ipcluster
cluster = ipcluster.Cluster(n=2, shutdown_atexit={keep})
rc = cluster.start_and_connect_sync()
print(json.dumps(cluster.cluster_id), flush=True)
{then}
"""


def _pids(cluster_id: str) -> list[int]:
    found = state.read(cluster_id)
    return [found["controller_pid"], *found["engine_pids"]]


def _running(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


def wait_until_gone(pids, timeout: float = 10) -> float:
    """Seconds until none of `pids` runs; fails after `timeout`."""
    t0 = time.monotonic()
    wait_until(lambda: not _running(pids), timeout)
    return time.monotonic() - t0


def _start_owner(then: str, keep: bool = True) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", START.format(keep=keep, then=then)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"the owner failed: {proc.communicate()[1]}")
    return proc, json.loads(line)


def test_sigkill_of_the_owner_stops_its_cluster_within_10_s():
    owner, cluster_id = _start_owner("import time; time.sleep(120)")
    pids = _pids(cluster_id)
    assert len(_running(pids)) == 3
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    took = wait_until_gone(pids)
    print(f"\ncluster gone {took:.2f} s after SIGKILL of its owner")
    assert not (state.path(cluster_id).parent / "connection.json").exists()
    assert state.status(cluster_id) == "stale"  # shown by `ipcluster list`, removed by clean
    assert ipcluster_cli("clean").returncode == 0
    assert not state.path(cluster_id).parent.exists()


def test_exit_of_the_owner_stops_its_cluster():
    owner, cluster_id = _start_owner("exit()")
    pids = _pids(cluster_id)
    assert owner.wait(30) == 0, owner.stderr.read()
    wait_until_gone(pids)
    assert not state.path(cluster_id).parent.exists()  # stopped at exit: nothing left over


def test_shutdown_atexit_false_keeps_the_cluster():
    owner, cluster_id = _start_owner("", keep=False)
    pids = _pids(cluster_id)
    assert owner.wait(30) == 0, owner.stderr.read()
    assert "--owner" not in psutil.Process(pids[0]).cmdline()
    try:
        with ipcluster.Client(cluster_id) as rc:  # the owner is gone; the cluster works
            rc.wait_for_engines(2, timeout=30)
            assert sorted(rc[:].apply_sync(os.getpid)) == sorted(pids[1:])
        assert _running(pids) == pids
    finally:
        stopped = ipcluster_cli("stop", cluster_id)
    assert stopped.returncode == 0, stopped.stderr
    wait_until_gone(pids, 1)


def test_sigkill_of_a_jupyter_kernel_stops_its_cluster():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")  # it inherits our IPCLUSTER_DIR
    outputs = []
    try:
        reply = kc.execute_interactive(START.format(keep=True, then=""), timeout=60,
                                       output_hook=lambda msg: outputs.append(msg))
        assert reply["content"]["status"] == "ok", reply["content"]
        text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
        cluster_id = json.loads(text.splitlines()[-1])
        pids = _pids(cluster_id)
        assert len(_running(pids)) == 3
        km.signal_kernel(signal.SIGKILL)
        took = wait_until_gone(pids)
        print(f"\ncluster gone {took:.2f} s after SIGKILL of its kernel")
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
    ipcluster_cli("clean")


def ipcluster_cli(*args):
    return subprocess.run([sys.executable, "-m", "ipcluster", *args], capture_output=True,
                          text=True, timeout=90)


def test_the_replacement_controller_of_a_durable_cluster_keeps_watching_the_owner():
    owner = subprocess.Popen([sys.executable, "-m", "ipcluster", "start", "-n", "1", "--db", "sqlite",
                              "--cluster-id", "durable-owner"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert "1 engines ready" in owner.stdout.readline()
        first = state.read("durable-owner")["controller_pid"]
        os.kill(first, signal.SIGKILL)  # the owner starts one that takes over

        def replaced() -> bool:
            pid = (state.read("durable-owner") or {}).get("controller_pid")
            return pid not in (None, first) and state.alive(pid)

        wait_until(replaced)
        pids = _pids("durable-owner")
        assert f"{owner.pid}:" in " ".join(psutil.Process(pids[0]).cmdline())  # --owner PID:START
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        took = wait_until_gone(pids)
        print(f"\nreplacement controller and engines gone {took:.2f} s after SIGKILL of the owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    assert ipcluster_cli("clean").returncode == 0
