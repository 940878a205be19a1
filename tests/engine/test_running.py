"""The engine's "not started" bookkeeping (`engine.running.Running`), shared by its main
thread (which claims the tasks it takes, in the order they came) and its control thread (which
gives back queued ones when the controller asks)."""

from __future__ import annotations

from ipcluster.engine.running import Running
from ipcluster.engine.watchdog import Watch


def test_a_task_given_back_and_sent_again_runs_once_however_often_it_came_and_went():
    """The controller may send a task it was given back to the same engine again (the least
    loaded one) before the main thread reached the copy given back, and ask for it again. Each
    copy given back is skipped: before, the second was run all the same (a copy the controller
    had moved elsewhere: its result discarded as late), and the live copy, counted as started,
    could not be given back."""
    running = Running(Watch(), 0.5)
    for _ in range(2):
        running.enqueue("t")
        assert running.withdraw("t")  # given back, and queued again by the controller
    running.enqueue("t")  # the copy the controller counts on this engine
    running.enqueue("u")
    assert running.held() == ["t", "u"] and running.waiting() == {"t", "u"}
    assert [running.claim("t") for _ in range(2)] == [False, False]  # the copies given back
    assert running.withdraw("t")  # the live copy is still queued: it can be given back
    running.enqueue("t")
    assert [running.claim(t) for t in ("t", "u", "t")] == [False, True, True]
    assert running.waiting() == set() and not running.withdraw("t")

