"""Client API layer: decorators that change how a function runs on engines."""

from __future__ import annotations

__all__ = ["interactive"]


def interactive(f):
    """Run `f` in the engine's namespace, as if defined in a notebook cell.

    Functions defined in ``__main__`` (a script, a notebook) already are; use this for a
    function defined in a module that reads names pushed to the engines.
    """
    f.__module__ = "__main__"
    return f
