"""`ipcluster.register_joblib_backend()`: joblib.Parallel on the engines."""

from __future__ import annotations

import os

import joblib
import pytest
from joblib import Parallel, delayed

import ipcluster
from ipcluster.joblib_backend import IpclusterBackend

ipcluster.register_joblib_backend()


def square_and_pid(i):
    import os

    return i * i, os.getpid()


def fails_on_seven(i):
    if i == 7:
        raise KeyError(f"no item {i}")
    return i


def test_parallel_runs_on_the_engines_of_a_given_view(rc):
    engine_pids = set(rc[:].apply_sync(os.getpid))
    with joblib.parallel_config("ipcluster", view=rc.load_balanced_view()):
        out = Parallel(n_jobs=-1)(delayed(square_and_pid)(i) for i in range(1000))
    assert [v for v, _ in out] == [i * i for i in range(1000)]
    assert {pid for _, pid in out} <= engine_pids and len({pid for _, pid in out}) > 1
    assert rc[:].apply_sync(lambda: 1) == [1] * 4  # a given view is left as it was


def test_n_jobs_counts_engines(rc):
    backend = IpclusterBackend(client=rc)
    assert backend.configure(n_jobs=-1) == 4
    assert backend.configure(n_jobs=2) == 2
    assert backend.configure(n_jobs=99) == 4
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.configure(n_jobs=0)
    with pytest.raises(ValueError, match="not both"):
        IpclusterBackend(rc.load_balanced_view(), client=rc)


def test_a_failing_task_raises_its_own_exception_and_the_engines_go_on(rc):
    with joblib.parallel_config("ipcluster", client=rc):
        with pytest.raises(KeyError, match="no item 7"):
            Parallel(n_jobs=-1, batch_size=1)(delayed(fails_on_seven)(i) for i in range(50))
        assert Parallel()(delayed(fails_on_seven)(i) for i in range(5)) == list(range(5))


@pytest.mark.timeout(300)
def test_without_a_view_each_call_starts_and_stops_a_local_cluster():
    # the leak check (conftest) fails this test if a controller or engine is left behind
    with joblib.parallel_config("ipcluster"):
        out = Parallel(n_jobs=-1)(delayed(square_and_pid)(i) for i in range(1000))
    assert [v for v, _ in out] == [i * i for i in range(1000)]
    assert os.getpid() not in {pid for _, pid in out}
    with joblib.parallel_config("ipcluster", n=2):
        with pytest.raises(KeyError, match="no item 7"):
            Parallel(n_jobs=-1)(delayed(fails_on_seven)(i) for i in range(20))


@pytest.mark.timeout(300)
def test_a_parallel_block_keeps_one_cluster_for_its_calls():
    with joblib.parallel_config("ipcluster", n=2):
        with Parallel(n_jobs=-1) as parallel:
            first = {pid for _, pid in parallel(delayed(square_and_pid)(i) for i in range(20))}
            second = {pid for _, pid in parallel(delayed(square_and_pid)(i) for i in range(20))}
    assert len(first | second) <= 2 and first & second  # the same two engines, twice


def nested_sqrt(n):
    """A task that itself uses joblib with the ipcluster backend, on the engine it runs on."""
    import math

    import joblib
    import psutil

    import ipcluster

    ipcluster.register_joblib_backend()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with joblib.parallel_config("ipcluster"):
        values = joblib.Parallel(n_jobs=2)(joblib.delayed(math.sqrt)(i) for i in range(n))
    return values, len({p.pid for p in psutil.Process().children(recursive=True)} - before)


def test_nested_parallel_config_inside_a_task_runs_on_its_engine(rc):
    import math

    # the oracle: joblib's own process backends fall back to sequential inside their workers
    expected = Parallel(backend="sequential")(delayed(math.sqrt)(i) for i in range(6))
    values, children = rc.load_balanced_view().apply_sync(nested_sqrt, 6)
    assert values == expected
    assert children == 0  # no cluster started inside the cluster


def test_terminate_resets_auto_batching_as_joblibs_own_backends(rc):
    from joblib._parallel_backends import MultiprocessingBackend

    def after_terminate(backend):
        backend._effective_batch_size, backend._smoothed_batch_duration = 16, 2.5
        backend.terminate()
        return backend._effective_batch_size, backend._smoothed_batch_duration

    oracle = after_terminate(MultiprocessingBackend())
    assert after_terminate(IpclusterBackend(rc.load_balanced_view())) == oracle
