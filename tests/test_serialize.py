"""Serialization: closures, out-of-band buffers, writable arrays, and clear failures."""

from __future__ import annotations

import sys
import threading

import cloudpickle
import numpy as np
import pytest

from ipcluster import serialize
from ipcluster.errors import SerializationError
from tests.conftest import errors_of_threads_at_once


def test_large_arrays_travel_out_of_band_and_small_ones_in_band():
    big, small = np.arange(100_000), np.arange(10)
    content, buffers = serialize.dumps({"big": big, "small": small})
    assert len(buffers) == 1 and memoryview(buffers[0]).nbytes == big.nbytes
    assert len(content) < 2000  # the big array is not in the pickle stream
    out = serialize.loads(content, buffers)
    assert np.array_equal(out["big"], big) and np.array_equal(out["small"], small)


def test_out_of_band_buffers_are_not_copied_when_sent():
    a = np.arange(100_000)
    _, buffers = serialize.dumps(a)
    assert np.shares_memory(np.frombuffer(buffers[0], dtype=a.dtype), a)


def test_received_arrays_are_writable():
    content, buffers = serialize.dumps(np.zeros(100_000))
    out = serialize.loads(content, [bytes(b) for b in buffers])  # read-only, as frames are
    out[0] = 1.0
    assert out[0] == 1.0


def test_closures_and_lambdas_round_trip():
    k = 7
    content, buffers = serialize.dumps(lambda x: x + k)
    assert serialize.loads(content, buffers)(1) == 8


def test_code_keeps_its_file_name_for_remote_tracebacks():
    def f():
        return 1

    g = serialize.loads(*serialize.dumps(f))
    assert g.__code__.co_filename == __file__


def test_an_unpicklable_argument_is_named():
    with pytest.raises(SerializationError, match=r"keyword argument 'lock' \(lock object\)"):
        serialize.dumps_call(print, (1,), {"lock": threading.Lock()})


def test_a_missing_module_on_load_is_named(tmp_path, monkeypatch):
    import importlib
    import sys

    (tmp_path / "only_on_the_sender.py").write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("only_on_the_sender")
    content, buffers = serialize.dumps(module.f)  # importable here: pickled by reference
    del sys.modules["only_on_the_sender"]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(SerializationError, match="module 'only_on_the_sender' is not installed"):
        serialize.loads(content, buffers)


# -- the pickled-function cache: never a stale value ----------------------------------------

def main_function(source: str, name: str, namespace: dict):
    """A function as a notebook cell or script defines it: in ``__main__``, pickled by value."""
    namespace.setdefault("__name__", "__main__")
    exec(source, namespace)
    return namespace[name]


def call(f, *args):
    content, buffers = serialize.dumps_call(f, args, {})
    g, a, k = serialize.loads(content, buffers)
    return g(*a, **k), content


def test_a_changed_global_is_sent_anew_and_an_unchanged_function_is_pickled_once():
    ns = {"SCALE": 2}
    f = main_function("def f(x):\n    return SCALE * x\n", "f", ns)
    first, content = call(f, 5)
    again, same = call(f, 5)
    assert first == again == 10 and same == content  # one pickle of f, reused
    ns["SCALE"] = 3  # the global changes between two calls
    assert call(f, 5)[0] == 15


def test_a_global_changed_in_place_or_a_rebound_closure_is_never_stale():
    ns = {"WEIGHTS": [1, 2]}
    f = main_function("def f(i):\n    return WEIGHTS[i]\n", "f", ns)
    assert call(f, 1)[0] == 2
    ns["WEIGHTS"][1] = 20  # mutable: never cached
    assert call(f, 1)[0] == 20

    g = main_function("def outer():\n    n = 1\n    def g():\n        return n\n"
                      "    def bump():\n        nonlocal n\n        n += 1\n    return g, bump\n",
                      "outer", {})
    inner, bump = g()
    assert call(inner)[0] == 1
    bump()
    assert call(inner)[0] == 2


def test_a_cached_function_is_checked_by_identity_and_every_change_is_seen():
    ns = {}
    f = main_function("def f(x=1):\n    return x + EXTRA\n", "f", ns)
    with pytest.raises(NameError):
        call(f)  # EXTRA is not defined yet: pickled (and remembered) without it
    ns["EXTRA"] = 10  # a global that appears
    assert call(f)[0] == 11 and call(f)[0] == 11 and f in serialize._seen
    f.__defaults__ = (2,)  # new defaults
    assert call(f)[0] == 12
    ns["EXTRA"] = 1000 * 1000  # rebound: another object, even if equal to one before
    assert call(f)[0] == 1000002
    f.__code__ = main_function("def g(x=1):\n    return x - EXTRA\n", "g", ns).__code__
    assert call(f)[0] == 2 - 1000000
    f.__kwdefaults__ = {"unused": 1}  # a dict may change in place: not checked by identity
    assert call(f)[0] == 2 - 1000000
    f.__kwdefaults__["unused"] = 2
    assert serialize._unchanged(f, *serialize._seen[f][:-1]) is False


def test_functions_capturing_modules_and_builtins_are_cached_and_bound_methods_are_not():
    ns = {"math": __import__("math"), "LOG": __import__("math").log, "ITEMS": [1]}
    f = main_function("def f(x):\n    return math.floor(LOG(x))\n", "f", ns)
    assert call(f, 10)[1] == call(f, 10)[1] and call(f, 10)[0] == 2
    g = main_function("def g(x):\n    return APPEND(x)\n", "g", {"APPEND": ns["ITEMS"].append})
    assert serialize._captured(g) is None  # a method bound to a list: its list may change


