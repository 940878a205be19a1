"""`ViewExecutor`: the `concurrent.futures.Executor` contract on a view."""

from __future__ import annotations

import concurrent.futures
import pytest

import ipcluster as ipp


def square(x):
    return x * x


def nap(seconds):
    import time

    time.sleep(seconds)  # the work itself: a task that runs until it is stopped
    return seconds


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


def test_shutdown_cancel_futures_aborts_queued_and_running_work(rc):
    ex = rc.executor()
    futures = [ex.submit(nap, 60) for _ in range(2 * len(rc.ids))]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    assert all(isinstance(f.exception(), ipp.TaskAborted) for f in futures)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(square, [1])


def test_shutdown_without_wait_leaves_the_work_running(rc):
    ex = rc.executor()
    future = ex.submit(nap, 0.2)
    ex.shutdown(wait=False)
    assert future.result(timeout=60) == 0.2
