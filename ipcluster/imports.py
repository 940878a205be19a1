"""Client API layer: `sync_imports`, imports in a ``with`` block repeated on the engines.

    with rc[:].sync_imports():
        import numpy as np
        from math import pi

Each import of the block is repeated on the engines as written, aliases included, and
announced so (``import numpy as np (on engine(s))``) unless `quiet`.
"""

from __future__ import annotations

import builtins
import contextlib
import sys
import types

from ipcluster import namespace


def _statements(records: list, scope: dict, before: dict) -> list[tuple[str, tuple]]:
    """Each import of the block as written (``import numpy as np``, ``from os import path``),
    with the ``(name, module, attribute)`` binding that repeats it on an engine."""
    new = {n: v for n, v in scope.items() if not (n in before and before[n] is v)}

    def bound_as(value, usual: str) -> str | None:
        names = [n for n, v in new.items() if v is value]
        return usual if usual in names else (names[0] if names else None)

    out = []
    for module_name, fromlist, module in records:
        if fromlist:
            for attr in fromlist:
                name = bound_as(getattr(module, attr, None), attr)
                if name is not None:
                    alias = "" if name == attr else f" as {name}"
                    out.append((f"from {module_name} import {attr}{alias}", (name, module_name, attr)))
            continue
        top = module_name.split(".")[0]
        name = bound_as(module if "." not in module_name else sys.modules.get(module_name), top)
        if name is not None and name != top:  # import a.b as c: c is a.b
            out.append((f"import {module_name} as {name}", (name, module_name, None)))
        elif top in new:  # import a.b binds a, after importing a.b
            out.append((f"import {module_name}", (top, module_name, None)))
    return out


@contextlib.contextmanager
def sync_imports(view, local: bool = True, quiet: bool = False):
    frame = sys._getframe(2)  # the block's frame: past contextmanager's __enter__
    scope = frame.f_locals if frame.f_code.co_name != "<module>" else frame.f_globals
    before = dict(scope)
    records: list[tuple] = []  # (module name, fromlist, what the import returned), in order
    real_import = builtins.__import__

    def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and globals is frame.f_globals:
            if local:
                module = real_import(name, globals, locals, fromlist, level)
            else:  # only on the engines: bind stand-ins here
                module = types.ModuleType(name)
                for attr in fromlist or ():
                    setattr(module, attr, types.ModuleType(f"{name}.{attr}"))
            records.append((name, tuple(fromlist or ()), module))
            return module
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = recording_import
    try:
        yield
    finally:
        builtins.__import__ = real_import
    scope = frame.f_locals if frame.f_code.co_name != "<module>" else frame.f_globals
    statements = _statements(records, scope, before)
    if not quiet:
        for statement, _ in statements:
            print(f"{statement} (on engine(s))")
    view.apply_sync(namespace.import_names, [binding for _, binding in statements])
