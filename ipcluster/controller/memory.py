"""Processes layer: giving memory back to the system once the controller has freed it.

Two causes kept freed memory in the controller for good, both glibc's (found with
`tests/controller/test_memory.py`): after the first large free, glibc raises its threshold for
returning large blocks (a 200 MB print left 67 MiB), and small blocks freed after a surge (50
clients killed mid-submit) stay in its arenas (hundreds of MiB). `return_large_blocks` fixes
the threshold at start; `trim` (``malloc_trim``) is called every few seconds from the loop.
Elsewhere than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def return_large_blocks() -> None:
    """Blocks of 128 KiB or more go back to the system as soon as they are freed."""
    if _LIBC is not None:
        _LIBC.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD, fixed: no dynamic raise


def trim() -> None:
    """Give the free pages of every arena back to the system (a few ms)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