def test_a_small_plain_result_is_pickled_to_the_same_bytes_without_cloudpickle():
    import enum
    import pickle

    class Colour(enum.IntEnum):
        RED = 1

    plain = [None, True, 3, 2.5, 1j, "é", b"x", (1, "a"), [1.0, None], {"a": 1, 2: b"b"}, (),
             ["x"] * 16]
    for value in plain:
        assert serialize._atomic(value), value
        assert serialize.dumps_result(value) == serialize.dumps(value), value
        assert pickle.loads(serialize.dumps_result(value)[0]) == value
    # subclasses, nesting, more than 16 items and anything else take cloudpickle's way
    for value in [Colour.RED, [Colour.RED], ((1,),), [[1]], list(range(17)), {"a": [1]},
                  lambda: 1, bytearray(b"x"), {1, 2}]:
        assert not serialize._atomic(value), value
    f = pickle.loads(serialize.dumps_result(lambda x: x + 1)[0])
    assert f(1) == 2


def _sent_once(f, *args):
    """A call's bytes as a client sends them when it pickled the function once (`_Pickled`)."""
    import pickle

    return pickle.dumps((serialize._Pickled(cloudpickle.dumps(f)), args, {}), protocol=5)


def _counter():
    n = 0

    def bump():
        nonlocal n
        n += 1
        return n

    return bump


TOTAL = 0


def _add_to_total(x, *, scale=1):
    global TOTAL
    TOTAL = TOTAL + x * scale
    return TOTAL


def test_a_function_sent_once_is_unpickled_once_and_each_call_sees_it_as_if_unpickled_anew():
    serialize._functions.clear()
    for f, args, first in [(_counter(), (), 1), (_add_to_total, (5,), 5)]:
        f.__module__ = "__main__"  # sent by value, as a notebook's function
        content = _sent_once(f, *args)
        calls = [serialize.loads(content) for _ in range(3)]
        assert len({id(g) for g, _, _ in calls}) == 3
        assert len({id(g.__code__) for g, _, _ in calls}) == 1  # unpickled once
        for g, a, kw in calls:
            assert g(*a, **kw) == first  # a nonlocal or a global it set is not seen again
        g = calls[0][0]
        g.tag, g.__defaults__ = "changed", (9,)
        if g.__kwdefaults__ is not None:
            g.__kwdefaults__["scale"] = 100
        again = serialize.loads(content)[0]
        assert not hasattr(again, "tag") and again.__defaults__ is None
        assert again(*args) == first


def test_a_function_with_mutable_state_sent_once_is_still_unpickled_anew_each_time():
    def collect(x, seen=[]):  # noqa: B006 -- the mutable default is the point
        seen.append(x)
        return len(seen)

    shared = {"calls": 0}

    def count():
        shared["calls"] += 1
        return shared["calls"]

    for f, args in [(collect, (1,)), (count, ())]:
        f.__module__ = "__main__"
        content = _sent_once(f, *args)
        results = [g(*a) for g, a, _ in (serialize.loads(content) for _ in range(3))]
        assert results == [1, 1, 1]
        assert serialize._functions[cloudpickle.dumps(f)] is None  # not kept


def test_a_call_names_the_unpickler_of_its_function_by_extension_code_or_by_name_alike():
    """The engine finds `_unpickled_once` by its copyreg extension code (no import per call); a
    client where that code was taken names it by module and name, which loads the same."""
    import copyreg

    by_code = _sent_once(_add_to_total, 0)
    copyreg.remove_extension("ipcluster.serialize", "_unpickled_once", serialize.EXTENSION)
    try:
        by_name = _sent_once(_add_to_total, 0)
    finally:
        copyreg.add_extension("ipcluster.serialize", "_unpickled_once", serialize.EXTENSION)
    assert b"_unpickled_once" in by_name and b"_unpickled_once" not in by_code
    for content in (by_code, by_name):
        g, args, kwargs = serialize.loads(content)
        assert g.__name__ == "_add_to_total"
        assert g(*args, **kwargs) == TOTAL


def test_a_call_whose_function_is_any_pickle_loads_still_loads_as_pickle_would():
    import pickle

    class Loads:  # pickle.loads(bytearray(...)) as the call's function (bytes are not it)
        def __reduce__(self):
            return pickle.loads, (bytearray(pickle.dumps(abs)),)

    content = pickle.dumps((Loads(), (-2,), {}), protocol=5)
    f, args, kwargs = serialize.loads(content)
    assert f is abs and f(*args) == 2


def _main_function(i):
    ns = {"__name__": "__main__"}  # pickled by value, as a script's or notebook's function
    exec(f"def f{i}(x=None):\n    return {i}\n", ns)
    return ns[f"f{i}"]


def test_threads_pickling_functions_at_once_never_fail():
    """apply_async is thread-safe: threads pickling new functions at once (lambdas made in a
    loop fill the caches, which then evict) never fail."""
    def submitter(base):
        for i in range(2000):
            serialize._function(_main_function(base * 100_000 + i))

    errors = errors_of_threads_at_once(submitter, 8)
    assert not errors, errors[0]
