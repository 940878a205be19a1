"""Processes layer: giving memory back to the system once the controller has freed it.

What kept freed memory in the controller for good (found with `tests/controller/test_memory.py`
and ``python -m benchmarks.flood_memory``):

- glibc raises its threshold for returning large blocks after the first large free (a 200 MB
  print left 67 MiB): `return_large_blocks` fixes the threshold at start.
- small blocks freed after a surge stay in glibc's arenas: `trim` (``malloc_trim``) is called
  every few seconds from the loop.
- Python's own allocator gives memory back only in whole 1 MiB arenas, and any object that
  outlives a surge keeps its arena. After 50 clients killed mid-submit with 32,000 tasks, the
  ids of the replay window (100,000 kept, allocated as the messages came, one among the
  short-lived objects of each request) and a few dozen other objects kept 100-190 arenas
  with 20 MiB in use: 60-150 MiB. `use_system_allocator` runs the controller with glibc's
  allocator for Python objects too (its pages go back one by one; CPU per task unchanged
  within the noise of `benchmarks.cpu`), and a `Repacker` copies what long-lived holders fill
  at a surge's pace into fresh memory once the surge has passed, so that it does not stay
  scattered over the pages the surge used.

Elsewhere than glibc `use_system_allocator`, `return_large_blocks` and `trim` do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import msgpack


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def use_system_allocator() -> None:
    """Run this process again with glibc's allocator for Python's objects too
    (``PYTHONMALLOC=malloc``; never returns), unless it already has, the user chose one, or
    this is not glibc. Its free pages go back to the system with `trim`, page by page, where
    Python's own allocator frees only whole 1 MiB arenas, which a few objects that outlive a
    surge keep (see the module's docstring)."""
    if _LIBC is not None and "PYTHONMALLOC" not in os.environ:
        os.execve(sys.executable, sys.orig_argv, {**os.environ, "PYTHONMALLOC": "malloc"})


def return_large_blocks() -> None:
    """Blocks of 128 KiB or more go back to the system as soon as they are freed."""
    if _LIBC is not None:
        _LIBC.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD, fixed: no dynamic raise


def trim() -> None:
    """Give the free pages of every arena back to the system (a few ms)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class Repacker:
    """Copies what long-lived `holders` keep into fresh memory after a surge: once at least
    `after` events (messages received, records dropped) happened since the last surge, on each
    of the next `rounds` ticks with fewer than `quiet` events (nothing is copied while messages
    pour in). A copy lands among whatever the surge still holds (records until purged, the
    backlogs of dead clients until forgotten) and stays scattered once that is freed: the
    last copy, made when the surge has been quiet for `rounds` ticks, is the packed one. Each
    holder has ``take()`` (its data as msgpack-able lists, forgotten) and ``put(data)``. A
    copy of 100,000 ids takes about 50 ms of the loop."""

    def __init__(self, holders, after: int = 20_000, quiet: int = 1_000, rounds: int = 3) -> None:
        self.holders = holders
        self.after, self.quiet, self.rounds = after, quiet, rounds
        self._surge = self._ticked = 0  # events when the last surge was seen, at the last tick
        self._left = 0  # copies still to make for the last surge
        self.copies = 0

    def tick(self, events: int) -> bool:
        """Called every few seconds with the count of events so far; True if it copied."""
        recent, self._ticked = events - self._ticked, events
        if events - self._surge >= self.after:
            self._surge, self._left = events, self.rounds
        if not self._left or recent >= self.quiet:
            return False
        packed = msgpack.packb([holder.take() for holder in self.holders])
        trim()  # the originals are freed: what they pinned goes back before the copies are made
        for holder, kept in zip(self.holders, msgpack.unpackb(packed)):
            holder.put(kept)
        self._left -= 1
        self.copies += 1
        return True
