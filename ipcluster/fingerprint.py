"""Messages layer: what identifies a task's work: its function's name, and (for provenance)
hashes of its code and of the bytes of its call and result.

The name travels in the apply header, so that the controller and a dashboard can tell tasks
apart without unpickling anything.
"""

from __future__ import annotations


def qualified_name(f) -> str:
    """``module.qualname`` of a callable (``functools.partial`` shows the function it wraps)."""
    inner = getattr(f, "func", None)
    if inner is not None and callable(inner):
        f = inner
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    module = getattr(f, "__module__", None) or type(f).__module__
    return f"{module}.{name}" if module not in (None, "builtins") else name
