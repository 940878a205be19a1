"""Load balancing: the schemes' choices, the high-water mark, priority, restrictions, and the
work done per event (counted, never timed)."""

from __future__ import annotations

import random

import pytest

from ipcluster.controller.scheduler import SCHEMES, Pending, make_scheduler


def task(i, targets=None, priority=0):
    return Pending(f"t{i}", None if targets is None else frozenset(targets), None, priority)


def engines(s, *ids):
    for eid in ids:
        s.add_engine(eid)
    return s


def sent(s):
    return [(p.task_id, eid) for p, eid in s.ready()]


# -- least load (the default) --------------------------------------------------------------

def test_tasks_go_to_the_least_loaded_engine_up_to_the_high_water_mark():
    s = engines(make_scheduler("leastload", 2), 0, 1)
    for i in range(5):
        s.submit(task(i))
    out = s.ready()
    assert sorted(eid for _, eid in out) == [0, 0, 1, 1]  # 2 each, the 5th waits
    assert [p.task_id for p in s.pending] == ["t4"]
    s.finished(1)
    assert sent(s) == [("t4", 1)]


def _held(s, eid):
    """Submit tasks until none is sent: how many `eid` then holds (the other engine is full)."""
    for i in range(100):
        s.submit(task(f"x{eid}-{len(s.pending)}-{i}", targets=[eid]))
        if not s.ready():
            break
    return s.load[eid]


def test_an_engine_of_short_tasks_holds_up_to_hwm_one_of_long_tasks_two():
    assert make_scheduler().hwm == 32  # the default
    s = engines(make_scheduler("leastload", 8), 0, 1)
    assert _held(s, 0) == 2 and _held(s, 1) == 2  # nothing finished yet: the shallow depth
    for _ in range(2):
        s.finished(0, 0.00005)  # no-ops: 50 us each
        s.finished(1, 0.010)  # 10 ms each
    assert _held(s, 0) == 8  # 2 ms of short tasks is more than 8 of them: hwm
    assert _held(s, 1) == 2  # a task of 10 ms is more than 2 ms of work: no deeper than 2
    for _ in range(8):
        s.finished(0, 0.0005)  # its tasks now take 0.5 ms: 2 ms is 4 of them (+ the running)
    assert _held(s, 0) == 5


def test_a_long_task_makes_an_engine_shallow_at_once_and_hwm_one_or_two_is_fixed():
    s = engines(make_scheduler("leastload", 8), 0)
    s.finished(0, 0.00001)  # load 0: not counted
    assert _held(s, 0) == 2
    for _ in range(2):
        s.finished(0, 0.00001)
    assert _held(s, 0) == 8
    s.finished(0, 3.0)  # one 3 s task: the average is past 2 ms
    assert _held(s, 0) == 7  # it keeps what it holds; room again only below 2
    for _ in range(6):
        s.finished(0, 0.00001)
    assert s.load[0] == 1 and _held(s, 0) == 2
    for hwm in (1, 2):
        s = engines(make_scheduler("leastload", hwm), 0)
        for _ in range(hwm):
            assert _held(s, 0) == hwm
            s.finished(0, 0.00001)
        assert _held(s, 0) == hwm


def test_least_load_breaks_ties_by_least_recently_used():
    s = engines(make_scheduler("leastload", hwm=0), 0, 1, 2)
    s.started(1)  # engine 1 has one more task than the others
    for i in range(4):
        s.submit(task(i))
    # engine 2 registered last, so it counts as least recently used, as in ipyparallel
    assert [eid for _, eid in sent(s)] == [2, 0, 1, 2]


def test_direct_tasks_count_toward_load():
    s = engines(make_scheduler("leastload", 0), 0, 1)
    s.started(0)
    s.submit(task(0))
    assert [eid for _, eid in s.ready()] == [1]


# -- the other schemes ---------------------------------------------------------------------

def test_lru_cycles_through_engines_whatever_their_load():
    s = engines(make_scheduler("lru", hwm=0), 0, 1, 2)
    for _ in range(3):
        s.started(0)  # load does not matter to lru
    for i in range(6):
        s.submit(task(i))
    assert [eid for _, eid in sent(s)] == [2, 1, 0, 2, 1, 0]


class Scripted(random.Random):
    """Draws fixed indices, so a random scheme's choice can be checked exactly."""

    def __init__(self, draws):
        super().__init__(0)
        self.draws = list(draws)

    def randrange(self, n):
        return self.draws.pop(0) % n

    def choice(self, seq):
        return seq[self.randrange(len(seq))]


