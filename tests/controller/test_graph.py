"""Dependencies: after (time) and follow (place), ipyparallel's all/success/failure, whole
DAGs, and impossible dependencies reported at once instead of waiting forever."""

from __future__ import annotations

import random

import pytest

from ipcluster.controller.graph import Dep, Graph


def dep(*ids, **flags):
    return Dep(frozenset(ids), **flags)


def states(events):
    return {task: (state, detail if state == "ready" else None) for task, state, detail in events}


def test_a_random_dag_of_1000_tasks_runs_in_a_valid_topological_order():
    rng = random.Random(6)
    g = Graph()
    parents = {}
    ready = []
    for i in range(1000):
        task = f"t{i}"
        parents[task] = set(rng.sample(sorted(parents), min(len(parents), rng.randint(0, 4))))
        state, _ = g.add(task, after=dep(*parents[task]) if parents[task] else None)
        assert state in ("ready", "waiting")
        if state == "ready":
            ready.append(task)
    done, order = set(), []
    while ready:  # run whatever is ready, in a random order, as engines would
        task = ready.pop(rng.randrange(len(ready)))
        assert parents[task] <= done, f"{task} released before its parents"
        done.add(task)
        order.append(task)
        for child, state, _ in g.finished(task, ok=True, engine=rng.randrange(8)):
            assert state == "ready"
            ready.append(child)
    assert len(order) == 1000 and len(g) == 0
    assert not g.dependents and not g.open


def test_a_failed_parent_fails_its_success_only_children_and_their_descendants_at_once():
    g = Graph()
    g.add("root")
    assert g.add("child", after=dep("root"))[0] == "waiting"
    assert g.add("grandchild", after=dep("child"))[0] == "waiting"
    g.add("other", after=dep("root", failure=True, success=False))
    g.add("tolerant", after=dep("child", failure=True))
    events = g.finished("root", ok=False, engine=0)
    assert {t: s for t, s, _ in events} == {
        "child": "impossible", "grandchild": "impossible", "other": "ready", "tolerant": "ready"}
    why = dict((t, d) for t, _, d in events)["child"]
    assert "root failed and only successes count" in why
    assert len(g) == 0
    # a task added later that names a doomed task is doomed too, without waiting
    assert g.add("late", after=dep("grandchild"))[0] == "impossible"


def test_a_long_doomed_chain_is_reported_in_one_call_without_recursion():
    g = Graph()
    g.add("t0")
    for i in range(1, 5000):
        g.add(f"t{i}", after=dep(f"t{i - 1}"))
    events = g.finished("t0", ok=False)
    assert len(events) == 4999 and all(s == "impossible" for _, s, _ in events)


def test_all_false_is_met_by_any_and_impossible_only_when_none_can_count():
    g = Graph()
    for t in ("a", "b", "c"):
        g.add(t)
    g.add("any", after=dep("a", "b", all=False))
    g.add("none", after=dep("b", "c", all=False))
    assert g.finished("b", ok=False) == []  # each can still be met by another
    assert states(g.finished("a", ok=True)) == {"any": ("ready", None)}
    events = g.finished("c", ok=False)
    assert [(t, s) for t, s, _ in events] == [("none", "impossible")]


def test_failure_true_counts_failures_and_successes():
    g = Graph()
    g.add("a"), g.add("b")
    g.add("both", after=dep("a", "b", failure=True))
    g.finished("a", ok=False)
    assert states(g.finished("b", ok=True)) == {"both": ("ready", None)}
    g.add("c")
    g.add("only_failure", after=dep("c", success=False, failure=True))
    assert [s for _, s, _ in g.finished("c", ok=True)] == ["impossible"]


def test_dependencies_on_finished_tasks_are_resolved_when_added():
    g = Graph()
    g.add("a")
    g.finished("a", ok=True, engine=3)
    assert g.add("after_a", after=dep("a")) == ("ready", None)
    assert g.add("follow_a", follow=dep("a")) == ("ready", frozenset({3}))


