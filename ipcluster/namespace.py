"""Messages layer: the engine's user namespace, and the small functions clients send to it.

This is code that travels: clients pickle *references* to the functions here (a few dozen
bytes), so they import it, and the engine runs them
like any other task. A function defined in the client's ``__main__`` (a script or a notebook
cell) is rebound to this namespace on the engine, so it sees names pushed earlier, as in
ipyparallel; names it captured on the client fill in only what the engine does not have.
"""

from __future__ import annotations

import builtins
import importlib
import sys
import traceback
import types

from ipcluster import errors
from ipcluster.errors import RemoteError, UnmetDependency

main_module = types.ModuleType("__main__")
user_ns: dict = main_module.__dict__
user_ns["__builtins__"] = builtins
engine_id: int | None = None  # set by the engine once registered
cell_runner = None  # runs a code cell: set by the engine (engine/shell.py, IPython if installed)


def install(eid: int | None, run_cell) -> None:
    """Make the namespace the engine's ``__main__``, so objects defined there pickle by value;
    `run_cell(code, silent=...)` runs `execute`'s code cells."""
    global engine_id, cell_runner
    engine_id, cell_runner = eid, run_cell
    sys.modules["__main__"] = main_module


def _sent_by_value(f) -> bool:
    """True for a function that came with its own globals (not one imported from a module)."""
    module = sys.modules.get(f.__module__)
    return module is None or f.__globals__ is not vars(module)


# Which globals a function sent by value sees (view.use_pickle / use_cloudpickle): "fill" the
# engine namespace, where the names it captured on the client fill in only missing ones;
# "engine", the engine namespace alone (ipyparallel's pickle); "client", what it captured
# (ipyparallel's cloudpickle).
globals_mode = "fill"


def set_globals_mode(mode: str) -> None:
    global globals_mode
    if mode not in ("fill", "engine", "client"):
        raise ValueError(f"globals mode is fill, engine or client, not {mode!r}")
    globals_mode = mode


def bind(f, interactive: bool = False):
    """`f`, with globals rebound to the user namespace if it was defined in ``__main__`` (or,
    with `interactive`, if it was sent by value from any module)."""
    if not isinstance(f, types.FunctionType) or f.__globals__ is user_ns:
        return f
    if f.__module__ != "__main__" and not (interactive and _sent_by_value(f)):
        return f
    if globals_mode == "client":
        return f
    if globals_mode == "fill":
        for name, value in f.__globals__.items():
            if not name.startswith("__"):
                user_ns.setdefault(name, value)
    bound = types.FunctionType(f.__code__, user_ns, f.__name__, f.__defaults__, f.__closure__)
    bound.__kwdefaults__ = f.__kwdefaults__
    bound.__qualname__ = f.__qualname__
    if f.__dict__:
        bound.__dict__.update(f.__dict__)
    return bound


class Reference:
    """A name (or an expression: ``"g[0]"``, ``"a.b"``) in the engine's namespace, passed as
    an argument, inside a list or dict argument, or as the function: ``apply(f, Reference("a"))``.
    """

    def __init__(self, name: str) -> None:
        try:
            compile(name, "<Reference>", "eval")
        except (SyntaxError, TypeError, ValueError):
            raise ValueError(f"Reference takes a name or an expression, not {name!r}") from None
        self.name = name

    def resolve(self):
        return pull(self.name)

    def __repr__(self) -> str:
        return f"Reference({self.name!r})"


def _resolved(value):
    """`value` with the References in it (also in lists, tuples and dicts) resolved."""
    if isinstance(value, Reference):
        return value.resolve()
    if type(value) in (list, tuple):
        return type(value)(_resolved(v) for v in value)
    if type(value) is dict:
        return {k: _resolved(v) for k, v in value.items()}
    return value


def _unresolved(values) -> bool:
    """True if no value is a Reference, nor a list, tuple or dict (that could hold one)."""
    for value in values:
        if type(value) in (list, tuple, dict) or isinstance(value, Reference):
            return False
    return True


def resolve_call(f, args: tuple, kwargs: dict) -> tuple:
    """The function (a Reference names a callable on the engine) and its arguments, resolved
    (plain arguments, the usual case, as they are)."""
    return (f.resolve() if isinstance(f, Reference) else f,
            args if not args or _unresolved(args) else _resolved(args),
            kwargs if not kwargs or _unresolved(kwargs.values()) else _resolved(kwargs))