def test_twobin_takes_the_less_recently_used_of_two_random_engines():
    s = engines(make_scheduler("twobin", hwm=0), 0, 1, 2)
    s.rng = Scripted([0, 2, 1, 0, 0, 2])  # engines 0 and 2, then 1 and 0, then 0 and 2
    for i in range(3):
        s.submit(task(i))
    # 2 registered last (least recently used); then 1 and 0 never used, 1 newer; then 0 vs 2
    assert [eid for _, eid in sent(s)] == [2, 1, 0]


def test_plainrandom_uses_every_engine_and_only_those_with_room():
    s = engines(make_scheduler("plainrandom", hwm=2, seed=1), 0, 1, 2)
    s.started(1)
    s.started(1)  # full
    for i in range(4):
        s.submit(task(i))
    assert sorted(eid for _, eid in sent(s)) == [0, 0, 2, 2]

    s = engines(make_scheduler("plainrandom", hwm=0, seed=1), 0, 1, 2)
    for i in range(300):
        s.submit(task(i))
    assert {eid for _, eid in sent(s)} == {0, 1, 2}


def test_weighted_sends_more_work_to_faster_engines():
    s = engines(make_scheduler("weighted", hwm=0, seed=3), 0, 1)
    s.started(0), s.started(1)
    s.finished(0, duration=0.1)  # engine 0 is ten times faster
    s.finished(1, duration=1.0)
    counts = {0: 0, 1: 0}
    for i in range(400):
        s.submit(task(i))
        for _, eid in s.ready():
            counts[eid] += 1
    assert counts[0] > 4 * counts[1] > 0


def test_weighted_with_no_timings_spreads_by_load():
    s = engines(make_scheduler("weighted", hwm=0, seed=0), 0, 1)
    for _ in range(5):
        s.started(0)
    for i in range(20):
        s.submit(task(i))
        s.ready()
    assert s.load[1] > s.load[0] - 5  # the untimed, idle engine took its share first


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_honours_hwm_restrictions_and_priority(scheme):
    s = engines(make_scheduler(scheme, hwm=1, seed=0), 0, 1, 2)
    s.submit(task("low", priority=0))
    s.submit(task("on2", targets=[2], priority=9))
    s.submit(task("high", priority=5))
    s.submit(task("later"))
    out = dict(sent(s))
    assert out["ton2"] == 2 and set(out) == {"thigh", "ton2", "tlow"}
    assert [p.task_id for p in s.pending] == ["tlater"]


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(ValueError, match="leastload, lru, twobin, weighted, plainrandom"):
        make_scheduler("roundrobin")
    with pytest.raises(ValueError, match="hwm"):
        make_scheduler("lru", hwm=-1)


# -- high-water mark -----------------------------------------------------------------------

def test_hwm_is_the_prefetch_depth_and_zero_means_no_limit():
    s = engines(make_scheduler("leastload", hwm=3), 0)
    s.submit(task("short"))
    assert sent(s) == [("tshort", 0)]
    s.finished(0, 0.0001)  # its tasks are short: it may hold hwm of them
    for i in range(5):
        s.submit(task(i))
    assert [t for t, _ in sent(s)] == ["t0", "t1", "t2"]
    s.finished(0)
    assert [t for t, _ in sent(s)] == ["t3"]

    s = engines(make_scheduler("leastload", hwm=0), 0)
    for i in range(50):
        s.submit(task(i))
    assert len(s.ready()) == 50


# -- priority ------------------------------------------------------------------------------

def test_higher_priority_first_and_arrival_order_among_equals():
    s = engines(make_scheduler("leastload", 1), 0)
    s.started(0)  # busy: everything queues
    for i, p in enumerate([0, 5, 0, 5, -1, 10]):
        s.submit(task(i, priority=p))
    order = []
    for _ in range(6):
        s.finished(0)
        order += [t for t, _ in sent(s)]
    assert order == ["t5", "t1", "t3", "t0", "t2", "t4"]


def test_priority_holds_across_restricted_and_unrestricted_tasks():
    s = engines(make_scheduler("leastload", 1), 0, 1)
    s.started(0), s.started(1)
    s.submit(task("any", priority=1))
    s.submit(task("zero", targets=[0], priority=2))
    s.finished(0)
    assert sent(s) == [("tzero", 0)]
    s.finished(0)
    assert sent(s) == [("tany", 0)]


# -- restrictions --------------------------------------------------------------------------

def test_restricted_tasks_wait_for_their_engine_without_blocking_others():
    s = engines(make_scheduler("leastload", 1), 0, 1)
    s.started(0)  # engine 0 is full
    s.submit(task(0, targets=[0]))
    s.submit(task(1))
    assert sent(s) == [("t1", 1)]
    s.finished(0)
    assert sent(s) == [("t0", 0)]


