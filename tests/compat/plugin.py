"""The pytest plugin of the conformance run (``-p tests.compat.plugin``): it forbids importing
ipyparallel, provides the fixtures upstream's conftest.py provides (a cluster per test module,
an IPython shell, `Cluster`), runs the coroutine tests, and writes each item's outcome to the
JSON file named by $IPCLUSTER_COMPAT_REPORT."""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.util
import inspect
import json
import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest

from tests.compat import shim


class ForbidIpyparallel(importlib.abc.MetaPathFinder):
    """Nothing in this run may test ipyparallel itself."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "ipyparallel" or fullname.startswith("ipyparallel."):
            raise ImportError(f"import {fullname}: the ipyparallel conformance run forbids "
                              "importing ipyparallel; its imports go through "
                              "tests/compat/table.py")
        return None


if importlib.util.find_spec("ipyparallel") is not None:
    raise pytest.UsageError("ipyparallel is importable in this environment, so the "
                            "conformance run could test it instead of ipcluster; uninstall it")
sys.meta_path.insert(0, ForbidIpyparallel())


# -- the fixtures of upstream's conftest.py ----------------------------------------------------

@pytest.fixture(autouse=True, scope="module")
def ipython_dir():
    with tempfile.TemporaryDirectory(suffix=".ipython") as td:
        with mock.patch.dict(os.environ, {"IPYTHONDIR": td}):
            yield td


@pytest.fixture(scope="module")
def cluster(ipython_dir):
    """A controller and one engine for the test module (upstream's module setup)."""
    shim.setup()
    try:
        yield
    finally:
        shim.teardown()


@pytest.fixture(scope="module")
def ipython(ipython_dir):
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    from traitlets.config import Config

    config = Config()
    config.TerminalInteractiveShell.colors = "NoColor"
    config.TerminalInteractiveShell.autocall = 0
    config.TerminalInteractiveShell.simple_prompt = True
    config.HistoryManager.hist_file = ":memory:"
    shell = TerminalInteractiveShell.instance(config=config)
    yield shell
    TerminalInteractiveShell.clear_instance()


@pytest.fixture
def ipython_interactive(ipython):
    with ipython.builtin_trap:
        yield ipython


@pytest.fixture
def engine_launcher_class():
    return "local"


@pytest.fixture
def controller_launcher_class():
    return "local"


@pytest.fixture
def Cluster(request, ipython_dir):
    """``Cluster(**kwargs)``: an ipcluster Cluster stopped after the test."""
    import ipcluster

    def make(**kwargs):
        c = ipcluster.Cluster(**kwargs)
        request.addfinalizer(c.stop_cluster_sync)
        return c

    return make


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Upstream marks coroutine tests for pytest-asyncio; here each runs in a fresh loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
    return True


def pytest_collection_modifyitems(config, items):
    """Excluded items (tests of ipyparallel's internals) are not run at all: some leave the
    process changed (one patches ``Client.__new__``, which cannot be undone cleanly)."""
    from tests.compat import suite

    excluded = set(suite.listed("exclusions.txt"))
    functions = {e.split("[")[0] for e in excluded if "[" in e}  # ids made from objects differ
    keep, drop = [], []
    for item in items:
        key = _key(item.nodeid)
        (drop if key in excluded or key.split("[")[0] in functions else keep).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A KeyboardInterrupt a test provokes itself (upstream's Ctrl-C tests raise one from
    SIGALRM) fails that test instead of ending the whole run."""
    try:
        return (yield)
    except KeyboardInterrupt as exc:
        raise RuntimeError("a KeyboardInterrupt escaped the test") from exc


# -- outcomes ----------------------------------------------------------------------------------

_outcomes: dict[str, str] = {}
_errors: dict[str, str] = {}


def _key(nodeid: str) -> str:
    return nodeid.split("/", 1)[1] if "/" in nodeid.split("::")[0] else nodeid


def pytest_collectreport(report):
    if report.failed:
        _errors[_key(report.nodeid)] = str(report.longrepr)[-2000:]


def pytest_runtest_logreport(report):
    key = _key(report.nodeid)
    xfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        _outcomes[key] = {"passed": "pending", "failed": "error", "skipped": "skipped"}[report.outcome]
        if xfail and report.skipped:
            _outcomes[key] = "xfailed"
    elif report.when == "call":
        if xfail:
            _outcomes[key] = "xfailed" if report.skipped else "xpassed"
        else:
            _outcomes[key] = report.outcome
    elif report.failed:  # teardown; a skip there (upstream's broadcast tests) changes nothing
        _outcomes[key] = "error"
    if report.failed:
        _errors[key] = str(report.longrepr)[-2000:]


def pytest_sessionfinish(session):
    path = os.environ.get("IPCLUSTER_COMPAT_REPORT")
    if path:
        Path(path).write_text(json.dumps({"outcomes": _outcomes, "errors": _errors}, indent=1))
