"""An engine's results: each goes as its task ends, after the task's output, and a result
sent is never lost with the engine if a later task kills it."""

from __future__ import annotations

import ipcluster as ipp


def queued_at_least(n: int) -> int:
    """On an engine: wait (30 s at most) until `n` tasks are queued behind this one, so that
    the tasks submitted after it are all on the engine when it ends."""
    import threading
    import time

    control = next(t for t in threading.enumerate() if t.name == "ipcluster-control")
    deadline = time.monotonic() + 30
    while control.tasks.qsize() < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{control.tasks.qsize()} tasks queued, not {n}")
        time.sleep(0.005)
    return control.tasks.qsize()


def test_output_of_each_task_still_comes_before_its_result_when_tasks_queue_up(rc):
    engine, n = rc[2], 200
    gate = engine.apply_async(queued_at_least, n)
    printed = [engine.apply_async(print, f"task {i}") for i in range(n)]
    gate.get(timeout=30)
    for i, ar in enumerate(printed):
        ar.get(timeout=30)
        assert ar.stdout == f"task {i}\n"  # in when its result is


def exits_at(i: int, at: int) -> int:
    import os
    import re

    if i == at:  # holding the GIL a while (no thread of the engine runs; libzmq's I/O thread
        re.match(r"(a+)+$", "a" * 22 + "b")  # does, and sends what was handed to it), then
        os._exit(3)  # the process ends
    return i


def test_every_task_finished_before_one_that_kills_its_engine_returns_its_result():
    """Tasks queued back to back on one engine, one ends the process: each of the 150 before
    it returns its value, the tasks after it fail with EngineError."""
    with ipp.Cluster(n=1) as rc:
        rc.wait_for_engines(1, timeout=60)
        engine = rc[rc.ids[0]]
        gate = engine.apply_async(queued_at_least, 200)
        ars = [engine.apply_async(exits_at, i, 150) for i in range(200)]
        gate.get(timeout=30)
        assert [ar.get(timeout=30) for ar in ars[:150]] == list(range(150))
        for ar in ars[150:]:
            try:
                ar.get(timeout=30)
            except ipp.EngineError:
                continue
            raise AssertionError("a task after the engine died returned")
