"""Client API layer: Dask on the cluster, two ways.

- `become_dask`: a ``distributed`` scheduler on one engine and a worker in each chosen engine
  (`ipcluster.engine.daskworker`), and a ``distributed.Client`` connected to them. The workers
  share their engine's process and namespace; `stop_dask` closes them and the engines go on
  serving ``apply``. Reached as ``rc.become_dask()`` and ``rc.stop_dask()``.
- `get`: a dask scheduler function over a load-balanced view, for dask collections without
  the distributed scheduler: ``dask.compute(x, scheduler=view.dask_get)``.

`get` is dask's own local scheduler (`dask.local.get_async`) with the view's executor as its
pool: a task is sent once all its dependencies are done, with only its own node of the graph
and the values of its dependencies. Results come back to the client, which passes them on to
the tasks that need them and forgets each once its dependents are done. For intermediate
results too large to travel through the client, use `become_dask`.
"""

from __future__ import annotations

import math

from ipcluster.engine import daskworker

__all__ = ["DaskOnEngines", "become_dask", "get"]


def get(view, dsk, keys, *, chunksize: int = 1, num_workers: int | None = None, pool=None,
        **kwargs):
    """Compute `keys` of the dask graph `dsk` on `view` (a `LoadBalancedView`).

    Up to two messages per engine are in flight, so an engine finds its next task waiting
    when it finishes one; each message carries `chunksize` ready tasks (more for a graph of
    many tiny tasks, fewer round trips). As dask's own schedulers: `num_workers` bounds the
    tasks in flight, `pool` is taken and not used (the engines are the pool), other keywords
    go to `dask.local.get_async` (``callbacks=``, ...); a failing task raises its own
    exception (a `RemoteError` that is also an instance of the task's exception class).
    """
    from dask.local import get_async

    from ipcluster.executor import ViewExecutor

    in_flight = num_workers or 2 * max(1, len(view))
    executor = ViewExecutor(view)  # its own: shut down at the end, the view's goes on
    try:
        return get_async(executor.submit, in_flight, dsk, keys, chunksize=chunksize, **kwargs)
    finally:
        # after a failure, the tasks still out are of no use to anyone
        executor.shutdown(wait=False, cancel_futures=True)


class DaskOnEngines:
    """A distributed scheduler and workers started in engines, and a client connected to them."""

    def __init__(self, rc, scheduler_engine: int, worker_engines: list[int], client) -> None:
        self.rc = rc
        self.scheduler_engine = scheduler_engine
        self.worker_engines = worker_engines
        self.client = client  # the distributed.Client

    @property
    def scheduler_address(self) -> str:
        return self.client.scheduler.address

    def stop(self) -> None:
        """Close the client, then the workers, then the scheduler; the engines stay up."""
        self.client.close()
        workers = self.rc[self.worker_engines].apply_async(daskworker.stop_worker)
        workers.get(daskworker.TIMEOUT)
        self.rc[self.scheduler_engine].apply_async(daskworker.stop_scheduler).get(daskworker.TIMEOUT)

    def __repr__(self) -> str:
        return (f"<DaskOnEngines scheduler on engine {self.scheduler_engine}, workers on "
                f"engines {self.worker_engines}>")


def become_dask(rc, targets="all", nanny: bool = False, scheduler_args: dict | None = None,
                **worker_args) -> DaskOnEngines:
    """Start a scheduler in the first of `targets` and a worker in each of them.

    `worker_args` go to ``distributed.Worker`` (or ``Nanny``): by default one thread per
    worker, named ``engine-<id>``. With `nanny`, each worker runs in a child process of its
    engine, which the nanny restarts if it dies; the worker then does not share the engine's
    namespace. If a step fails, what was started is stopped again.
    """
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("become_dask needs the `distributed` package on the client and the "
                          "engines; install it with `pip install distributed`") from exc
    ids = rc.direct_view(targets)._target_list()
    if not ids:
        raise ValueError(f"become_dask needs at least one engine; targets {targets!r} name none "
                         f"(registered engines: {rc.ids})")
    address = rc[ids[0]].apply_async(daskworker.start_scheduler,
                                     **(scheduler_args or {})).get(daskworker.TIMEOUT)
    try:
        rc[ids].apply_async(daskworker.start_worker, address, nanny=nanny,
                            **worker_args).get(daskworker.TIMEOUT)
        client = distributed.Client(address, timeout=math.ceil(daskworker.TIMEOUT))
    except BaseException:
        rc[ids].apply_async(daskworker.stop_worker).get(daskworker.TIMEOUT)
        rc[ids[0]].apply_async(daskworker.stop_scheduler).get(daskworker.TIMEOUT)
        raise
    try:
        client.wait_for_workers(len(ids), timeout=daskworker.TIMEOUT)
    except BaseException:
        DaskOnEngines(rc, ids[0], ids, client).stop()
        raise
    return DaskOnEngines(rc, ids[0], ids, client)
