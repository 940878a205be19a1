"""Processes layer: the engine's user namespace, and the small functions clients send to it.

Clients pickle *references* to `push`, `pull` and `execute` (a few dozen bytes), and the engine
runs them like any other function. A function defined in the client's ``__main__`` (a script or
a notebook cell) is rebound to this namespace on the engine, so it sees names pushed earlier, as
in ipyparallel; names it captured on the client fill in only what the engine does not have.
"""

from __future__ import annotations

import builtins
import sys
import types

main_module = types.ModuleType("__main__")
user_ns: dict = main_module.__dict__
user_ns["__builtins__"] = builtins


def install() -> None:
    """Make the namespace the engine's ``__main__``, so objects defined there pickle by value."""
    sys.modules["__main__"] = main_module


def bind(f):
    """`f`, with globals rebound to the user namespace if it was defined in ``__main__``."""
    if not isinstance(f, types.FunctionType) or f.__module__ != "__main__" or f.__globals__ is user_ns:
        return f
    for name, value in f.__globals__.items():
        if not name.startswith("__"):
            user_ns.setdefault(name, value)
    bound = types.FunctionType(f.__code__, user_ns, f.__name__, f.__defaults__, f.__closure__)
    bound.__kwdefaults__ = f.__kwdefaults__
    bound.__qualname__ = f.__qualname__
    bound.__dict__.update(f.__dict__)
    return bound


def push(mapping: dict) -> None:
    user_ns.update(mapping)


def pull(names):
    """The value of one name, or a list of values for a list of names."""
    def get(name):
        try:
            return user_ns[name]
        except KeyError:
            raise NameError(f"name {name!r} is not defined on this engine") from None

    return get(names) if isinstance(names, str) else [get(n) for n in names]


def execute(code: str) -> None:
    exec(compile(code, "<execute>", "exec"), user_ns)


def map_chunk(f, *chunks) -> list:
    """``list(map(f, *chunks))`` on the engine, with `f` bound to the namespace like a task."""
    return list(map(bind(f), *chunks))
