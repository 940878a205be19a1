"""Processes layer: code cells on the engine (`execute`, `%px`), through IPython's shell.

When IPython is installed on the engine, a cell runs in an `InteractiveShell` whose namespace is
the engine's: magics work, ``display()`` and rich reprs become ``display_data`` output, the
value of a cell's last expression becomes an ``execute_result`` (``Out[3:5]`` on the client),
and a failure carries IPython's traceback. Rich output is published through the engine's
`Capture`, so it travels in order with stdout and stderr while the task runs. IPython is
imported on the first cell only: `apply` never pays for it. Without IPython a cell runs with
plain `exec`, and the first one says so on stderr.
"""

from __future__ import annotations

import json
import sys

from ipcluster import errors, namespace
from ipcluster.engine import capture
from ipcluster.errors import RemoteError

_shell = None  # the engine's EngineShell, made on the first cell
_noted_fallback = False


def run_cell(code: str, silent: bool = False) -> None:
    """Run `code` as a cell in the engine namespace; a failure raises `RemoteError` with the
    traceback as IPython shows it (KeyboardInterrupt and SystemExit propagate as they are)."""
    shell = engine_shell()
    if shell is None:
        _run_plain(code)
        return
    if "_oh" not in namespace.user_ns:  # the namespace was cleared: give back In, Out, ...
        shell.init_user_ns()
    shell.last_error = None
    result = shell.run_cell(code, store_history=not silent, silent=silent)
    error = result.error_before_exec or result.error_in_exec
    if error is None:
        return
    if not isinstance(error, Exception):
        raise error  # KeyboardInterrupt (interrupt, abort, timeout) or SystemExit: the engine's
    ename, evalue, text = shell.last_error or (type(error).__name__, str(error), "")
    raise RemoteError(ename, evalue, text or f"{ename}: {evalue}", namespace.engine_id,
                      eclass=errors.class_path(type(error)), method="execute")


def _run_plain(code: str) -> None:
    global _noted_fallback
    if not _noted_fallback:
        _noted_fallback = True
        print(f"note: IPython is not installed on engine {namespace.engine_id}, so code cells run "
              "with plain exec: no magics, no display(), no Out values. `pip install ipython` "
              "on the engines to have them.", file=sys.stderr)
    exec(compile(code, "<execute>", "exec"), namespace.user_ns)


def engine_shell():
    """The engine's IPython shell, made on first use; None if IPython is not installed."""
    global _shell
    if _shell is None:
        try:
            make = _shell_class()
        except ImportError:
            return None
        _shell = make()
    return _shell


def publish(name: str, content: dict) -> None:
    """Send rich output of the running task to its client, as plain JSON-able data."""
    content = json.loads(json.dumps(content, default=repr))
    if capture.current is None or not capture.current.publish(name, content):
        text = content.get("data", {}).get("text/plain")
        if text is not None:
            print(text)


def _shell_class():
    """Define the shell classes once IPython is imported (never at import of this module)."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.error import UsageError
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class EngineDisplayPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                    **kwargs) -> None:
            publish("display_data", {"data": data, "metadata": metadata or {},
                                     "transient": transient or {}})

        def clear_output(self, wait=False) -> None:
            """Not forwarded: on the client, one cell shows the output of many engines."""

    class EngineDisplayHook(DisplayHook):
        """The value of a cell's last expression, sent as ``execute_result``."""

        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict, md_dict=None) -> None:
            publish("execute_result", {"data": format_dict, "metadata": md_dict or {},
                                       "execution_count": self.prompt_count})

        def finish_displayhook(self) -> None:
            pass

    class EngineShell(InteractiveShell):
        """IPython's shell over the engine namespace; errors are kept, not printed."""

        displayhook_class = EngineDisplayHook
        display_pub_class = EngineDisplayPublisher
        last_error: tuple[str, str, str] | None = None

        def _showtraceback(self, etype, evalue, stb) -> None:
            self.last_error = (etype.__name__, str(evalue), self.InteractiveTB.stb2text(stb))

        def show_usage_error(self, exc) -> None:
            self.last_error = ("UsageError", str(exc), f"UsageError: {exc}")

        def enable_gui(self, gui=None):
            # None: no event loop wanted (%pylab inline, %matplotlib inline ask for that).
            # IPython asks a shell with no event loop to refuse the others: a usage error.
            if gui is not None:
                raise UsageError(f"engines have no GUI event loop for {gui!r}; use %matplotlib inline")

    # An engine's history is its own and short-lived: keep it in memory, not in the user's
    # history database, which several engines would otherwise write at once.
    config = Config({"HistoryManager": {"hist_file": ":memory:"}})

    def make():
        options = dict(user_module=namespace.main_module, user_ns=namespace.user_ns,
                       config=config, colors="nocolor")
        main = sys.modules.get("__main__")  # namespace.install decides what __main__ is
        try:
            if InteractiveShell.initialized():  # hosted by an IPython session (in-process tests)
                return EngineShell(**options)
            return EngineShell.instance(**options)  # display() finds it as the shell
        finally:
            sys.modules["__main__"] = main

    return make
