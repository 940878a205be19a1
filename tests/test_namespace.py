"""The engine namespace: push/pull/execute, and functions from __main__ seeing pushed names."""

from __future__ import annotations

import types

import pytest

from ipcluster import serialize
from ipcluster import namespace
from ipcluster.engine import shell
from ipcluster.engine.capture import Capture


@pytest.fixture(autouse=True)
def clean_namespace():
    saved = dict(namespace.user_ns)
    yield
    namespace.user_ns.clear()
    namespace.user_ns.update(saved)


def main_function(source: str, name: str, **captured):
    """A function as cloudpickle delivers one defined in a client's __main__."""
    g = {"__name__": "__main__", **captured}
    exec(source, g)
    return serialize.loads(*serialize.dumps(g[name]))


def test_main_functions_see_pushed_names_and_names_on_the_engine_win():
    f = main_function("def f():\n    return a + b\n", "f", b=1)
    namespace.push({"a": 10})
    assert namespace.bind(f)() == 11
    namespace.push({"b": 100})
    assert namespace.bind(f)() == 110


def test_main_functions_keep_defaults_closures_and_keyword_defaults():
    f = main_function("def outer(k):\n    def f(x, y=2, *, z=3):\n        return x + y + z + k\n"
                      "    return f\nf = outer(1000)\n", "f")
    assert namespace.bind(f)(1) == 1006


def test_functions_from_importable_modules_are_left_alone():
    import os.path

    assert namespace.bind(os.path.join) is os.path.join
    plain = types.FunctionType((lambda: 1).__code__, {})
    assert namespace.bind(plain) is plain


def test_pull_and_execute(monkeypatch):
    monkeypatch.setattr(namespace, "cell_runner", shell.run_cell)  # as the engine installs it
    namespace.execute("x = 6 * 7\ny = [x]")
    assert namespace.pull("x") == 42
    assert namespace.pull(["x", "y"]) == [42, [42]]
    with pytest.raises(NameError, match="'nope' is not defined on engine"):
        namespace.pull("nope")


def test_capture_tags_output_with_the_running_task_and_joins_writes():
    import io

    log = io.StringIO()
    capture = Capture()
    capture.write("stdout", "before any task\n", log)
    capture.task = "t1"
    capture.write("stdout", "a", log)
    capture.write("stdout", "b\n", log)
    capture.write("stderr", "oops\n", log)
    capture.task = None
    assert capture.take() == [("t1", "stdout", "ab\n"), ("t1", "stderr", "oops\n")]
    assert capture.take() == []
    assert log.getvalue() == "before any task\n"


def test_execute_outside_an_engine_says_where_it_runs(monkeypatch):
    monkeypatch.setattr(namespace, "cell_runner", None)
    with pytest.raises(RuntimeError, match="runs code cells on an engine"):
        namespace.execute("x = 1")


def test_references_in_a_call_are_resolved_where_they_are_and_plain_arguments_kept(monkeypatch):
    monkeypatch.setattr(namespace, "user_ns", {"a": 1, "f": abs})
    ref = namespace.Reference
    f, args, kwargs = namespace.resolve_call(ref("f"), (ref("a"), [ref("a"), 2], (3, ref("a"))),
                                             {"k": ref("a"), "d": {"x": ref("a")}})
    assert (f, args, kwargs) == (abs, (1, [1, 2], (3, 1)), {"k": 1, "d": {"x": 1}})
    plain_args, plain_kwargs = (1, "x", None), {"k": 2.5}
    _, args, kwargs = namespace.resolve_call(abs, plain_args, plain_kwargs)
    assert args is plain_args and kwargs is plain_kwargs
