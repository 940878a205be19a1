"""Load balancing without head-of-line blocking: a task queued behind a long one on a busy
engine moves to an engine that goes idle (through the "not started" handshake), with the
default flags, so prefetching (`hwm`) is kept."""

from __future__ import annotations


def slow():
    import time
    time.sleep(3)
    return time.time()


def quick():
    import time
    time.sleep(0.01)
    return time.time()


def test_no_quick_task_finishes_after_a_slow_one_submitted_before_it(rc):
    view = rc.load_balanced_view()
    long = view.apply_async(slow)
    short = [view.apply_async(quick) for _ in range(40)]
    long_done = long.get(timeout=60)
    done = [ar.get(timeout=60) for ar in short]
    late = [i for i, t in enumerate(done) if t > long_done]
    assert not late, f"quick tasks {late} finished after the 3 s task (waited behind it)"
