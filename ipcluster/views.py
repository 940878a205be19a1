"""Client API layer: views, what users call to run work.

A `DirectView` names its engines: ``rc[0]`` (one engine, single results), ``rc[:]`` (the
engines registered when it was made) or ``rc.direct_view("all")`` (every engine at each call).
A call on several engines is serialized once and fanned out by the controller. A
`LoadBalancedView` lets the controller choose the engine of each task.

`block` is a view attribute, and a keyword of each call that has one (keyword arguments of
`apply` belong to the function, so use `apply_sync` / `apply_async` there).
"""

from __future__ import annotations

import math

from ipcluster.asyncresult import AsyncResult
from ipcluster.engine import namespace

__all__ = ["View", "DirectView", "LoadBalancedView"]


def _lengths(sequences) -> int:
    try:
        lengths = [len(s) for s in sequences]
    except TypeError:
        raise TypeError("map needs sequences with a length (lists, tuples, ranges, arrays); "
                        "wrap an iterator in list() first") from None
    if not lengths:
        raise TypeError("map needs at least one sequence")
    if len(set(lengths)) > 1:
        raise ValueError(f"map: the sequences have different lengths {lengths}; "
                         "pass sequences of equal length")
    return lengths[0]


def _chunks(sequences, n: int, size: int):
    """`sequences` cut into consecutive chunks of at most `size` items (lists of slices)."""
    for start in range(0, n, size):
        yield [list(s[start:start + size]) for s in sequences]


class View:
    def __init__(self, client, targets, *, block: bool = False) -> None:
        self.client = client
        self.targets = targets
        self.block = block

    def _block(self, block: bool | None) -> bool:
        return self.block if block is None else block

    def _finish(self, ar, block: bool | None):
        return ar.get() if self._block(block) else ar

    def apply(self, f, /, *args, **kwargs):
        """Call ``f(*args, **kwargs)``; a result if the view blocks, else an `AsyncResult`."""
        return self._finish(self.apply_async(f, *args, **kwargs), None)

    def apply_sync(self, f, /, *args, **kwargs):
        return self.apply_async(f, *args, **kwargs).get()

    def map_sync(self, f, /, *sequences, **options):
        return self.map(f, *sequences, block=True, **options)

    def map_async(self, f, /, *sequences, **options):
        return self.map(f, *sequences, block=False, **options)

    def __len__(self) -> int:
        return len(self._target_list())

    def _target_list(self) -> list:
        return self.client.ids


class DirectView(View):
    """Work on named engines."""

    def _target_list(self) -> list[int]:
        t = self.targets
        if t == "all" or t is None:
            return self.client.ids
        return [t] if isinstance(t, int) else list(t)

    def _call(self, f, args, kwargs, targets=None):
        single = isinstance(self.targets, int) if targets is None else isinstance(targets, int)
        target_list = self._target_list() if targets is None else (
            [targets] if isinstance(targets, int) else list(targets))
        tasks = self.client._submit(f, args, kwargs, target_list, balanced=False)
        return AsyncResult(tasks, "single" if single else "list")

    def apply_async(self, f, /, *args, **kwargs):
        return self._call(f, args, kwargs)

    def map(self, f, /, *sequences, block: bool | None = None):
        """``map(f, *sequences)`` with one consecutive chunk per engine, results in order."""
        n = _lengths(sequences)
        targets = self._target_list()
        size = max(1, math.ceil(n / max(1, len(targets))))
        tasks = []
        for eid, chunk in zip(targets, _chunks(sequences, n, size)):
            tasks += self.client._submit(namespace.map_chunk, (f, *chunk), {}, [eid],
                                         balanced=False)
        return self._finish(AsyncResult(tasks, "map"), block)

    def push(self, ns: dict, targets=None, block: bool | None = None):
        """Set names on the engines: ``push({"a": 1, "b": array})``."""
        if not isinstance(ns, dict):
            raise TypeError(f"push takes a dict of names to values, not {type(ns).__name__}")
        return self._finish(self._call(namespace.push, (ns,), {}, targets), block)

    def pull(self, names, targets=None, block: bool | None = None):
        """Values of `names` (a name or a list of names) on the engines."""
        if not isinstance(names, (str, list, tuple)):
            raise TypeError(f"pull takes a name or a list of names, not {type(names).__name__}")
        return self._finish(self._call(namespace.pull, (names,), {}, targets), block)

    def execute(self, code: str, targets=None, block: bool | None = None):
        """Run the source `code` in the engines' namespace."""
        if not isinstance(code, str):
            raise TypeError(f"execute takes source code as a str, not {type(code).__name__}")
        return self._finish(self._call(namespace.execute, (code,), {}, targets), block)

    def __repr__(self) -> str:
        return f"<DirectView targets={self.targets!r}>"


class LoadBalancedView(View):
    """Work on whichever engine is free; `targets` restricts the choice."""

    def apply_async(self, f, /, *args, **kwargs):
        tasks = self.client._submit(f, args, kwargs, self.targets, balanced=True)
        return AsyncResult(tasks, "single")

    def map(self, f, /, *sequences, block: bool | None = None, chunksize: int | None = None):
        """``map(f, *sequences)`` in chunks spread over free engines, results in order.

        By default the sequence is cut into about 8 chunks per engine, so that slow items
        balance out while tiny ones do not each pay a round trip.
        """
        n = _lengths(sequences)
        if chunksize is None:
            chunksize = max(1, math.ceil(n / (8 * max(1, len(self.client.ids)))))
        elif not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int, not {chunksize!r}")
        tasks = []
        for chunk in _chunks(sequences, n, chunksize):
            tasks += self.client._submit(namespace.map_chunk, (f, *chunk), {}, self.targets,
                                         balanced=True)
        return self._finish(AsyncResult(tasks, "map"), block)

    def __repr__(self) -> str:
        return f"<LoadBalancedView targets={self.targets!r}>"
