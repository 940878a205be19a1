"""Client API layer: `ViewExecutor`, a real `concurrent.futures.Executor` on a view.

Its futures are `AsyncResult`s, so ``concurrent.futures.wait`` and ``as_completed`` work on
them like on any other futures.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque

from ipcluster import partition

__all__ = ["ViewExecutor"]


class ViewExecutor(concurrent.futures.Executor):
    def __init__(self, view) -> None:
        self.view = view
        self._shutdown = False
        self._pending: set = set()  # unfinished futures, for shutdown; each leaves when done

    def _track(self, future):
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def submit(self, fn, /, *args, **kwargs):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return self._track(self.view.apply_async(fn, *args, **kwargs))

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Results in order, as they arrive; each waited for at most until `timeout` seconds
        after this call (then `TimeoutError`, and the rest is aborted). `chunksize` items
        travel in one task (a load-balanced view; a DirectView sends one chunk per engine).
        As the stdlib's map, it stops at the shortest iterable and drops each result once
        yielded: a long map does not keep what was already read."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not iterables:
            return iter(())
        sequences, n = partition.shortest(iterables)
        if hasattr(self.view, "imap"):  # load-balanced: a result per chunk, dropped once read
            parts = deque(self._track(self.view.map(
                fn, *[s[i:i + chunksize] for s in sequences], block=False, chunksize=chunksize))
                for i in range(0, n, chunksize))
        else:
            parts = deque([self._track(self.view.map(fn, *sequences, block=False))] if n else [])
        deadline = None if timeout is None else time.monotonic() + timeout

        def results():
            try:
                while parts:
                    left = None if deadline is None else max(0, deadline - time.monotonic())
                    try:
                        chunk = parts[0].get(left)
                    except concurrent.futures.TimeoutError:
                        raise concurrent.futures.TimeoutError(
                            f"map not done after {timeout} s") from None
                    parts.popleft()
                    chunk.reverse()
                    while chunk:
                        yield chunk.pop()  # nothing here keeps it once the caller has it
            finally:  # as the stdlib's map: results nobody will read are not computed
                pending = [ar for ar in parts if not ar.done()]
                if pending:
                    self.view.client.abort(pending, block=False)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work from now on; with `cancel_futures`, futures whose work has not started
        are cancelled (running ones finish), as the stdlib's executors do; with `wait`,
        return once all futures are done."""
        self._shutdown = True
        pending = list(self._pending)
        if cancel_futures and pending:
            for future in pending:
                future._cancel_queued = True
            self.view.client.abort(pending, block=False, running=False)
        if wait:
            concurrent.futures.wait(pending)