def test_tasks_wait_until_an_engine_registers():
    s = make_scheduler("leastload")
    s.submit(task(0))
    s.submit(task(1, targets=[7, 8]))
    assert s.ready() == []
    s.add_engine(5)
    assert sent(s) == [("t0", 5)]
    s.add_engine(8)
    assert sent(s) == [("t1", 8)]


def test_removing_an_engine_hands_back_the_tasks_nothing_else_may_run():
    s = engines(make_scheduler("leastload", 1), 0, 1)
    s.started(0), s.started(1)
    s.submit(task(0, targets=[0]))
    s.submit(task(1, targets=[0, 1]))
    s.submit(task(2))
    s.submit(task(3, targets=[0], priority=3))
    assert [t.task_id for t in s.remove_engine(0)] == ["t3", "t0"]  # best first
    assert [p.task_id for p in s.pending] == ["t1", "t2"]
    s.finished(1)
    assert sent(s) == [("t1", 1)]


def test_removed_tasks_are_never_sent():
    s = engines(make_scheduler("leastload", 1), 0)
    s.started(0)
    for i in range(3):
        s.submit(task(i))
    assert s.remove("t0") and not s.remove("t0") and not s.remove("nope")
    s.finished(0)
    assert sent(s) == [("t1", 0)]
    assert len(s.pending) == 1
    with pytest.raises(ValueError, match="queued already"):
        s.submit(task(2))


# -- work per event ------------------------------------------------------------------------

def test_blocked_restricted_tasks_cost_nothing_per_event():
    """100,000 tasks restricted to full engines: an event elsewhere looks at none of them,
    and a slot freed on one of their engines looks at a few buckets, not at the queue."""
    s = engines(make_scheduler("leastload", 1), *range(10))
    for eid in range(10):
        s.started(eid)  # all full
    rng = random.Random(0)
    for i in range(100_000):
        targets = rng.sample(range(5), rng.randint(1, 3))  # engines 0-4, 25 distinct sets
        s.submit(task(i, targets=targets, priority=rng.randint(0, 3)))
    assert s.ready() == []
    for i in range(1000):  # unrestricted work flowing through engine 7 meanwhile
        s.steps = 0
        s.finished(7)
        s.submit(task(f"free{i}"))
        assert [eid for _, eid in s.ready()] == [7]
        assert s.steps < 20
    s.steps = 0
    s.finished(3)
    (best, eid), = s.ready()
    assert eid == 3 and best.priority == 3 and 3 in best.targets
    assert s.steps < 100  # the buckets naming engine 3, never the 100,000 tasks
    assert len(s.pending) == 100_000 - 1


def test_unrestricted_dispatch_does_not_scan_the_engines():
    s = engines(make_scheduler("leastload", 2), *range(2000))
    for i in range(4000):
        s.submit(task(i))
    s.steps = 0
    assert len(s.ready()) == 4000
    assert s.steps < 4000 * 30  # about log2(2000) per task, not 2000


def test_engines_holding_queued_tasks_are_movable_only_while_another_idles_and_none_wait():
    s = engines(make_scheduler("leastload", 2), 0, 1)
    for i in range(5):
        s.submit(task(i))
    sent(s)  # two each; t4 waits here
    assert s.backlog == {0, 1} and not s.idle and s.movable() == set()
    s.finished(1)
    sent(s)  # t4 goes to engine 1
    s.finished(1), s.finished(1)  # engine 1 is idle; engine 0 still has one queued
    assert s.idle == {1} and s.movable() == {0}
    s.submit(task(5))  # a task waiting here goes to the idle engine first: nothing moves
    assert s.movable() == set()
    assert sent(s) == [("t5", 1)] and s.movable() == set()


def test_a_paused_engine_is_not_idle_so_no_queued_task_is_moved_for_it():
    """A frozen engine is paused with nothing left on it: it takes nothing, so the busy engines
    are not asked to give back what they queued (they got it back, again and again, and under
    load ran copies of it); once it runs again it is idle like any other."""
    s = engines(make_scheduler("leastload", 2), 0, 1, 2)
    for i in range(6):
        s.submit(task(i))
    sent(s)  # two each
    s.pause(2)
    s.finished(2), s.finished(2)  # its tasks moved off it
    assert s.idle == set() and s.backlog == {0, 1} and s.movable() == set()
    s.resume(2)
    assert s.idle == {2} and s.movable() == {0, 1}
