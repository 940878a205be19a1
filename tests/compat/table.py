"""The one table through which ipyparallel's test files import: each ipyparallel module path
they use, mapped to ipcluster's public objects or to this harness's shims.

The extracted test files never import ipyparallel (the run forbids it); `rewrite` turns each of
their ``import ipyparallel...`` / ``from ipyparallel... import x`` (and relative imports inside
``ipyparallel.tests``) into ``module(path)`` / ``name(path, "x")`` calls on this table.

A value is either a module path (every name of that module, as ``import ipcluster as ipp``
promises) or a dict of name -> ``"module:attribute"`` for a module ipcluster has no counterpart
of. A name the table cannot resolve is a `Missing` placeholder: importing it works, so the
rest of the file still runs, and the first use fails the test that uses it, naming the entry.
"""

from __future__ import annotations

import ast
import importlib
import re

# The package the rewritten test files live in inside the scratch folder (see suite.py).
SUITE_PACKAGE = "upstream"

MODULES: dict[str, str | dict[str, str]] = {
    # what users type: `import ipyparallel as ipp` becomes `import ipcluster as ipp`
    "ipyparallel": "ipcluster",
    "ipyparallel.error": "ipcluster.errors",  # ipp.error is ipcluster.errors under that name
    "ipyparallel.datapub": "ipcluster.datapub",  # imported by code the tests run on engines
    "ipyparallel.client.client": "ipcluster.client",
    "ipyparallel.util": {
        "interactive": "ipcluster:interactive",
        "utc": "datetime:timezone.utc",
    },
    "ipyparallel.client.view": {
        "LoadBalancedView": "ipcluster:LoadBalancedView",
        # ipyparallel's name for the iterator Executor.map returns; the contract is an iterator
        "LazyMapIterator": "collections.abc:Iterator",
    },
    "ipyparallel.client._joblib": {
        "IPythonParallelBackend": "ipcluster.joblib_backend:IpclusterBackend",
    },
    # test_dependency passes a function through ipyparallel's own serializer; the shim is a
    # round trip through the pickler ipcluster sends functions with
    "ipyparallel.serialize": {
        "can": "tests.compat.shim:can",
        "uncan": "tests.compat.shim:uncan",
    },
    "ipyparallel.cluster": {
        "Cluster": "ipcluster:Cluster",
        "ClusterManager": "ipcluster:ClusterManager",
    },
    # ipyparallel's launcher classes have no counterpart (ipcluster's launchers are found by
    # name); every name here is Missing, and the tests that use them are excluded
    "ipyparallel.cluster.launcher": {},
    # the test infrastructure: engines started for the tests, and the upstream helpers
    "ipyparallel.tests": "tests.compat.shim",
    "ipyparallel.tests.clienttest": f"{SUITE_PACKAGE}.clienttest",
    "ipyparallel.tests.test_view": f"{SUITE_PACKAGE}.test_view",
}


class MissingName(AttributeError):
    """A test used an ipyparallel name this table does not map to anything in ipcluster."""


class Missing:
    """Stands for an unmapped name until a test uses it."""

    def __init__(self, path: str, why: str) -> None:
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_why", why)

    def _fail(self, *args, **kwargs):
        raise MissingName(f"{self._path} is not in tests/compat/table.py ({self._why})")

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return Missing(f"{self._path}.{attr}", self._why)

    __call__ = __mro_entries__ = __iter__ = __getitem__ = __setattr__ = _fail

    def __repr__(self) -> str:
        return f"<Missing {self._path}>"


class TableModule:
    """An ipyparallel module the table describes name by name."""

    def __init__(self, path: str, names: dict[str, str]) -> None:
        self.__name__, self._names = path, names

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return name(self.__name__, attr)


def _resolve(spec: str):
    module, _, attrs = spec.partition(":")
    obj = importlib.import_module(module)
    for attr in attrs.split(".") if attrs else ():
        obj = getattr(obj, attr)
    return obj


def module(path: str):
    """What ``import <path>`` gives in the rewritten files."""
    entry = MODULES.get(path)
    if entry is None:
        return Missing(path, "module not in the table")
    if isinstance(entry, dict):
        return TableModule(path, entry)
    return importlib.import_module(entry)


def name(path: str, attr: str):
    """What ``from <path> import <attr>`` gives in the rewritten files."""
    if f"{path}.{attr}" in MODULES:
        return module(f"{path}.{attr}")
    entry = MODULES.get(path)
    if entry is None:
        return Missing(f"{path}.{attr}", "module not in the table")
    spec = entry.get(attr) if isinstance(entry, dict) else f"{entry}:{attr}"
    if spec is None:
        return Missing(f"{path}.{attr}", "name not in the table")
    try:
        return _resolve(spec)
    except (ImportError, AttributeError) as exc:
        return Missing(f"{path}.{attr}", f"{spec}: {type(exc).__name__}: {exc}")


# -- rewriting a test file ---------------------------------------------------------------------

_ENGINE_IMPORT = re.compile(r"\bfrom ipyparallel\.(\w+) import\b")


def _absolute(node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module
    base = "ipyparallel.tests"  # every extracted file lives in that package
    return f"{base}.{node.module}" if node.module else base


def _replacement(node) -> str | None:
    """The statements standing for one import node, or None if it imports no ipyparallel."""
    if isinstance(node, ast.Import):
        parts = []
        for alias in node.names:
            if alias.name.split(".")[0] != "ipyparallel":
                return None
            if alias.asname is None and "." in alias.name:
                raise ValueError(f"cannot rewrite `import {alias.name}` without `as`")
            parts.append(f"{alias.asname or alias.name} = _compat.module({alias.name!r})")
        return "; ".join(parts)
    if isinstance(node, ast.ImportFrom):
        path = _absolute(node)
        if path.split(".")[0] != "ipyparallel":
            return None
        return "; ".join(f"{a.asname or a.name} = _compat.name({path!r}, {a.name!r})"
                         for a in node.names)
    return None


def rewrite(source: str) -> str:
    """`source` with its ipyparallel imports going through this table, line numbers kept.

    Code the tests send to engines as text (``"from ipyparallel.datapub import ..."``) names
    the module the table maps it to, as a user's code would after the switch."""
    lines = source.splitlines(keepends=True)
    for node in sorted((n for n in ast.walk(ast.parse(source))
                        if isinstance(n, (ast.Import, ast.ImportFrom))),
                       key=lambda n: n.lineno, reverse=True):
        text = _replacement(node)
        if text is None:
            continue
        indent = lines[node.lineno - 1][: node.col_offset]
        span = node.end_lineno - node.lineno + 1
        lines[node.lineno - 1: node.end_lineno] = [indent + text + "\n"] + ["\n"] * (span - 1)

    def engine_import(match):
        target = MODULES.get(f"ipyparallel.{match.group(1)}")
        if not isinstance(target, str):
            return match.group(0)
        return f"from {target} import"

    body = _ENGINE_IMPORT.sub(engine_import, "".join(lines))
    return "import tests.compat.table as _compat; " + body
