"""Client API layer: views, what users call to run work.

A `DirectView` names its engines: ``rc[0]`` (one engine, single results), ``rc[:]`` (the
engines registered when it was made) or ``rc.direct_view("all")`` (every engine at each call).
A call on several engines is serialized once and fanned out by the controller. A
`LoadBalancedView` (balanced.py) lets the controller choose the engine of each task.

Flags (`block`, `track`, `targets`, `label`, and for load balancing `timeout`, `retries`,
`priority`, `after`, `follow`) are view attributes, set with `set_flags` or for a block with
`temp_flags`; the calls that have their own keywords (`map`, `push`, `pull`, ...) take them
there too. Keyword arguments of `apply` belong to the function, as in ipyparallel.
"""

from __future__ import annotations

import contextlib
import math

from ipcluster import namespace, partition
from ipcluster.asyncresult import AsyncExecuteResult, AsyncMapResult, AsyncResult

__all__ = ["View", "DirectView", "BroadcastView"]


class View:
    flag_names = ("block", "track", "targets", "label")

    def __init__(self, client, targets, *, block: bool = False, track: bool = False,
                 label: str | None = None, **flags) -> None:
        self.client = client
        self.history: list[str] = []  # ids of the tasks sent through this view, in order
        self._executor = None  # made on first use of `executor`
        self.targets = targets
        self.block = block
        self.track = track
        self.label = label
        self.set_flags(**flags)

    # -- flags ------------------------------------------------------------------------------

    def set_flags(self, **flags):
        """Set view flags; an unknown flag lists the valid ones. Returns the view, so that
        calls chain: ``view.set_flags(label="x").map_async(f, seq)``."""
        unknown = sorted(set(flags) - set(self.flag_names))
        if unknown:
            raise TypeError(f"unknown flag(s) {unknown} for {type(self).__name__}; "
                            f"valid flags: {', '.join(self.flag_names)}")
        for name, value in flags.items():
            setattr(self, name, value)
        return self

    def _submit(self, *args, **kwargs):
        tasks, tracker = self.client._submit(*args, **kwargs)
        self.history.extend([t.task_id for t in tasks])
        return tasks, tracker

    @contextlib.contextmanager
    def temp_flags(self, **flags):
        """``with view.temp_flags(block=True, label="x"): ...``: flags for a block only."""
        saved = {name: getattr(self, name) for name in flags if name in self.flag_names}
        self.set_flags(**flags)
        try:
            yield self
        finally:
            self.set_flags(**saved)

    def _flags(self, **overrides) -> dict:
        flags = {name: getattr(self, name) for name in self.flag_names}
        if overrides:
            flags.update({k: v for k, v in overrides.items() if v is not None})
        return flags

    def _finish(self, ar, block: bool | None):
        return ar.get() if (self.block if block is None else block) else ar

    # -- calls ------------------------------------------------------------------------------

    def apply(self, f, /, *args, **kwargs):
        """Call ``f(*args, **kwargs)``; a result if the view blocks, else an `AsyncResult`."""
        call = self.apply_sync if self.block else self.apply_async
        return call(f, *args, **kwargs)

    def apply_sync(self, f, /, *args, **kwargs):
        return self.client._answer(lambda: self.apply_async(f, *args, **kwargs))

    def map_sync(self, f, /, *sequences, **options):
        return self.map(f, *sequences, block=True, **options)

    def map_async(self, f, /, *sequences, **options):
        return self.map(f, *sequences, block=False, **options)

    def remote(self, block: bool | None = None, **flags):
        """Decorator: calling the function runs it on this view (``@view.remote()``)."""
        from ipcluster.remotefunction import RemoteFunction

        return lambda f: RemoteFunction(self, f, block=block, **flags)

    def parallel(self, block: bool | None = None, **flags):
        """Decorator: each engine's call gets its part of the arguments (``@view.parallel()``)."""
        from ipcluster.remotefunction import ParallelFunction

        return lambda f: ParallelFunction(self, f, block=block, **flags)

    @property
    def executor(self):
        """The `concurrent.futures.Executor` of this view (one per view)."""
        from ipcluster.executor import ViewExecutor

        if self._executor is None:
            self._executor = ViewExecutor(self)
        return self._executor

    def wait(self, jobs=None, timeout: float = -1) -> bool:
        """Wait for `jobs` (default: every task sent through this view); True if all done."""
        return self.client.wait(self.history if jobs is None else jobs, timeout)

    def get_result(self, indices_or_msg_ids=None, block: bool | None = None,
                   owner: bool = True):
        """An AsyncResult for earlier tasks; an int indexes this view's `history`."""
        jobs = -1 if indices_or_msg_ids is None else indices_or_msg_ids
        jobs = [self.history[j] if isinstance(j, int) else j
                for j in (jobs if isinstance(jobs, (list, tuple)) else [jobs])]
        return self.client.get_result(jobs, block=block, owner=owner)

    def register_joblib_backend(self, name: str = "ipyparallel", make_default: bool = False):
        """``joblib.Parallel(backend=name)`` runs on this view (`ipcluster.joblib_backend`)."""
        from ipcluster import joblib_backend

        joblib_backend.register(name, make_default, view=self)

    def abort(self, jobs=None, targets=None, block: bool | None = None) -> None:
        self.client.abort(jobs, targets, block=self.block if block is None else block)

    def queue_status(self, targets=None, verbose: bool = False) -> dict:
        return self.client.queue_status(targets if targets is not None else self._status_targets(),
                                        verbose)

    def _status_targets(self):
        return None


