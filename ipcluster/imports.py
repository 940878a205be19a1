"""Client API layer: `sync_imports`, imports in a ``with`` block repeated on the engines.

    with rc[:].sync_imports():
        import numpy as np
        from math import pi

Names the block binds to modules, or to objects imported from modules, are bound the same way
on the engines (aliases included).
"""

from __future__ import annotations

import builtins
import contextlib
import sys
import types

from ipcluster import namespace


def _bindings(frame_ns: dict, before: dict, imported: set) -> list[tuple[str, str, str | None]]:
    found = []
    for name, value in frame_ns.items():
        if name in before and before[name] is value:
            continue
        if isinstance(value, types.ModuleType):
            found.append((name, value.__name__, None))
            continue
        module = getattr(value, "__module__", None)
        if module in imported or any(m.startswith(f"{module}.") for m in imported if module):
            found.append((name, module, getattr(value, "__name__", name)))
    return found


@contextlib.contextmanager
def sync_imports(view, local: bool = True, quiet: bool = False):
    frame = sys._getframe(2)  # the block's frame: past contextmanager's __enter__
    scope = frame.f_locals if frame.f_code.co_name != "<module>" else frame.f_globals
    before = dict(scope)
    imported: set[str] = set()
    real_import = builtins.__import__

    def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and globals is frame.f_globals:
            imported.add(name)
            if not local:
                module = types.ModuleType(name)
                for attr in fromlist or ():
                    setattr(module, attr, types.ModuleType(f"{name}.{attr}"))
                return module
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = recording_import
    try:
        yield
    finally:
        builtins.__import__ = real_import
    scope = frame.f_locals if frame.f_code.co_name != "<module>" else frame.f_globals
    bindings = _bindings(scope, before, imported) if local else [
        (name.split(".")[0], name.split(".")[0], None) for name in sorted(imported)]
    if not quiet:
        for name, module, attribute in bindings:
            what = f"from {module} import {attribute}" if attribute else f"import {module}"
            alias = "" if name in (attribute, module) else f" as {name}"
            print(f"importing {what}{alias} on engine(s)")
    view.apply_sync(namespace.import_names, bindings)
