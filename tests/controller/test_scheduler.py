"""Least-load scheduling: fewest outstanding tasks first, a high-water mark, restrictions."""

from __future__ import annotations

from ipcluster.controller.scheduler import LeastLoad, Pending


def task(i, targets=None):
    return Pending(f"t{i}", None if targets is None else frozenset(targets), None)


def test_tasks_go_to_the_least_loaded_engine_up_to_the_high_water_mark():
    s = LeastLoad(hwm=2)
    for eid in (0, 1):
        s.add_engine(eid)
    for i in range(5):
        s.submit(task(i))
    sent = s.ready()
    assert sorted(eid for _, eid in sent) == [0, 0, 1, 1]  # 2 each, the 5th waits
    assert [p.task_id for p in s.pending] == ["t4"]
    s.finished(1)
    assert [(p.task_id, eid) for p, eid in s.ready()] == [("t4", 1)]


def test_direct_tasks_count_toward_load():
    s = LeastLoad(hwm=0)
    s.add_engine(0)
    s.add_engine(1)
    s.started(0)
    s.submit(task(0))
    assert [eid for _, eid in s.ready()] == [1]


def test_restricted_tasks_wait_for_their_engine_without_blocking_others():
    s = LeastLoad(hwm=1)
    s.add_engine(0)
    s.add_engine(1)
    s.started(0)  # engine 0 is full
    s.submit(task(0, targets=[0]))
    s.submit(task(1))
    assert [(p.task_id, eid) for p, eid in s.ready()] == [("t1", 1)]
    s.finished(0)
    assert [(p.task_id, eid) for p, eid in s.ready()] == [("t0", 0)]


def test_tasks_wait_until_an_engine_registers():
    s = LeastLoad()
    s.submit(task(0))
    assert s.ready() == []
    s.add_engine(5)
    assert [eid for _, eid in s.ready()] == [5]
