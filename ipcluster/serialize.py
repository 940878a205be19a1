"""Messages layer: objects to bytes and back, with large buffers kept out of band.

cloudpickle (pickle protocol 5) handles lambdas, closures and functions defined in ``__main__``
or a notebook. Contiguous buffers of 64 KiB or more (numpy arrays, bytearrays, memoryviews)
leave the pickle stream and travel as their own frames (or, on one host, as shared memory: see
shm.py), so they are never copied on the way out, and arrive writable without a copy.
"""

from __future__ import annotations

import builtins
import copyreg
import ctypes
import hashlib
import io
import pickle
import sys
import threading
import types
import weakref
from collections import ChainMap

import cloudpickle

from ipcluster import shm
from ipcluster.errors import SerializationError

OUT_OF_BAND_MIN = 64 * 1024


def _code_reduce(code: types.CodeType):
    # cloudpickle replaces the file name of code it pickles by value with "<dynamic-code>";
    # keep the real one, so remote tracebacks show source lines where the file is readable.
    constructor, args = cloudpickle.cloudpickle._code_reduce(code)
    return constructor, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)


def dumps(obj, what: str = "object") -> tuple[bytes, list]:
    """Pickle `obj`; returns the pickle bytes and the out-of-band buffers."""
    buffers: list = []

    def keep_large(pb: pickle.PickleBuffer) -> bool:
        view = pb.raw()
        if view.nbytes < OUT_OF_BAND_MIN:
            return True  # in band
        buffers.append(view)
        return False

    try:
        out = io.BytesIO()
        _Pickler(out, protocol=5, buffer_callback=keep_large).dump(obj)
        return out.getvalue(), buffers
    except Exception as exc:
        raise SerializationError(
            f"cannot send {what}: {type(exc).__name__}: {exc}. Objects such as locks, open "
            "files, sockets and generators cannot be pickled; create them on the engines "
            "(e.g. with view.execute or inside the function) and send what is needed to build them"
        ) from exc


_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})


def _atomic(obj) -> bool:
    """Exactly a plain scalar, or a tuple, list or dict of up to 16 of them: what the standard
    pickler writes byte for byte as cloudpickle does (no subclass: an IntEnum member of a class
    of ``__main__`` is pickled by reference by the standard pickler, by value by cloudpickle;
    by reference it would not load on the other side). A call's arguments and a result."""
    kind = type(obj)
    if kind in _ATOMS:
        return True
    if kind is tuple or kind is list:
        return len(obj) <= 16 and all([type(v) in _ATOMS for v in obj])
    if kind is dict:
        return len(obj) <= 16 and all([type(k) in _ATOMS and type(v) in _ATOMS
                                       for k, v in obj.items()])
    return False


def dumps_result(obj) -> tuple[bytes, list]:
    """A task's return value pickled (`dumps`), small plain data without building a
    cloudpickle pickler (the same bytes)."""
    if _atomic(obj):
        return pickle.dumps(obj, protocol=5), []
    return dumps(obj, "the result")


class _Pickled(bytes):
    """A function pickled once, inside the pickle of a call: unpickled where the call is, by
    `_unpickled_once` (named in the call's pickle, so a plain ``pickle.loads`` finds it)."""

    def __reduce__(self):
        return _unpickled_once, (bytes(self),)


_cache: dict = {}  # (function, code, tokens of what it captured) -> _Pickled
_filling = threading.Lock()  # several threads may submit at once: see `_remember`
_names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # code -> the globals it names
CACHE_SIZE = 256


class _Mutable(Exception):
    """A captured value that may change without changing identity: the function is not cached."""


def _token(value, depth: int = 0):
    """What identifies `value` exactly for as long as it exists, if pickling it later gives the
    same bytes (and unpickling them an equal immutable value, or the very same object): plain
    immutable data (exact types, with its type), modules as imported (not one sent by value),
    builtins of a module, and functions or classes pickled by reference (by name). Raises
    `_Mutable` for anything else."""
    kind = type(value)
    if kind in _ATOMS or kind is range:
        return kind.__name__, value
    if (kind is tuple or kind is frozenset) and depth < 3 and len(value) <= 32:
        return kind.__name__, tuple([_token(v, depth + 1) for v in value])
    if isinstance(value, types.ModuleType) and sys.modules.get(value.__name__) is value:
        return "module", value.__name__
    if kind is types.BuiltinFunctionType and isinstance(value.__self__, (types.ModuleType, type(None))):
        return "builtin", value.__module__, value.__qualname__
    if ((kind is types.FunctionType or isinstance(value, type))
            and cloudpickle.cloudpickle._should_pickle_by_reference(value)):
        return "ref", value.__module__, value.__qualname__
    raise _Mutable


def _global_names(code) -> tuple:
    names = _names.get(code)
    if names is None:
        names = _names[code] = tuple(sorted(cloudpickle.cloudpickle._extract_code_globals(code)))
    return names


