"""Client API layer: decorators that change where and how a function runs on engines.

    @view.remote()       calling f runs it on the view
    @view.parallel()     each engine's call gets its part of the arguments; results joined
    @interactive         f runs in the engine namespace, as if defined in a notebook cell
    @require("numpy")    modules imported (or objects defined) on the engine before f runs
    @depend(cond, ...)   f runs only on engines where cond(...) is true
"""

from __future__ import annotations

import functools
import sys
import types

from ipcluster import namespace, partition

__all__ = ["interactive", "require", "depend", "remote", "parallel", "RemoteFunction",
           "ParallelFunction"]


def interactive(f):
    """Run `f` in the engine's namespace, as if defined in a notebook cell.

    Functions defined in ``__main__`` (a script, a notebook) already are; use this for a
    function defined in a module that reads names pushed to the engines. As in ipyparallel,
    its globals become ``__main__``'s here too (what it captures with ``use_cloudpickle``).
    """
    if isinstance(f, types.FunctionType):
        main = sys.modules["__main__"].__dict__
        g = types.FunctionType(f.__code__, main, f.__name__, f.__defaults__, f.__closure__)
        g.__kwdefaults__, g.__qualname__, g.__doc__ = f.__kwdefaults__, f.__qualname__, f.__doc__
        g.__dict__.update(f.__dict__)
        f = g
    f.__module__ = "__main__"
    return f


def require(*requirements, **named):
    """Decorator: before `f` runs on an engine, import the named modules there and define the
    given objects (functions by their name, others as keywords: ``@require(np="numpy")`` is
    not supported, ``@require("numpy", helper, scale=2.0)`` is). An engine lacking a module
    fails the task with `UnmetDependency`."""
    modules, objects = [], dict(named)
    for item in requirements:
        if isinstance(item, str):
            modules.append(item)
        elif isinstance(item, types.ModuleType):
            modules.append(item.__name__)
        elif callable(item) and hasattr(item, "__name__"):
            objects[item.__name__] = item
        else:
            raise TypeError(f"require takes module names, modules or named callables, not {item!r}")

    def decorate(f):
        return functools.wraps(f)(namespace.Required(f, modules, objects))

    return decorate


def depend(condition, *args, **kwargs):
    """Decorator: `f` runs only where ``condition(*args, **kwargs)`` is true on the engine; a
    load-balanced task moves to another engine, and fails with `ImpossibleDependency` if none
    meets it."""
    def decorate(f):
        return functools.wraps(f)(namespace.Depends(f, condition, args, kwargs))

    return decorate


def remote(view, block: bool | None = None, **flags):
    """Decorator: calling the function runs it on `view` (ipyparallel's ``ipp.remote``)."""
    return view.remote(block=block, **flags)


def parallel(view, dist: str = "b", block: bool | None = None, **flags):
    """Decorator: each engine of `view` gets its part of the arguments (``ipp.parallel``)."""
    return view.parallel(dist=dist, block=block, **flags)


class RemoteFunction:
    """`f` bound to a view: calling it applies it there."""

    def __init__(self, view, f, block: bool | None = None, **flags) -> None:
        self.view, self.func, self.block, self.flags = view, f, block, flags
        functools.update_wrapper(self, f)
        self.__doc__ = f"{type(self).__name__} of {getattr(f, '__name__', f)!s}" + (
            f":\n\n{f.__doc__}" if f.__doc__ else "")

    def __call__(self, *args, **kwargs):
        with self.view.temp_flags(**self.flags):
            ar = self.view.apply_async(self.func, *args, **kwargs)
        return ar.get() if (self.view.block if self.block is None else self.block) else ar

    def map(self, *sequences):
        """Element-wise: ``view.map(f, *sequences)``."""
        with self.view.temp_flags(**self.flags):
            return self.view.map(self.func, *sequences, block=self.block)


class ParallelFunction(RemoteFunction):
    """`f` called once per engine on that engine's part of each sequence argument; the
    results (lists or arrays) are joined in order. ``f.map(seq)`` is element-wise instead."""

    def __init__(self, view, f, block: bool | None = None, dist: str = "b",
                 chunksize: int | None = None, **flags) -> None:
        super().__init__(view, f, block, **flags)
        partition.check_dist(dist)
        self.dist, self.chunksize = dist, chunksize

    def __call__(self, *sequences):
        ar = self.view.map_partitions(self.func, *sequences, dist=self.dist,
                                      chunksize=self.chunksize, **self.flags)
        return ar.get() if (self.view.block if self.block is None else self.block) else ar
