"""A dispatch round whose engine turns out to be gone part-way through loses no task."""

from __future__ import annotations

from ipcluster import connection
from ipcluster.controller.ledger import Task
from ipcluster.controller.main import ControllerOptions
from ipcluster.controller.scheduler import Pending
from ipcluster.controller.server import Controller


def test_an_engine_dropped_part_way_through_a_dispatch_round_loses_no_task():
    ctl = Controller("dispatch", ControllerOptions(), connection.new_key())
    try:
        # two engines the controller believes in, neither connected: the first send to each
        # fails (ROUTER_MANDATORY), and the engine is dropped in the middle of the round
        for eid in (0, 1):
            ctl.registry.add(f"gone-{eid}".encode(), 1000 + eid, "nowhere", eid)
            ctl.scheduler.add_engine(eid)
        tasks = [Task(f"t{i}", b"client", balanced=True, request=[b"frame"]) for i in range(4)]
        for task in tasks:
            ctl.ledger.add(task)
            ctl.scheduler.submit(Pending(task.id, None, [b"frame"]))
        ctl.dispatch()  # the round gives two tasks to each engine (no task finished yet)
        assert not ctl.registry.by_id
        queued = {p.task_id for p in ctl.scheduler.pending}
        for task in tasks:  # each failed (its engine went) or waits for an engine: none lost
            assert task.result is not None or task.id in queued, task.id
        assert [t.id for t in tasks if t.result is not None] == ["t0", "t1"]
        assert queued == {"t2", "t3"}
    finally:
        ctl.close()