def _captured(f):
    """Tokens of what cloudpickle captures when it pickles `f` by value (the globals its code
    names, its closure, its defaults), or None if any of it may change: then `f` is not cached."""
    if f.__dict__:
        return None
    names = _global_names(f.__code__)
    space, closure, defaults, kwdefaults = f.__globals__, f.__closure__, f.__defaults__, f.__kwdefaults__
    try:  # each part looked at only if there is one
        return (tuple([(n, _token(space[n])) for n in names if n in space]) if names else (),
                tuple([_token(c.cell_contents) for c in closure]) if closure else (),
                _token(defaults) if defaults else (),
                _token(tuple(kwdefaults.items())) if kwdefaults else ())
    except (_Mutable, ValueError):  # ValueError: an empty closure cell
        return None


def _held(f) -> tuple | None:
    """The very objects `f` holds that its pickle depends on (`_unchanged` compares them), or
    None if it has keyword defaults (a dict, changed in place unseen) or an empty cell."""
    if f.__kwdefaults__:
        return None
    code, space = f.__code__, f.__globals__
    try:
        cells = tuple([c.cell_contents for c in f.__closure__ or ()])
    except ValueError:
        return None
    return (code, f.__module__, f.__defaults__, cells,
            tuple([(n, space.get(n, _UNSET)) for n in _global_names(code)]))


def _unchanged(f, code, module, defaults, cells, values) -> bool:
    """True if `f` still holds the very objects `_held` gave (immutable ones, as `_token` took
    them, so the same objects pickle to the same bytes): a check by identity alone, without
    tokens or hashing, for every call of a function already cached."""
    if (f.__code__ is not code or f.__module__ is not module or f.__defaults__ is not defaults
            or f.__kwdefaults__ or f.__dict__):
        return False
    try:
        if cells and any([c.cell_contents is not v for c, v in zip(f.__closure__, cells)]):
            return False
    except ValueError:  # a cell emptied since
        return False
    space = f.__globals__
    return not values or all([space.get(n, _UNSET) is v for n, v in values])


_seen: dict = {}  # function -> what `_held` gave when it was cached, and its _Pickled
_UNSET = object()


def _function(f):
    """`f` ready to go in a call's pickle: pickled once per function and captured state when
    cloudpickle would pickle it by value (from ``__main__`` or a notebook), so a task carries
    its arguments, not the function's code again. A function that captured anything mutable
    is pickled afresh each time, so a changed value is never sent stale."""
    if type(f) is types.FunctionType:
        seen = _seen.get(f)
        if seen is not None and _unchanged(f, *seen[:-1]):
            return seen[-1]
    if not isinstance(f, types.FunctionType) or cloudpickle.cloudpickle._should_pickle_by_reference(f):
        return f
    held = _held(f)  # before it is tokenized and pickled: kept if it held them throughout
    state = _captured(f)
    if state is None:
        return f
    key = (f, f.__code__, state)
    cached = _cache.get(key)
    if cached is None:
        cached = _Pickled(dumps(f, "the function")[0])
        _remember(_cache, key, cached)
    if held is not None and _unchanged(f, *held):
        _remember(_seen, f, (*held, cached))
    return cached


def _remember(cache: dict, key, value) -> None:
    """`cache[key] = value`, the oldest entries going past CACHE_SIZE: under a lock, as two
    threads evicting at once would both take the same oldest key (KeyError)."""
    with _filling:
        while len(cache) >= CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = value


def dumps_call(f, args: tuple, kwargs: dict) -> tuple[bytes, list]:
    """Pickle a call; when that fails, name the argument that cannot be pickled."""
    f = _function(f)
    if isinstance(f, _Pickled) and _atomic(args) and _atomic(kwargs):
        return pickle.dumps((f, args, kwargs), protocol=5), []  # no cloudpickle machinery
    try:
        return dumps((f, args, kwargs))
    except SerializationError:
        parts = [("the function", f)] + [(f"argument {i}", a) for i, a in enumerate(args)]
        parts += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for what, value in parts:
            dumps(value, f"{what} ({type(value).__name__} object)")
        raise


# -- the engine's side of `_Pickled`: a function unpickled once per its bytes ---------------

_BUILTINS = vars(builtins)  # what cloudpickle sets every function's __builtins__ to
_functions: dict = {}  # a function's pickle -> the function unpickled from it, or None: not reused
FUNCTION_BYTES = 64 * 1024  # larger pickles are not kept


def _fixed(value) -> bool:
    """True for what unpickling the same bytes again gives an equal immutable value of, or the
    very same object (`_token`)."""
    try:
        _token(value)
        return True
    except _Mutable:
        return False


def _reusable(f) -> bool:
    """True for a function whose every part a call could change is rebuilt by `_fresh` or
    `_fixed`: no attributes, and its defaults, closure, globals and annotations fixed."""
    if type(f) is not types.FunctionType or f.__dict__:
        return False
    try:
        return (_fixed(f.__defaults__ or ()) and _fixed(tuple((f.__kwdefaults__ or {}).items()))
                and _fixed(tuple([c.cell_contents for c in f.__closure__ or ()]))
                and all([_fixed(v) or v is _BUILTINS for v in f.__globals__.values()])
                and _fixed(tuple(f.__annotations__.values())))
    except ValueError:  # an empty closure cell
        return False


