"""Messages layer: what identifies a task's work: its function's name, and (for provenance)
hashes of its code and of the bytes of its call and result.

The name travels in the apply header, so that the controller and a dashboard can tell tasks
apart without unpickling anything.
"""

from __future__ import annotations

import marshal
import os
import sys

import xxhash

from ipcluster import namespace


def qualified_name(f) -> str:
    """``module.qualname`` of a callable (``functools.partial`` shows the function it wraps)."""
    inner = getattr(f, "func", None)
    if inner is not None and callable(inner):
        f = inner
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    module = getattr(f, "__module__", None) or type(f).__module__
    return f"{module}.{name}" if module not in (None, "builtins") else name


# -- provenance: hashes taken where the bytes already are ----------------------------------

def data_hash(content, buffers=()) -> str:
    """xxh3-128 of a pickle and its out-of-band buffers, in one pass over bytes already in
    memory (several GB/s: a large result costs no extra copy)."""
    if not buffers:
        return xxhash.xxh3_128_hexdigest(content)
    h = xxhash.xxh3_128(content)
    for b in buffers:
        h.update(b)
    return h.hexdigest()


def code_hash(f) -> str | None:
    """xxh3-128 of a Python function's code object (bytecode, constants, names, nested code),
    as marshal writes it; None for callables without Python code (builtins)."""
    inner = getattr(f, "func", None)
    code = getattr(inner if callable(inner) else f, "__code__", None)
    if code is None:
        return None
    known = _code_hashes.get(id(code))
    if known is not None and known[0] is code:  # the same code again (a function sent once)
        return known[1]
    digest = xxhash.xxh3_128(marshal.dumps(code)).hexdigest()
    if len(_code_hashes) >= CODE_HASHES:
        _code_hashes.pop(next(iter(_code_hashes)))
    _code_hashes[id(code)] = (code, digest)  # kept alive with it: its id is not reused
    return digest


_code_hashes: dict = {}  # id of a code object -> (the code, its hash), oldest first
CODE_HASHES = 256


def environment() -> dict:
    """This interpreter: its version and the installed distributions (name -> version), read
    from the names of the metadata folders on sys.path (a millisecond, no file opened)."""
    packages = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                project, _, version = name.rsplit(".", 1)[0].partition("-")
                packages.setdefault(project, version.split("-")[0] or "?")
    return {"python": sys.version.split()[0], "implementation": sys.implementation.name,
            "executable": sys.executable, "packages": dict(sorted(packages.items()))}


def user_function(f, args: tuple):
    """The function a task runs for its user: the mapped one for a chunk of a map."""
    return args[0] if f is namespace.map_chunk and args else f


def facts(f, call_content, call_buffers, content, buffers) -> dict:
    """What an engine says of a task it ran: function, code hash, hashes of the call's bytes
    (function and arguments, as received) and of the result's (as sent)."""
    return {"fn": qualified_name(f) if f is not None else None,
            "code": code_hash(f) if f is not None else None,
            "call": data_hash(call_content, call_buffers), "result": data_hash(content, buffers)}
