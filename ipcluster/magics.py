"""Surfaces layer: the IPython magics that run code cells on the engines.

    %load_ext ipcluster            # or just make a Client: the first one in IPython activates them
    %px import numpy as np         # one line, on the engines of the active view
    %%px --targets ::2 --noblock   # a cell, on some engines, without waiting (%pxresult shows it)
    %autopx                        # every cell runs on the engines, until %autopx again
    %pxconfig --no-stream          # defaults for the flags of %%px

``rc.activate(targets, suffix)`` and ``view.activate(suffix)`` bind ``%px{suffix}`` and its
siblings to a view. A blocking cell shows its output as it arrives: ``[stdout:0] ...``,
``[stderr:2] ...``, display data per engine, ``Out[3:5]: ...``, then the error of each engine that
failed. Output is rendered by the thread running the cell (the client's IO thread only queues
it), so it lands in that cell in Jupyter. Ctrl-C stops the cell's work on the engines running it
(see `AsyncResult.signal_on_interrupt`) and returns.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import signal
from dataclasses import asdict, dataclass, fields

from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class, no_var_expand

from ipcluster.celloutput import CellOutput

NO_VIEW = (
    "%px has no cluster to run on. Connect to one and the first client activates %px: "
    "`rc = ipcluster.Client()` for a running cluster (`ipcluster start -n 4`), or "
    "`rc = ipcluster.Cluster(n=4).start_and_connect_sync()`; `rc.activate(targets)` binds "
    "%px to other engines.")
NO_ENGINES = (
    "the cluster has no engines registered, so %px has nowhere to run; start some "
    "(`ipcluster start -n 4`, or cluster.start_engines_sync(4)) and wait for them with "
    "rc.wait_for_engines(4)")


@dataclass
class PxOptions:
    targets: str | None = None  # engines, as --targets takes them; None: the activated view's
    block: bool | None = None  # wait for the cell to finish on every engine; None: view.block
    stream: bool = True  # show output as it arrives (else all at the end, grouped)
    verbose: bool = False  # say where and how the cell runs
    group_outputs: str = "type"  # without streaming: by "engine", by "type", or in "order"
    local: bool = False  # also run the cell in this session
    progress_after: float = 2.0  # seconds before a progress bar shows (negative: never)
    signal_on_interrupt: str = "SIGINT"  # what Ctrl-C sends the engines: a signal, abort, none


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are IPython usage errors (the session goes on) with the usage."""

    def error(self, message):
        raise UsageError(f"{self.format_usage().strip()}\n{self.prog}: error: {message}")

    def exit(self, status=0, message=None):
        raise _HelpShown()


class _HelpShown(Exception):
    """``-h``: argparse printed the help; the magic does nothing else."""


def _parser(prog: str, *, cell: bool, config: bool) -> _Parser:
    p = _Parser(prog=prog, description="Run Python code on the engines of the active view.")
    if not (cell or config):
        return p
    p.add_argument("-t", "--targets", help="engines: all, 3, 0:4, ::2, [0,2] or 0,2")
    p.add_argument("-b", "--block", dest="block", action="store_true", default=None,
                   help="wait for the result, showing output as it comes (default)")
    p.add_argument("-a", "--noblock", dest="block", action="store_false",
                   help="do not wait: the cell's AsyncResult is the result (see %%pxresult)")
    p.add_argument("--stream", dest="stream", action="store_true", default=None,
                   help="show output as it arrives (default)")
    p.add_argument("--no-stream", dest="stream", action="store_false",
                   help="show output when every engine is done, grouped")
    p.add_argument("--verbose", dest="verbose", action="store_true", default=None,
                   help="say where and how the cell runs")
    p.add_argument("--no-verbose", dest="verbose", action="store_false")
    p.add_argument("--group-outputs", choices=["engine", "order", "type"],
                   help="without --stream: output by engine, in arrival order, or by type")
    p.add_argument("--local", dest="local", action="store_true", default=None,
                   help="also run the cell in this session")
    p.add_argument("--progress-after", type=float, metavar="SECONDS",
                   help="show a progress bar once a cell runs this long (negative: never)")
    p.add_argument("--signal-on-interrupt", metavar="SIGNAL",
                   help="sent on Ctrl-C to the engines running the cell: SIGINT (default), a "
                        "signal name or number, abort, or none")
    if config:
        p.add_argument("--no-local", dest="local", action="store_false")
    else:
        p.add_argument("-o", "--out", metavar="NAME",
                       help="keep the cell's AsyncResult as NAME in this namespace")
    return p


