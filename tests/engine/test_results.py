"""An engine's results held back while its tasks queue up, to go several in one message: never
late behind a long task, the output of each task still before its result."""

from __future__ import annotations

import time


def results_sent() -> dict:
    """On an engine: what its plain results cost in messages so far."""
    import threading

    control = next(t for t in threading.enumerate() if t.name == "ipcluster-control")
    return {"sent": control.results.sent, "carried": control.results.carried,
            "overdue": control.results.overdue}


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


def held_then_sleep(seconds: float) -> int:
    """On an engine: how many results were held as this task started; then sleep."""
    import threading
    import time

    control = next(t for t in threading.enumerate() if t.name == "ipcluster-control")
    held = len(control.results.messages)
    time.sleep(seconds)
    return held


def test_a_result_held_is_not_kept_waiting_by_a_long_task_after_it(rc):
    """A short task's result held while a 3 s task is queued behind it reaches the client long
    before the long task ends: the control thread sends what has waited `WAIT`, as the main
    thread runs the long task (a hold released only by the main thread's next result would
    deliver it with the long one). On a loaded machine the main thread may have sent them
    itself (the oldest `WAIT` old already): then the case is run again."""
    engine = rc[1]
    for attempt in range(3):
        before = engine.apply_sync(results_sent)
        gate = engine.apply_async(queued_at_least, 3)
        short = engine.apply_async(abs, -5)
        long = engine.apply_async(held_then_sleep, 3)
        tail = engine.apply_async(abs, -6)
        assert gate.get(timeout=30) >= 3 and short.get(timeout=30) == 5
        assert not long.ready()  # its result is still seconds away
        held = long.get(timeout=30)
        assert tail.get(timeout=30) == 6
        if held:  # results were held as the long task started: the control thread sent them
            assert engine.apply_sync(results_sent)["overdue"] > before["overdue"]
            break
    assert held, "no result was held as the long task started, in 3 attempts"


def test_output_of_each_task_still_comes_before_its_result_when_results_are_held(rc):
    engine, n = rc[2], 200
    before = engine.apply_sync(results_sent)
    gate = engine.apply_async(queued_at_least, n)
    printed = [engine.apply_async(print, f"task {i}") for i in range(n)]
    gate.get(timeout=30)
    for i, ar in enumerate(printed):
        ar.get(timeout=30)
        assert ar.stdout == f"task {i}\n"  # in when its result is
    after = engine.apply_sync(results_sent)
    sent, carried = (after[k] - before[k] for k in ("sent", "carried"))
    assert carried == n + 2  # the gate's result and the first query's too
    assert sent <= carried / 4, (sent, carried)  # results went several in a message

