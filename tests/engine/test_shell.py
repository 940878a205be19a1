"""Code cells on the engine: IPython's shell over the engine namespace (rich output published in
order with the task's text, Out values, IPython tracebacks), and plain exec without IPython."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from ipcluster import namespace
from ipcluster.engine import capture, shell
from ipcluster.errors import RemoteError

pytest.importorskip("IPython")


def _forget_shell() -> None:
    if shell._shell is not None:
        type(shell._shell).clear_instance()
        shell._shell = None


@pytest.fixture
def task(monkeypatch):
    """A running task whose output is captured, in a namespace restored afterwards."""
    saved = dict(namespace.user_ns)
    _forget_shell()
    cap = capture.Capture()
    cap.task = "t1"
    monkeypatch.setattr(capture, "current", cap)
    monkeypatch.setattr(namespace, "cell_runner", shell.run_cell)  # as the engine installs it
    yield cap
    _forget_shell()
    namespace.user_ns.clear()
    namespace.user_ns.update(saved)


def execute(task, code: str, silent: bool = True) -> None:
    """`namespace.execute` with stdout captured as on an engine (pytest resets sys.stdout
    between a fixture and its test, so this is set here)."""
    saved, sys.stdout = sys.stdout, capture.Stream(task, "stdout", io.StringIO())
    try:
        namespace.execute(code, silent=silent)
    finally:
        sys.stdout = saved


def test_cells_run_in_the_engine_namespace_with_magics_and_out_values(task):
    execute(task, "x = 6 * 7\n%time y = x + 1\nx", silent=False)
    assert namespace.pull(["x", "y"]) == [42, 43]
    parts = task.take()
    assert parts[-1] == ("t1", "execute_result", {"data": {"text/plain": "42"}, "metadata": {},
                                                  "execution_count": 1})
    assert any(name == "stdout" and "Wall time" in text for _, name, text in parts)
    assert namespace.pull("Out") == {1: 42}
    namespace.execute("x")  # silent (view.execute's default): no Out value
    assert [name for _, name, _ in task.take()] == []


def test_display_data_is_published_in_order_with_printed_text(task):
    execute(task, "from IPython.display import HTML, display\nprint('before')\n"
                  "display(HTML('<b>bold</b>'))\nprint('after')")
    parts = task.take()
    assert [name for _, name, _ in parts] == ["stdout", "display_data", "stdout"]
    data = parts[1][2]["data"]
    assert data["text/html"] == "<b>bold</b>" and "text/plain" in data


def test_rich_reprs_of_results_are_sent_as_plain_data(task):
    namespace.execute("class Rich:\n    def _repr_html_(self):\n        return '<i>rich</i>'\n"
                      "    def __repr__(self):\n        return 'Rich()'\nRich()", silent=False)
    (_, name, content), = task.take()
    assert name == "execute_result"
    assert content["data"] == {"text/plain": "Rich()", "text/html": "<i>rich</i>"}


def test_errors_carry_ipython_tracebacks_and_syntax_errors_their_line(task):
    with pytest.raises(RemoteError) as info:
        namespace.execute("def f():\n    return 1 / 0\nf()", silent=False)
    assert info.value.ename == "ZeroDivisionError"
    assert "----> 3 f()" in info.value.traceback and "Cell In[1]" in info.value.traceback
    with pytest.raises(RemoteError) as info:
        namespace.execute("a = 1\nb = (a +\n", silent=False)
    assert info.value.ename == "SyntaxError"
    assert "b = (a +" in info.value.traceback and "line 2" in info.value.traceback
    with pytest.raises(RemoteError, match="UsageError"):
        namespace.execute("%no_such_magic")


def test_keyboard_interrupt_and_system_exit_propagate_as_they_are(task):
    with pytest.raises(KeyboardInterrupt):
        namespace.execute("raise KeyboardInterrupt")
    with pytest.raises(SystemExit):
        namespace.execute("raise SystemExit(3)")


def test_a_cleared_namespace_gets_the_shell_names_back(task):
    namespace.execute("z = 1")
    namespace.clear()
    namespace.execute("z = 2\nz", silent=False)
    assert task.take()[-1][1] == "execute_result"
    assert "Out" in namespace.user_ns and "get_ipython" in namespace.user_ns


def test_without_ipython_cells_run_with_exec_and_say_so_once(task, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "IPython" or m.startswith("IPython.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing IPython fails
    monkeypatch.setattr(shell, "_noted_fallback", False)
    namespace.execute("w = 5")
    namespace.execute("w += 1")
    assert namespace.pull("w") == 6
    err = capsys.readouterr().err
    assert err.count("IPython is not installed on engine") == 1 and "plain exec" in err


def test_apply_does_not_import_ipython():
    code = ("import sys\nfrom ipcluster import namespace\nfrom ipcluster.engine import main, shell\n"
            "namespace.cell_runner = shell.run_cell\n"
            "namespace.push({'a': 1}); namespace.pull('a')\n"
            "namespace.map_chunk(abs, [-1])\nassert 'IPython' not in sys.modules, 'imported'\n"
            "namespace.execute('b = 2')\nassert 'IPython' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
