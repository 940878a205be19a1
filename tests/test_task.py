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
    task.finish(0, "u", "ok", 1.5e9, None, 1.5e9 + 2)
    md = task.metadata
    assert md["started"] == datetime.fromtimestamp(1.5e9, timezone.utc) and md["completed"] is None
    assert md.seconds("received") == 1.5e9 + 2 and md.status == "ok"
    md["completed"] = 1.5e9 + 1  # set as a float, read as a datetime, as before
    assert md["completed"] == datetime.fromtimestamp(1.5e9 + 1, timezone.utc)


def test_futures_share_one_lock_and_each_wakes_only_its_own_waiters():
    task, other = TaskFuture("t-1", 0), TaskFuture("t-2", 1)
    ar = AsyncResult([task], "single")
    assert ar._condition is task._condition is other._condition
    got = []
    waiters = [threading.Thread(target=lambda: got.append(ar.result())),
               threading.Thread(target=lambda: got.append(task.exception()))]
    for waiter in waiters:
        waiter.start()
    wait_until(lambda: len(task._waiters) == 1 and len(ar._waiters) == 1)  # both wait
    other.set_result(0)  # another future finishing wakes neither (no TimeoutError either)
    with task._condition:  # nor does a wake-up of everyone waiting on the shared condition
        task._condition.notify_all()
    assert all(w.is_alive() for w in waiters) and got == []
    task.set_result(7)
    for waiter in waiters:
        waiter.join(10)
    assert sorted(got, key=repr) == [7, None] and ar.exception(0) is None
    with pytest.raises(concurrent.futures.TimeoutError):
        AsyncResult([TaskFuture("t-3")], "single").result(0.01)
    with pytest.raises(concurrent.futures.TimeoutError):
        TaskFuture("t-4").exception(0)


def test_output_callbacks_get_what_came_before_then_the_rest_in_order():
    task, seen = TaskFuture("t-1", 0), []
    task.add_output("stdout", "a", 0)
    task.add_output_callback(lambda t, name, data: seen.append((name, data)))
    task.add_output("stdout", "b", 0)
    task.add_output("stderr", "c", 0)
    assert seen == [("stdout", "a"), ("stdout", "b"), ("stderr", "c")]
    assert task.metadata["stdout"] == "ab"


def test_a_pending_task_and_its_result_are_few_objects_for_the_garbage_collector():
    # each tracked object makes every full collection longer while thousands of tasks are pending
    gc.collect()
    before = len(gc.get_objects())
    held = [AsyncResult([TaskFuture(f"t-{i}", None)], "single") for i in range(1000)]
    per_task = (len(gc.get_objects()) - before) / len(held)
    assert per_task <= 12, per_task  # 34 with a condition each and a lock per task


def test_a_client_future_has_the_stdlib_futures_fields():
    # task.Future sets them itself (no condition made only to be replaced by the shared one)
    assert set(vars(TaskFuture("t-1"))) >= set(vars(concurrent.futures.Future()))
    assert set(vars(AsyncResult([], "list"))) >= set(vars(concurrent.futures.Future()))


def test_setting_a_result_behaves_as_the_stdlibs(caplog):
    # task.Future.set_result is its own (no condition to notify): the stdlib's contract holds
    task, seen = TaskFuture("t-1"), []
    task.add_done_callback(lambda f: 1 / 0)  # logged, and the next callback still runs
    task.add_done_callback(lambda f: seen.append(f.result()))
    task.set_result(5)
    assert task.done() and seen == [5] and "ZeroDivisionError" in caplog.text
    with pytest.raises(concurrent.futures.InvalidStateError):
        task.set_result(6)
    task.add_done_callback(lambda f: seen.append("at once"))  # finished: called right away
    assert seen == [5, "at once"]
    cancelled = TaskFuture("t-2")
    assert cancelled.cancel() and cancelled.done()
    with pytest.raises(concurrent.futures.InvalidStateError):
        cancelled.set_result(1)