def test_unknown_ids_and_self_dependency_are_impossible_at_once():
    g = Graph()
    state, why = g.add("x", after=dep("never-submitted"))
    assert state == "invalid" and "never-submitted" in why  # InvalidDependency for the client
    assert g.add("y", after=dep("y"))[0] == "invalid"
    with pytest.raises(ValueError, match="added already"):
        g.add("x")


def test_follow_runs_where_the_followed_tasks_ran():
    g = Graph()
    g.add("a"), g.add("b"), g.add("c")
    g.add("with_a", follow=dep("a"))
    g.add("with_ab", follow=dep("a", "b"))
    g.add("near_any", follow=dep("b", "c", all=False))
    assert states(g.finished("a", ok=True, engine=2)) == {"with_a": ("ready", frozenset({2}))}
    assert states(g.finished("b", ok=True, engine=2)) == {
        "with_ab": ("ready", frozenset({2})), "near_any": ("ready", frozenset({2}))}


def test_follow_all_on_different_engines_is_impossible():
    g = Graph()
    g.add("a"), g.add("b")
    g.add("f", follow=dep("a", "b"))
    assert g.finished("a", ok=True, engine=0) == []
    (task, state, why), = g.finished("b", ok=True, engine=1)
    assert state == "impossible" and "different engines" in why


def test_follow_and_after_together():
    g = Graph()
    g.add("setup"), g.add("slow")
    g.add("t", after=dep("slow"), follow=dep("setup"))
    assert g.finished("setup", ok=True, engine=4) == []  # located, but not yet in time
    assert states(g.finished("slow", ok=True, engine=1)) == {"t": ("ready", frozenset({4}))}


def test_a_gone_engine_dooms_tasks_that_follow_work_on_it():
    g = Graph()
    g.add("a"), g.add("b"), g.add("gate")
    g.add("f", after=dep("gate"), follow=dep("a"))
    g.add("child", after=dep("f"))
    g.finished("a", ok=True, engine=5)
    events = g.engine_gone(5)
    assert [(t, s) for t, s, _ in events] == [("f", "impossible"), ("child", "impossible")]
    # a task finishing on the gone engine, or an engine back with the same id, is no place
    g.engine_added(5)
    assert g.add("later", follow=dep("a"))[0] == "impossible"
    g.add("g", follow=dep("b"))
    g.engine_gone(6)
    assert [s for _, s, _ in g.finished("b", ok=True, engine=6)] == ["impossible"]


def test_follow_any_survives_losing_one_engine():
    g = Graph()
    g.add("a"), g.add("b"), g.add("gate")
    g.add("f", after=dep("gate"), follow=dep("a", "b", all=False))
    g.finished("a", ok=True, engine=1)
    g.finished("b", ok=True, engine=2)
    assert g.engine_gone(1) == []
    assert states(g.finished("gate", ok=True)) == {"f": ("ready", frozenset({2}))}


def test_a_task_finished_while_waiting_releases_nothing_twice():
    g = Graph()
    g.add("a")
    g.add("w", after=dep("a"))
    g.add("c", after=dep("w"))
    assert [(t, s) for t, s, _ in g.finished("w", ok=False)] == [("c", "impossible")]  # aborted
    assert g.finished("a", ok=True) == []
    assert g.finished("a", ok=True) == []  # twice: nothing


def test_memory_is_bounded_by_the_outcome_window():
    g = Graph(keep=100)
    for i in range(10_000):
        g.add(f"t{i}")
        g.finished(f"t{i}", ok=True, engine=0)
    assert len(g.outcomes) == 100 and not g.open and not g.dependents
    assert g.add("old", after=dep("t0"))[0] == "invalid"  # forgotten: unknown here
    assert g.add("recent", after=dep("t9999")) == ("ready", None)


def test_dependencies_from_the_wire():
    assert Dep.from_wire(None) is None and Dep.from_wire([]) is None
    assert Dep.from_wire(["a"]) == dep("a")
    assert Dep.from_wire({"ids": ["a"], "all": False, "success": True, "failure": True}) == \
        dep("a", all=False, failure=True)
    for bad in ("a", [1], {"ids": "a"}, {"ids": ["a"], "all": 1},
                {"ids": ["a"], "success": False, "failure": False}):
        with pytest.raises(ValueError):
            Dep.from_wire(bad)
