"""A task's future and metadata, and the AsyncResult over one task, without a cluster."""

import concurrent.futures
import gc
import threading
from datetime import datetime, timezone

import pytest

from ipcluster.asyncresult import AsyncResult
from ipcluster.task import TaskFuture
from tests.conftest import wait_until


def test_metadata_times_are_utc_datetimes_as_in_ipyparallel():
    task = TaskFuture("t-1", 0)
    assert isinstance(task.metadata["submitted"], datetime)
    assert task.metadata.submitted.tzinfo is timezone.utc
    task.finish({"engine_id": 0, "engine_uuid": "u", "started": 1.5e9, "completed": None,
                 "received": 1.5e9 + 2, "status": "ok"})
    md = task.metadata
    assert md["started"] == datetime.fromtimestamp(1.5e9, timezone.utc) and md["completed"] is None
    assert md.seconds("received") == 1.5e9 + 2 and md.status == "ok"
    md["completed"] = 1.5e9 + 1  # set as a float, read as a datetime, as before
    assert md["completed"] == datetime.fromtimestamp(1.5e9 + 1, timezone.utc)


def test_a_one_task_result_shares_its_tasks_lock_and_a_wake_up_for_the_task_is_not_a_timeout():
    task = TaskFuture("t-1", 0)
    ar = AsyncResult([task], "single")
    assert ar._condition is task._condition
    got = []
    waiter = threading.Thread(target=lambda: got.append(ar.result()))
    waiter.start()
    cond = ar._condition

    def waiting():
        with cond:
            return list(cond._waiters)

    wait_until(lambda: len(waiting()) == 1)
    first = waiting()[0]
    with cond:  # what the task's completion does before the result is set: wake every waiter
        cond.notify_all()
    wait_until(lambda: waiting() and waiting()[0] is not first)  # it waits again, no TimeoutError
    task.set_result(7)
    waiter.join(10)
    assert got == [7] and ar.exception(0) is None and task.result(0) == 7
    with pytest.raises(concurrent.futures.TimeoutError):
        AsyncResult([TaskFuture("t-2")], "single").result(0.01)


def test_a_pending_task_and_its_result_are_few_objects_for_the_garbage_collector():
    # each tracked object makes every full collection longer while thousands of tasks are pending
    gc.collect()
    before = len(gc.get_objects())
    held = [AsyncResult([TaskFuture(f"t-{i}", None)], "single") for i in range(1000)]
    per_task = (len(gc.get_objects()) - before) / len(held)
    assert per_task <= 24, per_task  # 34 with a condition each and a lock per task
