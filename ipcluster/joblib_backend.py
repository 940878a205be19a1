"""Client API layer: a joblib backend, so that ``joblib.Parallel`` runs on the engines.

    import joblib
    import ipcluster

    ipcluster.register_joblib_backend()
    with joblib.parallel_config("ipcluster"):  # a local cluster per call
        joblib.Parallel(n_jobs=-1)(joblib.delayed(f)(i) for i in range(99))
    view = rc.load_balanced_view()  # or a running cluster's engines
    with joblib.parallel_config("ipcluster", view=view):
        ...

Given no view, each ``Parallel`` call starts a local cluster (`Cluster`, one engine per core
or `n`) when it begins and stops it when it ends, also on error; a ``with Parallel(...)``
block keeps one cluster for all its calls. joblib batches tiny tasks itself (auto-batching),
and a task that fails raises its original exception, as with joblib's own backends.
"""

from __future__ import annotations

import functools

from joblib._parallel_backends import (AutoBatchingMixin, FallbackToBackend, ParallelBackendBase,
                                       SequentialBackend)
from joblib._utils import _retrieve_traceback_capturing_wrapped_call, _TracebackCapturingWrapper

from ipcluster import namespace

__all__ = ["IpclusterBackend", "register"]


class IpclusterBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's tasks on a load-balanced view: `view`, one of `client`'s, or a local cluster
    of `n` engines started for each call (the default)."""

    supports_retrieve_callback = True  # results arrive through the futures' callbacks
    default_n_jobs = -1  # all engines

    def __init__(self, view=None, *, client=None, n: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if view is not None and client is not None:
            raise ValueError("give the ipcluster joblib backend a view or a client, not both")
        self._given_view = view if client is None else client.load_balanced_view()
        self._n = n
        self._cluster = None  # the local cluster this backend started, if any
        self._view = self._given_view
        self._pending: set = set()  # futures of this backend's unfinished tasks, to abort

    def configure(self, n_jobs=1, parallel=None, **backend_kwargs) -> int:
        self.parallel = parallel
        if self._view is None and namespace.engine_id is not None:
            # inside a task on an engine: no cluster within the cluster; the calls run here,
            # one after the other, as joblib's process backends do inside their workers
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        if self._view is None:
            self._start_cluster()
        return self.effective_n_jobs(n_jobs)

    def _start_cluster(self) -> None:
        from ipcluster.cluster import Cluster

        cluster = Cluster(n=self._n)
        try:
            client = cluster.start_and_connect_sync()
        except BaseException:
            cluster.stop_cluster_sync()
            raise
        self._cluster = cluster
        self._view = client.load_balanced_view()

    def effective_n_jobs(self, n_jobs) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        engines = len(self._view) if self._view is not None else (self._n or 1)
        if n_jobs is None or n_jobs < 0:
            return max(1, engines)
        return min(n_jobs, max(1, engines))

    def submit(self, func, callback=None):
        # the wrapper returns a task's exception (with its traceback as text) as a value, so
        # it reaches the caller as the original exception rather than as a RemoteError
        future = self._view.apply_async(_TracebackCapturingWrapper(func))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out):
        return _retrieve_traceback_capturing_wrapped_call(out.result())

    def abort_everything(self, ensure_ready: bool = True) -> None:
        pending = [f for f in list(self._pending) if not f.done()]
        if pending:
            self._view.client.abort(pending, block=False)
        if not ensure_ready:
            self.terminate()

    def terminate(self) -> None:
        """Stop the cluster this backend started (if any); a given view stays as it was. The
        auto-batching statistics start afresh, as with joblib's own backends."""
        self.reset_batch_stats()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            self._view = self._given_view
            cluster.stop_cluster_sync()


def register(name: str = "ipcluster", make_default: bool = False, view=None) -> None:
    """Make ``joblib.parallel_config(name)`` (and ``Parallel(backend=name)``) run on the
    engines; keywords of ``parallel_config`` (``view=``, ``client=``, ``n=``) reach the
    backend. Exported as ``ipcluster.register_joblib_backend``; the default name is also
    registered as ``"ipyparallel"``, the name ipyparallel code uses. With `view`, that view is
    the backend's unless ``parallel_config`` gives another (``view.register_joblib_backend``)."""
    from joblib import register_parallel_backend

    factory = IpclusterBackend if view is None else functools.partial(IpclusterBackend, view)
    for each in (name, "ipyparallel") if name == "ipcluster" else (name,):
        register_parallel_backend(each, factory, make_default=make_default and each == name)
