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
        travel in one task (a load-balanced view; a DirectView sends one chunk per engine)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        sequences = [list(it) for it in iterables]
        if not sequences or not sequences[0]:
            return iter(())
        options = {"chunksize": chunksize} if hasattr(self.view, "imap") else {}
        ar = self._track(self.view.map(fn, *sequences, block=False, **options))
        deadline = None if timeout is None else time.monotonic() + timeout

        def results():
            try:
                for task in ar.tasks:  # each task's value is its chunk of the results
                    left = None if deadline is None else max(0, deadline - time.monotonic())
                    try:
                        chunk = task.result(left)
                    except concurrent.futures.TimeoutError:
                        raise concurrent.futures.TimeoutError(
                            f"map not done after {timeout} s") from None
                    yield from chunk
            finally:  # as the stdlib's map: results nobody will read are not computed
                if not ar.done():
                    ar.abort()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work from now on; with `cancel_futures`, unfinished work is aborted (its
        futures fail with `TaskAborted`); with `wait`, return once all futures are done."""
        self._shutdown = True
        pending = list(self._pending)
        if cancel_futures and pending:
            self.view.client.abort(pending, block=False)
        if wait:
            concurrent.futures.wait(pending)
