"""Processes layer: ledger reads off the controller's loop.

A read of the SQLite store (``db_query``, a fetch of results culled from memory) waits for the
writer to commit and then for the disk; the loop must not. A control action that needs one
returns a `Later`: its `read` runs on the reader's thread, one query per request, and its
`then` runs back on the loop with what was read, to send results and make the reply.

    loop ── Later ──▶ reader thread: read() ──▶ done queue ──▶ wake-up socket ──▶ loop: then()
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

from ipcluster import transport


@dataclass
class Later:
    read: Callable[[], Any]  # runs on the reader thread: no controller state
    then: Callable[[Any], dict]  # runs on the loop with what `read` returned; makes the reply


class Reader:
    """One thread running reads in arrival order; `inbox` becomes readable when one is done."""

    def __init__(self, context, name: str) -> None:
        self._context, self._name = context, name
        self.inbox = context.inbox(name)
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ipcluster-reader", daemon=True)
        self._thread.start()

    def submit(self, later: Later, on_done: Callable[[Any, Exception | None], None]) -> None:
        self._todo.put((later, on_done))

    def _run(self) -> None:
        wake = self._context.outbox(self._name)
        while (item := self._todo.get()) is not None:
            later, on_done = item
            try:
                found, error = later.read(), None
            except Exception as exc:  # reported to the client that asked
                found, error = None, exc
            self._done.put((on_done, found, error))
            transport.send(wake, [b""])
        wake.close(linger=0)

    def finish_ready(self) -> None:
        """On the loop: run the `then` of every read done so far."""
        for _ in transport.drain(self.inbox):
            pass
        while True:
            try:
                on_done, found, error = self._done.get_nowait()
            except queue.Empty:
                return
            on_done(found, error)

    def close(self) -> None:
        self._todo.put(None)
        self._thread.join(timeout=5)
