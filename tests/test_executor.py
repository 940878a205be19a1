"""`ViewExecutor`: the `concurrent.futures.Executor` contract on a view."""

from __future__ import annotations

import concurrent.futures
import gc
import weakref

import pytest

import ipcluster as ipp
from tests.conftest import wait_until


def square(x):
    return x * x


def nap(seconds):
    import time

    time.sleep(seconds)  # the work itself: a task that runs until it is stopped
    return seconds


def announced_nap(seconds):
    """`nap`, saying first that it started (the client sees it as the task's data)."""
    from ipcluster.datapub import publish_data

    publish_data({"started": True})
    return nap(seconds)


def test_as_completed_yields_every_future_of_a_generator(rc):
    ex = rc.executor()
    done = list(concurrent.futures.as_completed(ex.submit(square, i) for i in range(100)))
    assert len(done) == 100
    assert sorted(f.result() for f in done) == [i * i for i in range(100)]
    ex.shutdown()


def test_stdlib_wait_on_its_futures(rc):
    with rc.executor() as ex:
        futures = [ex.submit(square, i) for i in range(20)]
        done, not_done = concurrent.futures.wait(futures, timeout=60)
        assert len(done) == 20 and not not_done
        first, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
        assert first


def test_map_is_in_order_and_sends_chunksize_items_per_task(rc):
    with rc.executor() as ex:
        before = len(rc.history)
        assert list(ex.map(square, range(40), chunksize=10)) == [i * i for i in range(40)]
        assert len(rc.history) - before == 4
        assert list(ex.map(pow, range(5), range(5))) == [i**i for i in range(5)]
        assert list(ex.map(square, [])) == []


def test_map_over_a_direct_view(rc):
    with rc[:].executor as ex:
        assert list(ex.map(square, range(10))) == [i * i for i in range(10)]


def last_task(rc):
    return rc.get_result(rc.history[-1], block=False)


def test_map_timeout_raises_and_aborts_the_rest(rc):
    ex = rc.executor()
    results = ex.map(nap, [0, 60], timeout=1)
    assert next(results) == 0
    with pytest.raises(concurrent.futures.TimeoutError, match="after 1 s"):
        next(results)
    assert isinstance(last_task(rc).exception(timeout=60), ipp.TaskAborted)
    ex.shutdown()
    assert rc.load_balanced_view().apply_sync(square, 3) == 9


def test_map_yields_results_as_they_arrive_and_closing_it_aborts_the_rest(rc):
    ex = rc.executor()
    results = ex.map(nap, [0, 60])
    assert next(results) == 0
    assert not last_task(rc).done()  # the first result came before the map was done
    results.close()
    assert isinstance(last_task(rc).exception(timeout=60), ipp.TaskAborted)
    ex.shutdown()


def _outcomes(executor, seconds: float, n: int, started, f=nap) -> tuple[set, int]:
    """What shutdown(cancel_futures=True) leaves: each future's state, and how many ran."""
    futures = [executor.submit(f, seconds) for _ in range(n)]
    wait_until(lambda: started(futures))  # the first ones run, the rest wait their turn
    executor.shutdown(wait=True, cancel_futures=True)
    states = {"cancelled" if f.cancelled() else "result" if f.exception() is None else "error"
              for f in futures}
    return states, sum(not f.cancelled() for f in futures)


def test_shutdown_cancel_futures_cancels_pending_ones_and_lets_running_ones_finish(rc):
    # the oracle: the stdlib's own pool with as many workers as there are engines
    n = 3 * len(rc.ids)
    with concurrent.futures.ThreadPoolExecutor(len(rc.ids)) as pool:
        expected, _ = _outcomes(pool, 1.0, n, lambda fs: sum(f.running() for f in fs) == len(rc.ids))
    ex = rc.executor()
    # started on every engine, not only sent to it ("busy" in engine_info): a task sent but not
    # started when the cancel comes is rightly cancelled
    states, ran = _outcomes(ex, 1.0, n, lambda fs: sum(
        bool(f.data.get("started")) for f in fs) == len(rc.ids), announced_nap)
    assert states == expected == {"cancelled", "result"}  # no error: nothing interrupted
    assert len(rc.ids) <= ran < n
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(square, [1])


def test_shutdown_without_wait_leaves_the_work_running(rc):
    ex = rc.executor()
    future = ex.submit(nap, 0.2)
    ex.shutdown(wait=False)
    assert future.result(timeout=60) == 0.2


def raise_(exc):
    raise exc


@pytest.mark.parametrize("exc", [ZeroDivisionError("boom"), KeyError("k"), ValueError(1, 2),
                                 KeyboardInterrupt(), SystemExit(3)])
def test_result_raises_the_calls_own_exception_as_the_stdlib_pool(rc, exc):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(raise_, exc).result()
        except BaseException as e:  # the oracle: what the stdlib raises
            expected = e
    future = rc.executor().submit(raise_, exc)
    with pytest.raises(BaseException) as info:
        future.result(timeout=30)
    got = info.value
    if isinstance(expected, Exception):  # caught by its own class, and as a RemoteError
        assert isinstance(got, type(expected)) and isinstance(got, ipp.RemoteError)
        assert got.args[1] == str(expected)  # evalue
    else:  # a remote Ctrl-C or exit must not look like a local one
        assert type(got) is ipp.RemoteError and got.ename == type(expected).__name__


class Big:
    pass


def test_map_drops_each_result_once_yielded_as_the_stdlib_map(rc):
    def refs(executor):
        results = executor.map(lambda i: Big(), range(4))
        first = weakref.ref(next(results))
        gc.collect()
        alive = first() is not None
        list(results)
        return alive

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert refs(pool) is False  # the oracle
    assert refs(rc.executor()) is False


def test_view_executor_is_one_per_view(rc):
    view = rc.load_balanced_view()
    assert view.executor is view.executor
    assert rc.load_balanced_view().executor is not view.executor


def test_map_leaves_nothing_in_the_client_once_read_but_ids_in_its_history(rc):
    before = len(rc.history)
    assert list(rc.executor().map(abs, range(-20, 0), chunksize=5)) == list(range(20, 0, -1))
    ids = rc.history[before:]
    assert len(ids) == 4 and not any(i in rc._futures or i in rc.metadata for i in ids)