_TYPE_PARAMS = sys.version_info >= (3, 12)  # functions have __type_params__


def _fresh(f):
    """A new function as unpickling `f`'s bytes again would give: its own globals, cells,
    keyword defaults, annotations and attributes; code and fixed values shared."""
    closure = f.__closure__
    g = types.FunctionType(f.__code__, dict(f.__globals__), f.__name__, f.__defaults__,
                           tuple([types.CellType(c.cell_contents) for c in closure])
                           if closure else None)
    if f.__kwdefaults__ is not None:
        g.__kwdefaults__ = dict(f.__kwdefaults__)
    if f.__annotations__:  # else g makes its own empty one when asked
        g.__annotations__ = dict(f.__annotations__)
    g.__qualname__, g.__module__, g.__doc__ = f.__qualname__, f.__module__, f.__doc__
    if _TYPE_PARAMS:
        g.__type_params__ = f.__type_params__
    return g


def _unpickled_once(data: bytes):
    """A `_Pickled` function, where its call is unpickled: unpickled once per bytes (the same
    function from one client comes with every task), a fresh copy per call, so nothing a call
    changes is seen by the next (as if unpickled anew); one that is not `_reusable` anew."""
    known = _functions.get(data, _functions)
    if known is None:
        return pickle.loads(data)
    if known is _functions:
        f = pickle.loads(data)
        known = f if len(data) <= FUNCTION_BYTES and _reusable(f) else None
        if len(_functions) >= CACHE_SIZE:
            _functions.pop(next(iter(_functions)))
        _functions[data] = known
        if known is None:
            return f
    return _fresh(known)


# A call's pickle names `_unpickled_once` by a copyreg extension code (private-use range), in
# 2 bytes: the engine's unpickler finds it in a table, with no import machinery per call. Where
# the code is taken (by the user's code, before ipcluster was imported), the pickle names it by
# module and name instead, which loads the same.
EXTENSION = 241
try:
    copyreg.add_extension(__name__, "_unpickled_once", EXTENSION)
except ValueError:
    pass


def digest(content, buffers) -> str:
    """A digest of a pickled call: equal for the same function and arguments."""
    h = hashlib.blake2b(content, digest_size=16)
    for b in buffers:
        h.update(b)
    return h.hexdigest()


def check_size(content, buffers, limit: int, what: str) -> None:
    """Refuse to send a frame the controller would refuse (it disconnects such a peer)."""
    if limit is None or limit < 0 or not buffers and len(content) <= limit:
        return
    largest = max([len(content), *(memoryview(b).nbytes for b in buffers)])
    if largest > limit:
        if what == "the result":
            tips = ("return less (a summary, or one part per task), or keep it on the engine (assign "
                    "it to a name, then pull it in pieces), or write it to a shared file and return "
                    "the path")
        else:
            tips = "send it in pieces (view.scatter, or several push calls)"
        bigger = 1 << (2 * largest - 1).bit_length()
        raise SerializationError(
            f"cannot send {what}: a part of it is {largest:,} bytes, more than the cluster's "
            f"max_message_size of {limit:,} bytes; {tips}; or start the cluster with a larger "
            f"limit: Cluster(..., max_message_size={bigger}) or `ipcluster start "
            f"--max-message-size {bigger}`")


def writable(frame):
    """A writable view of a received frame, without copying it when numpy can tell us where
    its memory is (zmq hands out read-only views of memory that is ours alone once received
    over TCP); a copy otherwise. Arrays built on it are writable and keep the frame alive.
    A buffer that came through shared memory is mapped copy-on-write, not copied."""
    if isinstance(frame, shm.Segment):
        return frame.map()
    if isinstance(frame, memoryview) and not frame.readonly:  # mapped already (`received`)
        return frame
    view = getattr(frame, "buffer", frame)
    if view is frame or not len(view):
        return bytearray(view)
    try:
        import numpy
    except ImportError:
        return bytearray(view)
    address = numpy.frombuffer(view, numpy.uint8).ctypes.data
    memory = (ctypes.c_char * len(view)).from_address(address)
    memory.frame = frame  # the frame owns the memory: it lives as long as the view
    return memoryview(memory).cast("B")


def received(buffers) -> list:
    """Received buffers with those in shared memory mapped, for a reader that looks at the
    bytes (provenance hashes) before unpickling them."""
    return [b.map() if isinstance(b, shm.Segment) else b for b in buffers]


def loads(content, buffers=()) -> object:
    """Unpickle; call only on content whose signature has been checked. A task's function
    that its client pickled once (`_Pickled`) is unpickled once here too (`_unpickled_once`)."""
    try:
        return pickle.loads(content, buffers=[writable(b) for b in buffers] if buffers else None)
    except ModuleNotFoundError as exc:
        raise SerializationError(
            f"cannot unpickle the result: module {exc.name!r} is not installed here; "
            "install it locally or return plain types (lists, dicts, numpy arrays)"
        ) from exc
    except Exception as exc:
        raise SerializationError(f"cannot unpickle: {type(exc).__name__}: {exc}") from exc