def parse_targets(text: str, ids: list[int]):
    """``all``, ``3``, a slice of the registered ids (``0:4``, ``::2``), or a list (``[0,2]``,
    ``0,2``)."""
    text = text.strip()
    if text == "all":
        return "all"
    try:
        if ":" in text and not text.startswith("["):
            parts = [int(p) if p.strip() else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError(text)
            return ids[slice(*parts)]
        value = ast.literal_eval(text)
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
            return list(value)
    except (ValueError, SyntaxError):
        pass
    raise UsageError(f"--targets takes all, an engine id (3), a slice of the engines (0:4, ::2) "
                     f"or a list ([0,2] or 0,2); not {text!r}")


def parse_signal(text: str):
    """A signal number, ``"abort"`` or None, from SIGINT, INT, 2, abort or none."""
    word = text.strip()
    if word.lower() in ("none", "0", ""):
        return None
    if word.lower() == "abort":
        return "abort"
    if word.isdigit():
        return int(word)
    name = word.upper() if word.upper().startswith("SIG") else "SIG" + word.upper()
    if not hasattr(signal, name):
        raise UsageError(f"--signal-on-interrupt takes a signal (SIGINT, TERM, 9), abort or "
                         f"none; not {text!r}")
    return int(getattr(signal, name))


@magics_class
class ParallelMagics(Magics):
    """What ``%load_ext ipcluster`` registers: one `ViewMagics` per activated suffix."""

    def __init__(self, shell) -> None:
        super().__init__(shell)
        self.by_suffix: dict[str, ViewMagics] = {}

    def magics_for(self, suffix: str) -> "ViewMagics":
        if suffix not in self.by_suffix:
            self.by_suffix[suffix] = ViewMagics(self.shell, suffix)
        return self.by_suffix[suffix]

    def activate(self, view, suffix: str = "", *, replace: bool = True) -> bool:
        """Bind ``%px{suffix}`` and its siblings to `view` (unless `replace` is False and a
        view was bound already: only the first client binds them, as in ipyparallel); True if
        bound."""
        magics = self.magics_for(suffix)
        if not replace and magics.view is not None:
            return False
        magics.view = view
        magics.options = PxOptions()  # a view bound anew starts from the defaults, as ipyparallel's
        return True


class ViewMagics:
    """``%px``, ``%autopx``, ``%pxresult`` and ``%pxconfig`` with one suffix, on one view."""

    def __init__(self, shell, suffix: str) -> None:
        self.shell, self.suffix = shell, suffix
        self.view = None
        self.options = PxOptions()
        self.last_result = None  # of the last non-blocking %px
        self.autopx_on = False
        self._px_parser = _parser(f"%%px{suffix}", cell=True, config=False)
        self._config_parser = _parser(f"%pxconfig{suffix}", cell=False, config=True)
        self._result_parser = _Parser(prog=f"%pxresult{suffix}")
        self._result_parser.add_argument("--group-outputs", choices=["engine", "order", "type"])
        self._autopx_parser = _Parser(prog=f"%autopx{suffix}")
        self._to_px = _autopx_transformer(f"%autopx{suffix}", f"%%px{suffix}")
        for func, kind, name in ((self.px_line, "line", "px"), (self.px, "cell", "px"),
                                 (self.autopx, "line", "autopx"),
                                 (self.pxresult, "line", "pxresult"),
                                 (self.pxconfig, "line", "pxconfig")):
            shell.register_magic_function(func, kind, name + suffix)

    # -- the magics -------------------------------------------------------------------------

    @no_var_expand  # the code runs on the engines: {x} there is theirs (a cell's flags expand)
    def px_line(self, line: str):
        """``%px CODE``: run one line on the engines (see %%px)."""
        return self.px(line)

    def px(self, line: str, cell: str | None = None):
        """``%px CODE``: run one line on the engines. ``%%px [flags]``: run the cell there.

        Flags of %%px (defaults from %pxconfig): -t/--targets, -b/--block, -a/--noblock,
        --stream/--no-stream, --verbose, --group-outputs {engine,order,type}, -o/--out NAME,
        --local, --progress-after SECONDS, --signal-on-interrupt SIGNAL. ``%%px -h`` says more.
        """
        if cell is None:
            if not line.strip():
                raise UsageError(f"%px{self.suffix} runs the code after it on the engines, as "
                                 f"in `%px import numpy`; %%px{self.suffix} runs a whole cell")
            return self.run(line, self.options, out=None)
        args = self._parse(self._px_parser, line)
        if args is None:
            return None
        return self.run(cell, self._options(args), out=args.out)

    def autopx(self, line: str) -> None:
        """Toggle sending every cell to the engines, as if it began with %%px."""
        if self._parse(self._autopx_parser, line) is None:
            return
        cleanup = self.shell.input_transformers_cleanup
        if self.autopx_on:
            cleanup.remove(self._to_px)
            self.autopx_on = False
            print(f"%autopx{self.suffix} disabled")
            return
        self._view(None)  # fails now, not at the next cell, if there is nowhere to run
        cleanup.append(self._to_px)
        self.autopx_on = True
        print(f"%autopx{self.suffix} enabled: every cell runs on the engines; "
              f"%autopx{self.suffix} again to stop")

    def pxresult(self, line: str):
        """Show the output of the last non-blocking %px, waiting for it if needed."""
        args = self._parse(self._result_parser, line)
        if args is None:
            return None
        if self.last_result is None:
            raise UsageError(f"no non-blocking %px{self.suffix} yet: run one with "
                             f"`%%px{self.suffix} --noblock` first")
        options = PxOptions(**{**asdict(self.options), "stream": False})
        if args.group_outputs:
            options.group_outputs = args.group_outputs
        return CellOutput(self.last_result, options).show()

    def pxconfig(self, line: str) -> None:
        """Set the defaults of %px and %%px (same flags as %%px); alone, show them. As in
        ipyparallel, --targets and --block/--noblock set those of the activated view."""
        args = self._parse(self._config_parser, line)
        if args is None:
            return
        if not line.strip():
            view = self.view.targets if self.view is not None else None
            block = self.view.block if self.view is not None else None
            print(f"%px{self.suffix} on view targets {view!r}, block={block!r}; " + ", ".join(
                f"{f.name}={getattr(self.options, f.name)!r}" for f in fields(PxOptions)
                if f.name not in ("targets", "block")))
            return
        options = self._options(args)
        if options.targets is not None or options.block is not None:
            view = self._view(options.targets)
            self.view.targets = view.targets
            if options.block is not None:
                self.view.block = options.block
            options.targets = options.block = None
        self.options = options

    # -- running a cell ---------------------------------------------------------------------

    def run(self, code: str, options: PxOptions, out: str | None):
        view = self._view(options.targets)
        sig = parse_signal(options.signal_on_interrupt)
        block = self.view.block if options.block is None else options.block
        if options.verbose:
            how = "Parallel" if block else "Async parallel"
            print(f"{how} execution on engine(s): {view.targets}")
        ar = view.execute(code, silent=False, block=False)
        ar.signal_on_interrupt = sig
        self.last_result = ar
        if out:
            self.shell.user_ns[out] = ar
        if options.local:
            self.shell.run_cell(code, store_history=False)
        if not block:
            return ar
        return CellOutput(ar, options).show()

    def _view(self, targets):
        view = self.view
        if view is None:
            raise UsageError(NO_VIEW)
        client = view.client
        if client.closed:
            raise UsageError("the client %px was bound to is closed; bind %px to another "
                             "with rc.activate(), or start a cluster with "
                             "Cluster(n=4).start_and_connect_sync(activate=True)")
        if not client.ids:
            raise UsageError(NO_ENGINES)
        if targets is not None:
            view = client.direct_view(parse_targets(targets, client.ids))
        wanted = _ids(view)
        if not wanted:
            raise UsageError(f"--targets {targets} names no engine; the engines are {client.ids}")
        missing = sorted(set(wanted) - set(client.ids))
        if missing:
            raise UsageError(f"no engine with id {missing}; the engines are {client.ids}")
        return view

    def _parse(self, parser: _Parser, line: str):
        try:
            return parser.parse_args(shlex.split(line))
        except _HelpShown:
            return None
        except ValueError as exc:  # shlex: an unclosed quote
            raise UsageError(f"{parser.format_usage().strip()}\n{parser.prog}: error: {exc}")

    def _options(self, args) -> PxOptions:
        given = {f.name: getattr(args, f.name) for f in fields(PxOptions)
                 if getattr(args, f.name, None) is not None}
        if "signal_on_interrupt" in given:
            parse_signal(given["signal_on_interrupt"])  # a bad one is an error now
        return PxOptions(**{**asdict(self.options), **given})


def _ids(view) -> list[int]:
    targets = view.targets
    if targets == "all" or targets is None:
        return view.client.ids
    return [targets] if isinstance(targets, int) else list(targets)


def _autopx_transformer(toggle: str, prefix: str):
    """An input transformer that makes every cell a %%px cell, except the one that toggles."""

    def to_px(lines: list[str]) -> list[str]:
        first = lines[0].strip() if lines else ""
        if not first or first.split()[0] in (toggle, prefix):
            return lines
        return [prefix + "\n", *lines]

    to_px.has_side_effects = True  # IPython: not called when only checking input is complete
    return to_px


def load_ipython_extension(ip) -> None:
    """``%load_ext ipcluster``: register %px and its siblings (bound to no view until a client
    activates them)."""
    if "ParallelMagics" not in ip.magics_manager.registry:
        magics = ParallelMagics(ip)
        ip.register_magics(magics)
        magics.magics_for("")
