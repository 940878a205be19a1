"""Client API layer: what every ``*_sync`` form of `Cluster` runs on: a coroutine run to
completion from sync code, also where an event loop is already running (a notebook cell)."""

from __future__ import annotations

import asyncio
import functools
import threading


def run_sync(coro):
    """Run `coro` to completion from sync code, even where an event loop is already running
    (then in a thread of its own, with a loop of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name="ipcluster-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def sync_form(method):
    """The sync form of the async method `method` (``start_cluster`` →
    ``start_cluster_sync``): same arguments, run to completion with `run_sync`."""

    @functools.wraps(method)
    def sync(self, *args, **kwargs):
        return run_sync(method(self, *args, **kwargs))

    sync.__name__ = sync.__qualname__ = f"{method.__name__}_sync"
    sync.__doc__ = f"The sync form of `{method.__name__}`, also inside a running event loop."
    return sync
