"""Dependencies end to end: `after` and `follow` flags, DAGs, and failed parents."""

from __future__ import annotations

import os
import random
import time

import pytest

import ipcluster as ipp


def stamp(name):
    import time
    time.sleep(0.001)
    return (name, time.time())


def test_a_random_dag_runs_in_a_valid_topological_order(rc):
    rng = random.Random(7)
    view = rc.load_balanced_view()
    parents: dict[int, list[int]] = {}
    results = {}
    for node in range(1000):
        parents[node] = rng.sample(range(node), min(node, rng.randrange(0, 4)))
        with view.temp_flags(after=[results[p] for p in parents[node]]):
            results[node] = view.apply_async(stamp, node)
    done = {node: ar.get(timeout=120)[1] for node, ar in results.items()}
    for node, ps in parents.items():
        for p in ps:
            assert results[p].metadata["completed"] <= results[node].metadata["started"], (p, node)
    assert len(done) == 1000


def test_a_failed_parent_fails_its_success_only_children_promptly(rc):
    view = rc.load_balanced_view()
    parent = view.apply_async(lambda: 1 / 0)
    with view.temp_flags(after=parent):
        child = view.apply_async(lambda: "never")
    with view.temp_flags(after=child):
        grandchild = view.apply_async(lambda: "never either")
    t0 = time.monotonic()
    with pytest.raises(ipp.ImpossibleDependency):
        child.get(timeout=30)
    with pytest.raises(ipp.ImpossibleDependency):
        grandchild.get(timeout=30)
    assert time.monotonic() - t0 < 5
    with view.temp_flags(after=ipp.Dependency(parent, success=False, failure=True)):
        assert view.apply_sync(lambda: "runs after a failure") == "runs after a failure"


def test_follow_runs_where_the_dependency_ran(rc):
    view = rc.load_balanced_view()
    first = view.apply_async(os.getpid)
    where = first.get(timeout=10)
    with view.temp_flags(follow=first):
        assert {view.apply_sync(os.getpid) for _ in range(5)} == {where}


def test_priority_runs_higher_first(rc):
    view = rc.load_balanced_view(targets=[0])
    # engine 0 full: at most hwm (32) outstanding, fewer once its tasks take long
    blockers = [view.apply_async(time.sleep, 0.01) for _ in range(32)]
    with view.temp_flags(priority=0):
        low = view.apply_async(time.time)
    with view.temp_flags(priority=10):
        high = view.apply_async(time.time)
    assert high.get(timeout=30) <= low.get(timeout=30)
    [b.get(timeout=30) for b in blockers]


def test_a_purged_task_is_forgotten_by_the_dependency_graph(rc):
    view = rc.load_balanced_view()
    parent = view.apply_async(abs, -1)
    assert parent.get(timeout=30) == 1
    rc.purge_results(parent.msg_ids)
    with pytest.raises(ipp.ImpossibleDependency, match="purged"):
        with view.temp_flags(after=parent):
            view.apply_async(abs, -2).get(timeout=30)
