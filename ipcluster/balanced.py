"""Client API layer: `LoadBalancedView`, where the controller chooses the engine of each task.

Its flags add `timeout`, `time_limit`, `retries`, `priority`, `after` and `follow` to the
view's; `map` and `imap` spread chunks over free engines, `dask_get` runs a dask graph on them.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections import deque
from itertools import islice

from ipcluster import namespace, partition
from ipcluster.asyncresult import AsyncMapResult, AsyncResult
from ipcluster.dependency import Dependency
from ipcluster.views import View

__all__ = ["LoadBalancedView"]


class LoadBalancedView(View):
    """Work on whichever engine is free; `targets` restricts the choice.

    `timeout`: seconds a task may wait to start, each time it waits (for its dependencies, or
    for an engine it may run on, also after a failure with `retries`), as in ipyparallel;
    then it fails with `TaskTimeout`. `time_limit`: seconds a task may run; then it is
    interrupted with `TaskTimeout` (an engine that does not stop it is replaced).
    `priority`: queued tasks with a higher number are sent first (equal ones in order).
    `after`: msg ids, AsyncResults, lists of them, or a `Dependency`: run once those finished.
    `follow`: the same, but run on the engine where those ran (and after them).
    """

    flag_names = View.flag_names + ("timeout", "time_limit", "retries", "priority", "after",
                                    "follow")

    def __init__(self, client, targets=None, **flags) -> None:
        self.timeout = self.time_limit = self.retries = self.priority = None
        self.after = self.follow = None
        super().__init__(client, targets, **flags)

    def set_flags(self, **flags):
        for name in ("after", "follow"):  # checked now, so a bad value fails where it is set
            if flags.get(name) is not None:
                flags[name] = Dependency.of(flags[name])
        return super().set_flags(**flags)

    def __len__(self) -> int:
        return len(self.client.ids if self.targets is None else self.targets)

    def _status_targets(self):
        return self.targets

    def _targets(self, targets=None):
        t = self.targets if targets is None else targets
        return [t] if isinstance(t, int) else (None if t is None else list(t))

    def apply_async(self, f, /, *args, **kwargs) -> AsyncResult:
        flags = self._flags()
        tasks, tracker = self._submit(f, args, kwargs, self._targets(), balanced=True,
                                             flags=flags)
        return AsyncResult(tasks, "single", client=self.client, tracker=tracker)

    def map_partitions(self, f, /, *sequences, dist: str = "b", chunksize: int | None = None,
                       **flags) -> AsyncResult:
        """`f` once per chunk of `chunksize` items of each sequence, on free engines; the
        results are joined in order (`@view.parallel`)."""
        n = partition.equal_lengths(sequences)
        size = chunksize or self._default_chunksize(n)
        tasks, flags = [], self._flags(**flags)
        for i in range(0, n, size):
            new, _ = self._submit(namespace.call_on_partition,
                                         (f, *[s[i:i + size] for s in sequences]), {},
                                         self._targets(), balanced=True, flags=flags)
            tasks += new
        return AsyncResult(tasks, "list", client=self.client,
                           reduce=lambda values: partition.join(values, "b"))

    def _default_chunksize(self, n: int) -> int:
        # about 8 chunks per engine: slow items balance out, tiny ones share a round trip
        return max(1, math.ceil(n / (8 * max(1, len(self)))))

    def map(self, f, /, *sequences, block: bool | None = None, chunksize: int | None = None,
            ordered: bool = True, return_exceptions: bool = False, label: str | None = None):
        """``map(f, *sequences)`` in chunks spread over free engines; results in order, or in
        the order they finish with ``ordered=False``.

        With a `label`, the sweep can be run again after a crash of the client or controller
        (``--db sqlite``): chunks finished before are fetched, not computed again. Labelled
        chunks are cut from the sequence length alone (not the engine count), so they match.
        """
        sequences, n = partition.shortest(sequences)
        flags = self._flags(label=label)
        done = {}
        if flags["label"] is not None:
            chunksize = chunksize or max(1, math.ceil(n / 256))
            done = {r["key"]: r["msg_id"] for r in self.client.db_query(
                {"label": flags["label"], "status": "ok"}, keys=["key", "msg_id"])}
        chunksize = self._check_chunksize(chunksize, n)
        tasks, tracker = [], None
        for chunk in partition.chunks(sequences, chunksize):
            new, tracker = self._submit(
                namespace.map_chunk, (f, *chunk), {"return_exceptions": return_exceptions},
                self._targets(), balanced=True, flags=flags, sizes=len(chunk[0]), done=done)
            tasks += new
        ar = AsyncMapResult(tasks, "map", client=self.client, ordered=ordered, tracker=tracker)
        return self._finish(ar, block)

    def _check_chunksize(self, chunksize, n: int) -> int:
        if chunksize is None:
            return self._default_chunksize(n)
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int, not {chunksize!r}")
        return chunksize

    def imap(self, f, /, *iterables, ordered: bool = True, max_outstanding="auto",
             return_exceptions: bool = False):
        """Like `map`, over iterables read lazily (even endless ones), with at most
        `max_outstanding` tasks in flight (``"auto"``: twice the engines)."""
        if max_outstanding == "auto":
            max_outstanding = 2 * max(1, len(self))
        if not isinstance(max_outstanding, int) or max_outstanding < 1:
            raise ValueError(f"max_outstanding must be a positive int or 'auto', not {max_outstanding!r}")
        in_flight: deque = deque()
        return IMap(self._imap(f, zip(*iterables), ordered, max_outstanding, return_exceptions,
                               in_flight), in_flight, self.client)

    def _imap(self, f, items, ordered, max_outstanding, return_exceptions, in_flight):
        while True:
            for args in islice(items, max_outstanding - len(in_flight)):
                in_flight.append(self.apply_async(f, *args))
            if not in_flight:
                return
            if ordered:
                ar = in_flight.popleft()
            else:
                done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                ar = next(a for a in in_flight if a in done)
                in_flight.remove(ar)
            try:
                result = ar.get()
                self.client.purge_local_results(ar.msg_ids)  # handed over: imap keeps nothing
                # of it here (rc.history keeps its ids; the controller its result)
                yield result
            except Exception as exc:
                if not return_exceptions:
                    self.client.abort(list(in_flight), block=False)
                    raise
                yield exc

    def dask_get(self, dsk, keys, **kwargs):
        """A dask scheduler running on this view: ``dask.compute(x, scheduler=view.dask_get)``.

        Each task is sent once its dependencies are done, with their values; see
        `ipcluster.daskbridge.get`."""
        from ipcluster import daskbridge

        return daskbridge.get(self, dsk, keys, **kwargs)

    def __repr__(self) -> str:
        return f"<LoadBalancedView targets={self.targets!r}>"


class IMap:
    """What `LoadBalancedView.imap` returns: an iterator of results; ``cancel()`` stops it and
    aborts the tasks it has in flight."""

    def __init__(self, results, in_flight: deque, client) -> None:
        self._results, self._in_flight, self._client = results, in_flight, client

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)

    def cancel(self) -> None:
        """Stop: no more results, and the tasks in flight are aborted (also ``close()``)."""
        self._results.close()
        pending = [ar for ar in self._in_flight if not ar.done()]
        self._in_flight.clear()
        if pending:
            self._client.abort(pending, block=False)

    close = cancel  # as a generator's close()
