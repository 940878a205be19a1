"""The controller's memory is bounded by what the docs say: a huge print, a flood of malformed
messages and clients killed mid-submit leave its RSS within 50 MiB of where it started."""

from __future__ import annotations

import psutil

from ipcluster.controller.ledger import RECORD_BYTES, Ledger, Task, cost
from tests.conftest import wait_until

SLACK = 50 << 20


def rss(cluster) -> int:
    return psutil.Process(cluster.controller.pid).memory_info().rss


def shout(n):
    import sys
    sys.stdout.write("x" * n)
    return "done"


def test_a_200_mb_print_reaches_its_client_and_leaves_the_controller_as_it_was(cluster, rc):
    rc[0].apply_sync(shout, 10)  # warm
    start = rss(cluster)
    ar = rc[0].apply_async(shout, 200 << 20)
    assert ar.get(timeout=120) == "done" and len(ar.stdout) == 200 << 20
    kept = rc.db_query({"msg_id": ar.msg_ids[0]}, keys=["stdout"])[0]["stdout"]
    assert len(kept) < (1 << 20) + 200 and "is not kept by the controller" in kept
    wait_until(lambda: rss(cluster) < start + SLACK)


def test_the_memory_ledger_counts_what_its_records_hold():
    ledger = Ledger(max_results=1000, max_bytes=10 * (RECORD_BYTES + 1000), max_output=600)
    for i in range(20):
        task = Task(f"t{i}", b"client", request=[b"r" * 100])
        ledger.add(task)
        ledger.wrote(task, "stdout", "o" * 1000)  # kept up to 600, then a note
        assert len(task.stdout) < 800
        ledger.finish(task, [b"x" * 100], "ok", None)
    assert ledger.culled and ledger._done_bytes <= ledger.max_bytes
    assert all(cost(ledger.tasks[t]) > RECORD_BYTES + 800 for t in ledger.finished_ids())
