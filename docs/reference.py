"""Write docs/api.md, the API reference, as Markdown from the docstrings: readable in the
repository as well as in the built site. tests/test_docs.py checks that it is current.

    python docs/reference.py            # rewrite docs/api.md
    python docs/reference.py --check    # exit 1 if docs/api.md differs from the docstrings
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path

API = Path(__file__).resolve().parent / "api.md"

# (heading, [(what, inherited members too)]); "what" is ipcluster.<name> or a module
SECTIONS = [
    ("Clusters and clients", [("ipcluster.Cluster", False), ("ipcluster.ClusterManager", False),
                              ("ipcluster.Client", False)]),
    ("Views", [("ipcluster.DirectView", True), ("ipcluster.LoadBalancedView", True),
               ("ipcluster.BroadcastView", False)]),
    ("Results and executors", [("ipcluster.AsyncResult", False), ("ipcluster.ViewExecutor", False)]),
    ("Decorators and references", [("ipcluster.require", False), ("ipcluster.depend", False),
                                   ("ipcluster.interactive", False), ("ipcluster.Reference", False)]),
    ("Dask and joblib", [("ipcluster.register_joblib_backend", False),
                         ("module ipcluster.daskbridge", False),
                         ("module ipcluster.joblib_backend", False)]),
    ("Errors", [("module ipcluster.errors", False)]),
]


def markdown(doc: str | None) -> str:
    """A docstring as Markdown: indented blocks become fenced code, reST's ``::`` a colon."""
    if not doc:
        return ""
    out, lines = [], inspect.cleandoc(doc).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        starts_block = line.startswith("    ") and (i == 0 or not lines[i - 1].strip())
        if starts_block:
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["```python", textwrap.dedent("\n".join(block)), "```", ""]
            continue
        out.append(re.sub(r"(\S)::$", r"\1:", line))
        i += 1
    return "\n".join(out).strip() + "\n"


class Annotation(str):
    """An annotation kept as text (``from __future__ import annotations``), shown unquoted."""

    def __repr__(self) -> str:
        return str(self)


def signature(obj) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "()"

    def bare(a):
        return Annotation(a) if isinstance(a, str) else a

    sig = sig.replace(parameters=[p.replace(annotation=bare(p.annotation)) for p in sig.parameters.values()],
                      return_annotation=bare(sig.return_annotation))
    return re.sub(r"^\(self,? ?", "(", str(sig))


def wrapped(name: str, sig: str, width: int = 72) -> str:
    """``name(sig)``, one parameter a line when it is longer than `width`."""
    if len(name) + len(sig) <= width:
        return name + sig
    params, _, rest = sig[1:].rpartition(")")
    parts, depth, current = [], 0, ""
    for ch in params:
        depth += ch in "([{" and 1 or 0
        depth -= ch in ")]}" and 1 or 0
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return name + "(\n" + "".join(f"    {p},\n" for p in parts if p) + ")" + rest


def members(cls, inherited: bool):
    owners = [c for c in cls.__mro__ if c.__module__.startswith("ipcluster")] if inherited else [cls]
    seen = set()
    for owner in owners:
        for name, value in vars(owner).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if isinstance(value, property) or inspect.isfunction(value):
                yield name, value


def document_class(cls, inherited: bool, qualname: str) -> list[str]:
    bases = [b.__name__ for b in cls.__bases__ if b is not object]
    out = [f"### class `{qualname}`", "", "```python", wrapped(qualname, signature(cls).removesuffix(" -> None")),
           "```", ""]
    if bases:
        out += [f"Bases: {', '.join(f'`{b}`' for b in bases)}", ""]
    out.append(markdown(cls.__doc__))
    for name, value in members(cls, inherited):
        if isinstance(value, property):
            out += [f"#### `{cls.__name__}.{name}` (property)", "", markdown(value.__doc__)]
        else:
            prefix = "async " if inspect.iscoroutinefunction(value) else ""
            out += [f"#### `{prefix}{cls.__name__}.{name}{signature(value)}`", "",
                    markdown(value.__doc__)]
    return out


def document(what: str, inherited: bool) -> list[str]:
    if what.startswith("module "):
        module = importlib.import_module(what.split()[1])
        out = [f"### `{module.__name__}`", "", markdown(module.__doc__)]
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(value):
                out += document_class(value, False, f"{module.__name__}.{name}")
            elif inspect.isfunction(value):
                out += [f"#### `{module.__name__}.{name}{signature(value)}`", "", markdown(value.__doc__)]
        return out
    module_name, _, name = what.rpartition(".")
    obj = getattr(importlib.import_module(module_name), name)
    if inspect.isclass(obj):
        return document_class(obj, inherited, what)
    return [f"### `{what}{signature(obj)}`", "", markdown(obj.__doc__)]


def render() -> str:
    out = ["# API reference", "",
           "Generated from the docstrings by `docs/reference.py` (run it after changing one). "
           "`import ipcluster as ipp` gives every `ipcluster.` name on this page.", ""]
    for heading, items in SECTIONS:
        out += [f"## {heading}", ""]
        for what, inherited in items:
            out += document(what, inherited)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if API.read_text() != text:
            print(f"{API} is not current: run `python docs/reference.py`", file=sys.stderr)
            return 1
        return 0
    API.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
