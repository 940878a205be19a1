"""Client API layer: `ViewExecutor`, a real `concurrent.futures.Executor` on a view.

Its futures are `AsyncResult`s, so ``concurrent.futures.wait`` and ``as_completed`` work on
them like on any other futures.
"""

from __future__ import annotations

import concurrent.futures
import time

__all__ = ["ViewExecutor"]


class ViewExecutor(concurrent.futures.Executor):
    def __init__(self, view) -> None:
        self.view = view
        self._shutdown = False
        self._futures: list = []

    def submit(self, fn, /, *args, **kwargs):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future = self.view.apply_async(fn, *args, **kwargs)
        self._futures.append(future)
        return future

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Results in order, each waited for at most until `timeout` seconds from now."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        sequences = [list(it) for it in iterables]
        if not sequences or not sequences[0]:
            return iter(())
        options = {"chunksize": chunksize} if hasattr(self.view, "imap") else {}
        ar = self.view.map(fn, *sequences, block=False, **options)
        self._futures.append(ar)
        deadline = None if timeout is None else time.monotonic() + timeout

        def results():
            if not ar.wait(None if deadline is None else max(0, deadline - time.monotonic())):
                ar.abort()
                raise concurrent.futures.TimeoutError(f"map not done after {timeout} s")
            yield from ar

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        pending = [f for f in self._futures if not f.done()]
        if cancel_futures and pending:
            self.view.client.abort(pending, block=False)
        if wait:
            concurrent.futures.wait(pending)
