"""Views: apply, map, push, pull and execute on a real cluster, with their results and errors."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import ipcluster
from ipcluster import RemoteError


def test_apply_on_all_engines_runs_once_per_engine(rc):
    pids = rc[:].apply_sync(os.getpid)
    assert len(pids) == 4 and len(set(pids)) == 4
    assert os.getpid() not in pids


def test_single_engine_view_returns_a_single_value(rc):
    assert rc[2].apply_sync(lambda: 41 + 1) == 42
    assert rc[-1].apply_sync(lambda x: x, "last") == "last"


def test_apply_keyword_arguments_belong_to_the_function(rc):
    def f(a, block=None, targets=None):
        return (a, block, targets)

    assert rc[0].apply_sync(f, 1, block="mine", targets="also mine") == (1, "mine", "also mine")


def test_block_flag_on_view_and_per_call(rc):
    view = rc[:]
    assert isinstance(view.apply(os.getpid), ipcluster.AsyncResult)
    view.block = True
    assert isinstance(view.apply(os.getpid), list)
    assert isinstance(view.push({"x": 1}, block=False), ipcluster.AsyncResult)
    assert view.pull("x", block=True) == [1, 1, 1, 1]


def test_load_balanced_map_is_correct_and_ordered(rc):
    view = rc.load_balanced_view()
    assert view.map_sync(lambda x: x**2, range(1000)) == [x**2 for x in range(1000)]


def test_load_balanced_map_spreads_over_engines(rc):
    import time

    def where(x):
        time.sleep(0.02)
        return os.getpid()

    pids = rc.load_balanced_view().map_sync(where, range(40), chunksize=1)
    assert len(set(pids)) == 4


def test_direct_map_uses_one_chunk_per_engine_in_order(rc):
    out = rc[:].map_sync(lambda x, y: (x + y, os.getpid()), range(10), range(10, 20))
    assert [v for v, _ in out] == [x + y for x, y in zip(range(10), range(10, 20))]
    assert len({pid for _, pid in out}) == 4


def test_map_stops_at_the_shortest_iterable_as_builtin_map(rc):
    def f(a, b):
        return a * b

    squares = (x * x for x in range(5))  # a generator: read once
    for view in (rc.load_balanced_view(), rc[:]):
        assert view.map_sync(f, [1, 2, 3], [1, 2]) == list(map(f, [1, 2, 3], [1, 2]))
        assert view.map_sync(f, iter(range(4)), range(10)) == list(map(f, range(4), range(10)))
        ar = view.map_async(f, range(7), range(9))
        assert len(ar) == 7 and ar.get(timeout=30) == list(map(f, range(7), range(9)))
    assert rc.load_balanced_view().map_sync(abs, squares) == [0, 1, 4, 9, 16]


def test_push_pull_round_trips_a_large_array_to_every_engine(rc):
    a = np.arange(10**7)
    rc[:].push({"a": a}, block=True)
    pulled = rc[:].pull("a", block=True)
    assert len(pulled) == 4
    for b in pulled:
        assert b.dtype == a.dtype and np.array_equal(a, b)
        b[0] = -1  # arrays arrive writable
    total = ipcluster.interactive(lambda: int(a.sum()))  # `a` as pushed, on the engine
    assert rc[:].apply_sync(total) == [int(np.arange(10**7).sum())] * 4


def test_pull_of_several_names(rc):
    rc[:].push({"p": 1, "q": "two"}, block=True)
    assert rc[0].pull(["p", "q"], block=True) == [1, "two"]


def test_execute_runs_code_in_the_engine_namespace(rc):
    rc[:].execute("import math\nroot = math.sqrt(16)", block=True)
    assert rc[:].pull("root", block=True) == [4.0] * 4
    assert rc[1].apply_sync(ipcluster.interactive(lambda: root + 1)) == 5.0  # noqa: F821


def test_pushed_functions_and_their_defaults_work_remotely(rc):
    def scale(x, factor=3):
        return x * factor

    rc[:].push({"scale": scale}, block=True)
    rc[:].execute("r = scale(5)", block=True)
    assert rc[:].pull("r", block=True) == [15] * 4


def test_remote_exception_carries_engine_id_and_traceback(rc):
    def fail(x):
        return 1 / x

    with pytest.raises(RemoteError) as info:
        rc[3].apply_sync(fail, 0)
    err = info.value
    assert err.ename == "ZeroDivisionError" and err.engine_id == 3
    assert "1 / x" in err.traceback and "in fail" in err.traceback
    assert "[engine 3] ZeroDivisionError" in str(err)
    assert "1 / x" in str(err.__cause__)


def test_failures_on_several_engines_give_a_composite_error(rc):
    with pytest.raises(ipcluster.CompositeError) as info:
        rc[:].apply_sync(lambda: 1 / 0)
    assert sorted(e.engine_id for e in info.value.errors) == rc.ids
    assert "4 tasks raised errors on engines 0, 1, 2, 3:" in str(info.value)


def test_a_composite_error_counts_tasks_not_engines(rc):
    view = rc.load_balanced_view(targets=[0, 1])
    with pytest.raises(ipcluster.CompositeError) as info:
        view.map_sync(lambda x: 1 / 0, range(6), chunksize=1)
    assert len(info.value.errors) == 6
    assert str(info.value).startswith("6 tasks raised errors on engine")


def test_pull_of_a_missing_name_names_the_engine(rc):
    rc[0].push({"only_here": 1}, block=True)
    with pytest.raises(RemoteError) as info:
        rc[1].pull("only_here", block=True)
    assert info.value.ename == "NameError" and info.value.engine_id == 1
    assert "only_here" in str(info.value)


def test_stdout_and_stderr_are_captured_per_task(rc):
    import sys

    def talk(i):
        print("out", i)
        print("err", i, file=sys.stderr)
        return i

    ar = rc[:].apply_async(talk, 7)
    assert ar.get(timeout=10) == [7] * 4
    assert ar.stdout == ["out 7\n"] * 4
    assert ar.stderr == ["err 7\n"] * 4
    assert ar.engine_id == rc.ids


def test_async_result_is_a_future_with_metadata(rc):
    import concurrent.futures

    ar = rc[0].apply_async(lambda: "done")
    assert isinstance(ar, concurrent.futures.Future)
    assert ar.get(timeout=10) == "done" and ar.ready() and ar.successful()
    assert ar.wait(0) is True
    meta = ar.metadata
    assert meta["engine_id"] == 0 and meta["status"] == "ok"
    assert meta["submitted"] <= meta["started"] <= meta["completed"] <= meta["received"]
    assert len(ar.msg_ids) == 1


def test_get_with_timeout_on_unfinished_work_raises_timeout_error(rc):
    import time

    ar = rc[0].apply_async(time.sleep, 1)
    with pytest.raises(TimeoutError):
        ar.get(timeout=0.1)
    assert ar.get(timeout=10) is None


def test_await_in_a_running_event_loop(rc):
    import asyncio

    async def main():
        return await rc[1].apply_async(lambda: "awaited")

    assert asyncio.run(main()) == "awaited"


def test_calls_from_many_threads_are_safe(rc):
    view = rc.load_balanced_view()
    results = {}

    def worker(k):
        results[k] = [view.apply_sync(lambda i: i * i, i) for i in range(50)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(results[k] == [i * i for i in range(50)] for k in range(4))
