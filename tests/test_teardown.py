"""ipcluster stop [CLUSTER_ID] [--all], ipcluster clean, and the rule for which cluster a
command means, on real clusters (this module starts no shared cluster, so it sees only its own)."""

from __future__ import annotations

import json

from ipcluster import connection
from ipcluster.config import ipcluster_dir
from tests.conftest import wait_until
from tests.test_cli import ipcluster


def test_a_failed_daemonized_start_quotes_its_log_and_list_and_clean_show_it():
    out = ipcluster("start", "-n", "1", "--engines", "lsf", "--daemonize", "--cluster-id", "nolsf")
    assert out.returncode == 1
    assert "'bsub' not found; is lsf installed, and on PATH" in out.stderr, out.stderr
    log = ipcluster_dir() / "nolsf" / "ipcluster.log"
    assert f"{log} ends with:" in out.stderr and log.exists()
    listed = ipcluster("list")
    assert "nolsf" in listed.stdout and "failed" in listed.stdout and "ipcluster clean" in listed.stdout
    rows = json.loads(ipcluster("list", "-o", "json").stdout)
    assert [r["state"] for r in rows if r["cluster_id"] == "nolsf"] == ["failed"]
    cleaned = ipcluster("clean")
    assert "removed failed cluster 'nolsf'" in cleaned.stdout
    assert not log.parent.exists()


def test_stop_takes_a_positional_id_and_all_and_version_is_shown():
    for cid in ("one", "two"):
        assert ipcluster("start", "-n", "1", "--daemonize", "--cluster-id", cid,
                         "--max-message-size", "3000000").returncode == 0
    try:
        assert connection.read(ipcluster_dir() / "one" / "connection.json").max_message_size == 3000000
        ambiguous = ipcluster("status")
        assert ambiguous.returncode == 1
        assert "2 clusters are running (one, two) and none is 'default'" in ambiguous.stderr
        assert ipcluster("stop", "one").stdout == "cluster 'one' stopped\n"
        only = ipcluster("status", "-o", "json")  # the only running cluster is meant
        assert only.returncode == 0 and len(json.loads(only.stdout)["engines"]) == 1
    finally:
        stopped = ipcluster("stop", "--all")
    assert stopped.returncode == 0 and "cluster 'two' stopped" in stopped.stdout
    left = [r["cluster_id"] for r in json.loads(ipcluster("list", "-o", "json").stdout)]
    assert "one" not in left and "two" not in left
    version = ipcluster("--version")
    assert version.returncode == 0 and version.stdout.startswith("ipcluster 0.")


def test_a_recorded_pid_now_used_by_another_process_is_left_alone():
    import subprocess
    import sys

    import psutil

    from ipcluster import state

    # pid_max is often 32768: a stale record's engine pid may now be another cluster's engine
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ipcluster-engine"])
    try:
        started = psutil.Process(decoy.pid).create_time()
        # until the child has exec'd, its command line is still the test's (no "ipcluster")
        wait_until(lambda: "ipcluster-engine" in psutil.Process(decoy.pid).cmdline())
        (ipcluster_dir() / "reused").mkdir()
        state.write("reused", {"controller_pid": None, "engine_pids": [decoy.pid],
                               "started": {str(decoy.pid): started - 100}, "failed": "test"})
        assert not state.alive(decoy.pid, state.read("reused")) and state.alive(decoy.pid)
        cleaned = ipcluster("clean")
        assert "removed failed cluster 'reused'" in cleaned.stdout
        assert decoy.poll() is None  # not killed: not the process the record names
    finally:
        decoy.kill()
        decoy.wait()
