"""Processes layer: a dask.distributed scheduler and worker inside an engine process.

`ipcluster.daskbridge` sends these functions to engines. Each engine that joins runs one
event loop on its own thread, owned by this module: the worker (and, on one engine, the
scheduler) live on it, so the engine's main thread stays free to serve ``apply``. Dask tasks
run in the engine process and see the engine's namespace. `stop` closes what was started and
joins the thread; the engine is as it was before.
"""

from __future__ import annotations

import asyncio
import threading

# seconds to wait for the scheduler or a worker to start or to close
TIMEOUT = 60.0


class LoopThread:
    """An asyncio event loop running on a daemon thread (daemon: an engine told to exit while
    dask still runs exits all the same)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="ipcluster-dask", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro):
        """Run `coro` on the loop and wait for its value."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


_loop: LoopThread | None = None
_scheduler = None  # distributed.Scheduler on this engine, if any
_worker = None  # distributed.Worker or Nanny on this engine, if any
_started_tracker = False  # True if a nanny's worker process started multiprocessing's tracker


def _running_loop() -> LoopThread:
    global _loop
    if _loop is None:
        _loop = LoopThread()
    return _loop


def start_scheduler(**scheduler_args) -> str:
    """Start a scheduler on this engine; its address (``tcp://host:port``)."""
    global _scheduler
    if _scheduler is not None:
        raise RuntimeError(f"a dask scheduler already runs on this engine at "
                           f"{_scheduler.address}; call rc.stop_dask() first")
    from distributed import Scheduler

    async def start():
        # built inside the loop: distributed binds its objects to the loop current at creation
        return await Scheduler(**scheduler_args)

    _scheduler = _running_loop().run(start())
    return _scheduler.address


def start_worker(scheduler_address: str, nanny: bool = False, **worker_args) -> str:
    """Start a worker (in this process, or with `nanny` in a child process that the nanny
    restarts) connected to `scheduler_address`; the worker's address."""
    global _worker, _started_tracker
    if _worker is not None:
        raise RuntimeError(f"a dask worker already runs on this engine at {_worker.address}; "
                           "call rc.stop_dask() first")
    from ipcluster import namespace
    import distributed

    worker_args.setdefault("nthreads", 1)  # one engine is one core's worth of work
    worker_args.setdefault("name", f"engine-{namespace.engine_id}")
    kind = distributed.Nanny if nanny else distributed.Worker

    async def start():
        return await kind(scheduler_address, **worker_args)

    from multiprocessing import resource_tracker

    tracker_was_running = resource_tracker._resource_tracker._pid is not None
    _worker = _running_loop().run(start())
    _started_tracker = nanny and not tracker_was_running
    namespace.user_ns["distributed_worker"] = _worker  # as ipyparallel's become_dask names it
    return _worker.address


def stop_worker() -> None:
    """Close this engine's worker (if any); stop the loop if nothing else runs on it."""
    global _worker, _started_tracker
    if _worker is not None:
        worker, _worker = _worker, None
        from ipcluster import namespace

        namespace.user_ns.pop("distributed_worker", None)
        _running_loop().run(worker.close())
    if _started_tracker:
        # the nanny's worker process started multiprocessing's resource tracker, a process
        # that would otherwise outlive dask until the engine exits
        from multiprocessing import resource_tracker

        resource_tracker._resource_tracker._stop()
        _started_tracker = False
    _stop_loop_if_idle()


def stop_scheduler() -> None:
    """Close this engine's scheduler (if any); stop the loop if nothing else runs on it."""
    global _scheduler
    if _scheduler is not None:
        scheduler, _scheduler = _scheduler, None
        _running_loop().run(scheduler.close())
    _stop_loop_if_idle()


def _stop_loop_if_idle() -> None:
    global _loop
    if _loop is not None and _worker is None and _scheduler is None:
        loop, _loop = _loop, None
        loop.stop()


def status() -> dict:
    """What runs here: ``{"scheduler": address or None, "worker": address or None}``."""
    return {"scheduler": None if _scheduler is None else _scheduler.address,
            "worker": None if _worker is None else _worker.address}