class DirectView(View):
    """Work on named engines."""

    def _target_list(self, targets=None) -> list[int]:
        t = self.targets if targets is None else targets
        if t == "all" or t is None:
            return self.client.ids
        return [t] if isinstance(t, int) else list(t)

    def _single(self, targets=None) -> bool:
        return isinstance(self.targets if targets is None else targets, int)

    def __len__(self) -> int:
        return len(self._target_list())

    def _status_targets(self):
        return self._target_list()

    def _call(self, f, args, kwargs, targets=None, reduce=None, kind=None, **flags) -> AsyncResult:
        flags = self._flags(**flags)
        target_list = self._target_list(targets)
        tasks, tracker = self._submit(f, args, kwargs, target_list, balanced=False, flags=flags)
        shape = "single" if self._single(targets) else "list"
        kind = kind or (AsyncResult if reduce is None else AsyncMapResult)
        return kind(tasks, shape, client=self.client, reduce=reduce, tracker=tracker)

    def apply_async(self, f, /, *args, **kwargs) -> AsyncResult:
        return self._call(f, args, kwargs)

    def map_partitions(self, f, /, *sequences, dist: str = "b", chunksize: int | None = None,
                       **flags) -> AsyncResult:
        """`f` once per engine on that engine's part of each sequence, cut by `dist` (``b``:
        blocks, ``c``: round robin); the results are joined in order (`@view.parallel`)."""
        partition.equal_lengths(sequences)
        targets = self._target_list()
        cut = [partition.parts(s, len(targets), dist) for s in sequences]
        tasks, flags = [], self._flags(**flags)
        for eid, parts in zip(targets, zip(*cut)):
            if len(parts[0]):
                new, _ = self._submit(namespace.call_on_partition, (f, *parts), {}, [eid],
                                             balanced=False, flags=flags)
                tasks += new
        return AsyncResult(tasks, "list", client=self.client,
                           reduce=lambda values: partition.join(values, dist))

    def map(self, f, /, *sequences, block: bool | None = None, track: bool | None = None,
            return_exceptions: bool = False):
        """``map(f, *sequences)`` with one consecutive chunk per engine, results in order."""
        sequences, n = partition.shortest(sequences)
        targets = self._target_list()
        size = max(1, math.ceil(n / max(1, len(targets))))
        tasks, tracker = [], None
        flags = self._flags(track=track)
        for eid, chunk in zip(targets, partition.chunks(sequences, size)):
            new, tracker = self._submit(
                namespace.map_chunk, (f, *chunk), {"return_exceptions": return_exceptions},
                [eid], balanced=False, flags=flags, sizes=len(chunk[0]))
            tasks += new
        return self._finish(AsyncMapResult(tasks, "map", client=self.client, tracker=tracker),
                            block)

    # -- namespaces -------------------------------------------------------------------------

    def push(self, ns: dict, targets=None, block: bool | None = None, track: bool | None = None):
        """Set names on the engines: ``push({"a": 1, "b": array})``."""
        if not isinstance(ns, dict):
            raise TypeError(f"push takes a dict of names to values, not {type(ns).__name__}")
        return self._finish(self._call(namespace.push, (ns,), {}, targets, track=track), block)

    update = push

    def pull(self, names, targets=None, block: bool | None = None):
        """Values of `names` (a name or a list of names) on the engines."""
        if not isinstance(names, (str, list, tuple)):
            raise TypeError(f"pull takes a name or a list of names, not {type(names).__name__}")
        return self._finish(self._call(namespace.pull, (names,), {}, targets), block)

    def get(self, key: str):
        return self.pull(key, block=True)

    def __getitem__(self, key: str):
        return self.get(key)

    def __setitem__(self, key: str, value) -> None:
        self.push({key: value}, block=True)

    def scatter(self, key: str, seq, dist: str = "b", flatten: bool = False, targets=None,
                block: bool | None = None, track: bool | None = None):
        """Give each engine its part of `seq` as `key`: consecutive blocks (``dist="b"``) or
        round robin (``"r"``); with `flatten`, a part of one item is the item itself."""
        target_list = self._target_list(targets)
        pieces = partition.parts(seq, len(target_list), dist)
        tasks, tracker = [], None
        for eid, piece in zip(target_list, pieces):
            value = piece[0] if flatten and len(piece) == 1 else piece
            new, tracker = self._submit(namespace.push, ({key: value},), {}, [eid],
                                               balanced=False, flags=self._flags(track=track))
            tasks += new
        return self._finish(AsyncResult(tasks, "list", client=self.client, tracker=tracker), block)

    def gather(self, key: str, dist: str = "b", targets=None, block: bool | None = None):
        """The parts of `key` on the engines joined back, as scattered with `dist`."""
        partition.check_dist(dist)
        targets = self._target_list(targets)
        return self._finish(self._call(namespace.pull, (key,), {}, targets,
                                       reduce=lambda parts: partition.join(parts, dist)), block)

    def execute(self, code: str, silent: bool = True, targets=None, block: bool | None = None):
        """Run the source `code` in the engines' namespace, as a cell of IPython's shell where
        IPython is installed; unless `silent`, a last expression's value is its ``Out``."""
        if not isinstance(code, str):
            raise TypeError(f"execute takes source code as a str, not {type(code).__name__}")
        ar = self._call(namespace.execute, (code,), {"silent": silent}, targets,
                        kind=AsyncExecuteResult)
        if self.block if block is None else block:
            ar.get()  # raises the engines' errors; else the AsyncResult, as ipyparallel's
        return ar

    def run(self, filename: str, targets=None, block: bool | None = None):
        """Run a local Python file in the engines' namespace."""
        with open(filename) as f:
            code = f.read()
        return self._finish(self._call(namespace.run_file, (code, str(filename)), {}, targets), block)

    def sync_imports(self, local: bool = True, quiet: bool = False):
        """``with view.sync_imports(): import numpy as np``: the imports run on the engines too."""
        from ipcluster.imports import sync_imports

        return sync_imports(self, local=local, quiet=quiet)

    @property
    def importer(self):
        """``with view.importer: import re``: the imports run on the engines too, quietly."""
        return self.sync_imports(quiet=True)

    def clear(self, targets=None, block: bool | None = None):
        """Empty the engines' namespaces."""
        return self._finish(self._call(namespace.clear, (), {}, targets), block)

    def use_cloudpickle(self, block: bool | None = None):
        """Functions sent by value run with the globals they captured here (ipyparallel's
        cloudpickle mode), on these engines."""
        return self._finish(self._call(namespace.set_globals_mode, ("client",), {}), block)

    def use_pickle(self, block: bool | None = None):
        """Functions sent by value see only the engine namespace, not what they captured here
        (ipyparallel's default pickle mode), on these engines."""
        return self._finish(self._call(namespace.set_globals_mode, ("engine",), {}), block)

    def activate(self, suffix: str = "") -> None:
        """In IPython: make ``%px{suffix}``, ``%%px{suffix}``, ``%autopx{suffix}``,
        ``%pxresult{suffix}`` and ``%pxconfig{suffix}`` run on this view."""
        activate_magics(self, suffix)

    def __repr__(self) -> str:
        return f"<DirectView targets={self.targets!r}>"


def activate_magics(view: DirectView, suffix: str = "", *, replace: bool = True) -> bool:
    """Bind the %px magics of the running IPython to `view` (unless `replace` is False and a
    view was bound already); True if bound.

    The magics belong to the surfaces layer, so they are reached the way IPython finds any
    extension, by name (``%load_ext ipcluster``), and not imported from here.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    ip = get_ipython() if get_ipython is not None else None
    if ip is None:
        raise RuntimeError("activate() binds the %px magics of an IPython session or Jupyter "
                           "kernel, and this is neither; call view.execute(code) instead")
    ip.extension_manager.load_extension("ipcluster")
    return ip.magics_manager.registry["ParallelMagics"].activate(view, suffix, replace=replace)


class BroadcastView(DirectView):
    """A DirectView under ipyparallel's name: requests are already serialized once and fanned
    out by the controller, which is what a broadcast view is for. `is_coalescing` (reply
    once for all engines, in ipyparallel) is accepted and changes nothing: each engine's
    result already comes back as soon as it is ready."""

    flag_names = DirectView.flag_names + ("is_coalescing",)
    is_coalescing = False