class Required:
    """`f` that first imports `modules` and defines `objects` in the engine namespace."""

    def __init__(self, f, modules: list[str], objects: dict) -> None:
        self.f, self.modules, self.objects = f, modules, objects
        self.__name__ = getattr(f, "__name__", "required")

    def __call__(self, *args, **kwargs):
        for name in self.modules:
            try:
                user_ns[name.split(".")[0]] = importlib.import_module(name.split(".")[0])
                importlib.import_module(name)
            except ImportError as exc:
                raise UnmetDependency("UnmetDependency", f"module {name!r} cannot be imported on "
                                      f"engine {engine_id}: {exc}", engine_id=engine_id) from None
        user_ns.update(self.objects)
        return bind(self.f, interactive=True)(*args, **kwargs)


class Depends:
    """`f` that runs only where ``condition(*args, **kwargs)`` is true, else moves elsewhere."""

    def __init__(self, f, condition, args: tuple, kwargs: dict) -> None:
        self.f, self.condition, self.args, self.kwargs = f, condition, args, kwargs
        self.__name__ = getattr(f, "__name__", "dependent")

    def __call__(self, *args, **kwargs):
        if not bind(self.condition)(*self.args, **self.kwargs):
            name = getattr(self.condition, "__name__", "the dependency")
            raise UnmetDependency("UnmetDependency", f"{name} is false on engine {engine_id}",
                                  engine_id=engine_id)
        return bind(self.f)(*args, **kwargs)


def push(mapping: dict) -> None:
    """Set names; ``"a.b"`` sets attribute b of a."""
    for key, value in mapping.items():
        if "." in key:
            owner, _, attr = key.rpartition(".")
            setattr(pull(owner), attr, value)
        else:  # a function defined in the client's __main__ sees this namespace, as with apply
            user_ns[key] = bind(value)


def pull(names):
    """The value of one name (or expression: ``"a.b"``), or a list of them for a list."""
    def get(name):
        try:
            return user_ns[name] if name.isidentifier() else eval(name, user_ns)
        except KeyError:
            raise NameError(f"name {name!r} is not defined on engine {engine_id}") from None

    return get(names) if isinstance(names, str) else [get(n) for n in names]


def execute(code: str, silent: bool = True) -> None:
    """Run a code cell; through IPython's shell (magics, display, ``Out``) when IPython is
    installed, else with exec. `silent` cells keep no history and show no ``Out`` value."""
    if cell_runner is None:
        raise RuntimeError("execute runs code cells on an engine, and this process is not one "
                           "(no cell runner installed); send it with view.execute(code)")
    cell_runner(code, silent=silent)


def run_file(code: str, filename: str) -> None:
    exec(compile(code, filename, "exec"), user_ns)


def clear() -> None:
    """Empty the namespace, keeping what every namespace has."""
    keep = {k: user_ns[k] for k in ("__name__", "__builtins__") if k in user_ns}
    user_ns.clear()
    user_ns.update(keep)


def import_names(imports: list[tuple[str, str, str | None]]) -> None:
    """``(name, module, attribute)``: bind `name` to a module, or to an attribute of one."""
    for name, module, attribute in imports:
        mod = importlib.import_module(module)
        if attribute is None and "." in module and name == module.split(".")[0]:
            mod = importlib.import_module(name)  # `import a.b` binds a, with a.b imported
        user_ns[name] = getattr(mod, attribute) if attribute else mod


def _remote_error(exc: BaseException) -> RemoteError:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
    return errors.from_wire(errors.describe(exc, engine_id, tb))


def map_chunk(f, *chunks, return_exceptions: bool = False) -> list:
    """``list(map(f, *chunks))`` on the engine; with `return_exceptions`, a failing item gives
    its `RemoteError` in place of a value instead of failing the whole chunk."""
    f = bind(_resolved(f))
    chunks = _resolved(chunks)
    if not return_exceptions:
        return list(map(f, *chunks))
    out = []
    for items in zip(*chunks):
        try:
            out.append(f(*items))
        except Exception as exc:
            out.append(_remote_error(exc))
    return out


def call_on_partition(f, *partitions):
    """One engine's share of a `@view.parallel` call: `f` on its partition of each argument."""
    return bind(f)(*partitions)
