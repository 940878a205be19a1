"""The client's side of dependencies: `Dependency`, the `after`/`follow`/`priority` flags of a
load-balanced view, and the plain data they put in the apply header."""

from __future__ import annotations

import itertools
import threading
import types

import pytest

from ipcluster import AsyncResult, Dependency, LoadBalancedView
from ipcluster.submission import Submitter
from ipcluster.task import TaskFuture


def ar(*ids):
    return AsyncResult([TaskFuture(i) for i in ids], "list")


def test_dependency_takes_ids_async_results_and_lists_of_them():
    d = Dependency(["a", ar("b", "c"), [ar("d")]], all=False, failure=True)
    assert d == {"a", "b", "c", "d"}
    assert d.to_wire() == {"ids": ["a", "b", "c", "d"], "all": False, "success": True,
                           "failure": True}
    assert Dependency("a") == {"a"} and Dependency(ar("x")) == {"x"}
    assert Dependency([]).to_wire() is None
    assert Dependency.of(d) is d


def test_dependency_defaults_and_bad_values():
    d = Dependency.of(["a"])  # a plain list means all=True, success=True, failure=False
    assert (d.all, d.success, d.failure) == (True, True, False)
    with pytest.raises(ValueError, match="successes, failures or both"):
        Dependency(["a"], success=False, failure=False)
    with pytest.raises(TypeError, match="msg id, an AsyncResult"):
        Dependency([1])


def test_view_flags_become_dependencies_when_set():
    view = LoadBalancedView(None, after="a", follow=[ar("b")])
    assert isinstance(view.after, Dependency) and view.follow == {"b"}
    with view.temp_flags(after=Dependency(["c"], all=False)):
        assert view.after == {"c"} and not view.after.all
    assert view.after == {"a"}
    with pytest.raises(TypeError):
        view.set_flags(follow=3.5)
    assert "after" in LoadBalancedView.flag_names and "priority" in LoadBalancedView.flag_names


class Sent(Exception):
    """Raised by the fake session with the header it was given."""


def fake_submitter():
    ids = itertools.count()
    session = types.SimpleNamespace(
        check_usable=lambda: None, engine_ids=[0], tasks={}, ids=lambda: f"m{next(ids)}",
        info=types.SimpleNamespace(max_message_size=1 << 20), submitting=threading.Lock())

    def send(header, content, buffers, track=False):
        raise Sent(header)

    session.sender = types.SimpleNamespace(send=send)
    return Submitter(session, {}, [], refresh_ids=None, keep=lambda *request: None, fetch=None)


def header_for(flags):
    with pytest.raises(Sent) as sent:
        fake_submitter().submit(len, ([],), {}, None, balanced=True, flags=flags)
    return sent.value.args[0]


def test_after_follow_and_priority_reach_the_apply_header_as_plain_data():
    header = header_for({"after": Dependency(["a", "b"]), "follow": ar("c"), "priority": 5})
    assert header["after"] == {"ids": ["a", "b"], "all": True, "success": True, "failure": False}
    assert header["follow"] == {"ids": ["c"], "all": True, "success": True, "failure": False}
    assert header["priority"] == 5
    header = header_for({"after": Dependency([]), "follow": None})
    assert "after" not in header and "follow" not in header
