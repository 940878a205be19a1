"""Dask on the engines: `rc.become_dask()` / `rc.stop_dask()` and `view.dask_get`."""

from __future__ import annotations

import os
import threading

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import ipcluster as ipp
from ipcluster.engine import daskworker


def dask_threads():
    import threading

    return [t.name for t in threading.enumerate() if t.name == "ipcluster-dask"]


def from_namespace(name):
    from ipcluster import namespace

    return namespace.user_ns[name]


def assert_engines_as_before(rc):
    assert rc[:].apply_sync(daskworker.status) == [{"scheduler": None, "worker": None}] * len(rc)
    assert rc[:].apply_sync(dask_threads) == [[]] * len(rc)
    assert rc[:].apply_sync(lambda: 1) == [1] * len(rc)


@pytest.mark.timeout(300)
def test_become_dask_computes_an_array_and_a_dataframe_groupby_then_stop_dask(rc):
    dc = rc.become_dask()
    try:
        assert len(dc.scheduler_info()["workers"]) == 4
        # the workers are the engines: same processes, same namespace
        assert sorted(dc.run(os.getpid).values()) == sorted(rc[:].apply_sync(os.getpid))
        rc[:].push({"shared": 42}, block=True)
        assert dc.submit(from_namespace, "shared").result(timeout=60) == 42

        x = da.arange(100_000, chunks=5_000)
        assert dc.compute((x * x).sum()).result(timeout=120) == int((np.arange(100_000) ** 2).sum())
        y = da.random.default_rng(0).random((400, 400), chunks=(100, 100))
        assert np.allclose(dc.compute((y @ y.T).mean()).result(timeout=120),
                           (y.compute() @ y.compute().T).mean())

        df = pd.DataFrame({"key": [i % 7 for i in range(5000)], "value": np.arange(5000.0)})
        ddf = dd.from_pandas(df, npartitions=10)
        got = dc.compute(ddf.groupby("key").value.agg(["sum", "mean", "count"])).result(timeout=120)
        pd.testing.assert_frame_equal(got.sort_index(),
                                      df.groupby("key").value.agg(["sum", "mean", "count"]))
    finally:
        rc.stop_dask()
    assert dc.status == "closed"
    assert_engines_as_before(rc)


@pytest.mark.timeout(300)
def test_become_dask_on_some_engines_twice_is_refused_stop_twice_is_fine(rc):
    dc = rc.become_dask(targets=[1, 2], nthreads=2)
    try:
        workers = dc.scheduler_info()["workers"].values()
        assert sorted(w["name"] for w in workers) == ["engine-1", "engine-2"]
        assert [w["nthreads"] for w in workers] == [2, 2]
        assert rc[1].apply_sync(daskworker.status)["scheduler"] == dc.scheduler.address
        with pytest.raises(RuntimeError, match="stop_dask"):
            rc.become_dask()
    finally:
        rc.stop_dask()
    rc.stop_dask()
    assert_engines_as_before(rc)


@pytest.mark.timeout(300)
def test_become_dask_with_a_nanny_stops_its_worker_process(rc):
    dc = rc.become_dask(targets=[0], nanny=True)
    try:
        (pid,) = dc.run(os.getpid).values()
        assert pid != rc[0].apply_sync(os.getpid)
        assert dc.submit(sum, [1, 2, 3]).result(timeout=60) == 6
    finally:
        rc.stop_dask()
    assert_engines_as_before(rc)  # and the leak check sees no worker process left


def test_become_dask_with_no_engines_says_so(rc):
    with pytest.raises(ValueError, match="at least one engine"):
        rc.become_dask(targets=[])


# -- view.dask_get ------------------------------------------------------------------------------

@dask.delayed
def leaf(i):
    return i


@dask.delayed
def add(a, b):
    return a + b


def tree_sum(n):
    """A graph of 2n - 1 tasks: n leaves and n - 1 additions, each waiting on two others."""
    level = [leaf(i) for i in range(n)]
    while len(level) > 1:
        level = [add(*level[i:i + 2]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


@pytest.mark.timeout(300)
def test_dask_get_runs_a_graph_of_1000_tasks_with_its_dependencies(rc):
    total = tree_sum(501)
    assert len(total.__dask_graph__()) == 1001
    view = rc.load_balanced_view()
    assert total.compute(scheduler=view.dask_get) == sum(range(501))
    assert dask.compute(total, scheduler=view.dask_get) == (sum(range(501)),)
    with dask.config.set(scheduler=view.dask_get):
        assert total.compute() == sum(range(501))


def engine_pid(x):
    import os

    return x, os.getpid()


def test_dask_get_runs_tasks_on_the_engines_of_the_view(rc):
    view = rc.load_balanced_view(targets=[3])
    pids = dask.compute(*[dask.delayed(engine_pid)(i) for i in range(8)], scheduler=view.dask_get)
    assert [x for x, _ in pids] == list(range(8))
    assert {pid for _, pid in pids} == {rc[3].apply_sync(os.getpid)}


def test_dask_get_computes_collections(rc):
    view = rc.load_balanced_view()
    x = da.ones((400, 400), chunks=(100, 100))
    assert (x + x.T).sum().compute(scheduler=view.dask_get) == 2 * 400 * 400
    df = pd.DataFrame({"key": [i % 3 for i in range(300)], "value": range(300)})
    got = dd.from_pandas(df, npartitions=6).groupby("key").value.sum().compute(scheduler=view.dask_get)
    pd.testing.assert_series_equal(got.sort_index(), df.groupby("key").value.sum())


def fails_on(i, bad):
    if i == bad:
        raise ValueError(f"item {i} is bad")
    return i


def test_dask_get_raises_a_failing_task_and_the_view_goes_on(rc):
    view = rc.load_balanced_view()
    items = [dask.delayed(fails_on)(i, 5) for i in range(20)]
    with pytest.raises(ipp.RemoteError, match="item 5 is bad") as info:
        dask.compute(*items, scheduler=view.dask_get)
    assert info.value.ename == "ValueError"
    assert dask.compute(*items[:5], scheduler=view.dask_get) == (0, 1, 2, 3, 4)


def test_dask_get_chunksize_sends_several_tasks_per_message(rc):
    view = rc.load_balanced_view()
    before = len(rc.history)
    values = dask.compute(*[dask.delayed(fails_on)(i, -1) for i in range(40)],
                          scheduler=view.dask_get, chunksize=10)
    assert values == tuple(range(40))
    assert len(rc.history) - before <= 40 // 10 + len(rc.ids)


def test_dask_get_takes_the_keywords_dask_passes_to_a_scheduler(rc):
    view = rc.load_balanced_view()
    total = dask.delayed(sum)([dask.delayed(fails_on)(i, -1) for i in range(12)])
    # the oracle: dask's threaded scheduler, given the same keywords
    expected = dask.compute(total, scheduler="threads", num_workers=2)
    assert dask.compute(total, scheduler=view.dask_get, num_workers=2) == expected
    assert dask.compute(total, scheduler=view.dask_get, num_workers=2, pool=None) == expected


def test_dask_get_raises_the_failing_tasks_own_exception(rc):
    view = rc.load_balanced_view()
    items = [dask.delayed(fails_on)(i, 3) for i in range(8)]
    with pytest.raises(Exception) as oracle:  # dask's synchronous scheduler, in this process
        dask.compute(*items, scheduler="sync")
    with pytest.raises(type(oracle.value), match=str(oracle.value)):
        dask.compute(*items, scheduler=view.dask_get)
