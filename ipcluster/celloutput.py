"""Surfaces layer: the output of one blocking ``%px`` cell, shown by the thread running the
cell as it arrives (so that it lands in that cell in Jupyter): streamed text per engine, display
data, ``Out[i:e]`` results, a progress bar for a long cell, grouping, then each engine's error.
Streamed output comes in arrival order; what is shown at the end (grouped output, errors) in
engine order, whatever the order of the targets."""

from __future__ import annotations

import concurrent.futures
import queue
import sys
import time

from IPython.display import display

from ipcluster.errors import AlreadyDisplayedError, CompositeError, RemoteError
from ipcluster.output import display_outputs


class CellOutput:
    """The output of one blocking %px cell, shown in the calling thread as it arrives."""

    def __init__(self, ar, options) -> None:  # options: magics.PxOptions
        self.ar, self.options = ar, options
        self.tasks = ar.tasks
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.partial: dict[tuple, str] = {}  # incomplete last lines, by (task id, stream)
        self.finished = 0
        self.bar = None

    def show(self):
        for task in self.tasks:
            task.add_output_callback(lambda t, name, data: self.events.put((t, name, data)))
            task.add_done_callback(lambda t: self.events.put((t, "done", None)))
        started = time.monotonic()
        try:
            while True:
                self._take_events()
                if self.finished == len(self.tasks):
                    break
                self._progress(time.monotonic() - started)
                concurrent.futures.wait(self.tasks, 0.1)
        except KeyboardInterrupt:  # Ctrl-C: stop the cell's work on the engines, say so, return
            if self.ar.signal_on_interrupt is None and self.options.signal_on_interrupt.lower() == "none":
                raise
            print(f"Received Keyboard Interrupt. Sending signal "
                  f"{self.options.signal_on_interrupt} to engines...", file=sys.stderr)
            self.ar.interrupt()
            return self._finish(show_errors=False)
        return self._finish(show_errors=True)

    def _finish(self, show_errors: bool):
        self._take_events()
        if self.bar is not None:
            self.bar.update(sum(t.done() for t in self.tasks) - self.bar.n)
            self.bar.close()
        if not self.options.stream:
            self._show_grouped()
        if show_errors:
            self._raise_errors()
        return None

    def _take_events(self) -> None:
        while True:
            try:
                task, name, data = self.events.get_nowait()
            except queue.Empty:
                return
            if name == "done":
                self.finished += 1
                if self.options.stream:
                    self._end_lines(task)
                    self._show_error(task)
            elif self.options.stream:
                self._render(task, name, data)
            # else: shown at the end from the tasks' metadata (_show_grouped)

    def _progress(self, elapsed: float) -> None:
        after = self.options.progress_after
        if self.bar is None and 0 <= after <= elapsed:
            from tqdm.auto import tqdm

            # on stdout, as ipyparallel's: stderr is the engines' own
            self.bar = tqdm(total=len(self.tasks), unit="engines", desc="%px", file=sys.stdout)
        if self.bar is not None:
            self.bar.update(sum(t.done() for t in self.tasks) - self.bar.n)

    # -- rendering --------------------------------------------------------------------------

    def _render(self, task, name: str, data) -> None:
        eid = task.metadata["engine_id"]
        if name in ("stdout", "stderr"):
            key = (task.task_id, name)
            *lines, rest = (self.partial.pop(key, "") + data).split("\n")
            if rest:
                self.partial[key] = rest
            _write(name, "".join(f"[{name}:{eid}] {line}\n" for line in lines))
            return
        self._end_lines(task)
        content = data.get("data", {})
        if name == "execute_result":
            prompt = f"Out[{eid}:{data.get('execution_count')}]:"
            text = content.get("text/plain", "")
            if set(content) <= {"text/plain"}:  # text only: on the prompt's line, as IPython
                _write("stdout", f"{prompt}\n{text}\n" if "\n" in text else f"{prompt} {text}\n")
                return
            _write("stdout", prompt + "\n")
        else:
            _write("stdout", f"[output:{eid}]\n")
        display(content, metadata=data.get("metadata") or None, raw=True)

    def _end_lines(self, task) -> None:
        for name in ("stdout", "stderr"):
            rest = self.partial.pop((task.task_id, name), "")
            if rest:
                _write(name, f"[{name}:{task.metadata['engine_id']}] {rest}\n")

    def _by_engine(self) -> list:
        return sorted(self.tasks, key=lambda t: (t.metadata["engine_id"] is None, t.metadata["engine_id"] or 0))

    def _show_grouped(self) -> None:
        """All output at the end, as ipyparallel's ``display_outputs(groupby)``: by "type" (all
        stdout, all stderr, each engine's display data, the ``Out`` values), by "engine", or
        in "order" (display data by its position on each engine)."""
        display_outputs(self._by_engine(), self.options.group_outputs, rich=self._rich)

    def _rich(self, name: str, data: dict, eid) -> None:
        content = data.get("data", {})
        if name == "execute_result":
            prompt = f"Out[{eid}:{data.get('execution_count')}]:"
            text = content.get("text/plain", "")
            if set(content) <= {"text/plain"} or not _rich_frontend():
                # text: on the prompt's line, as IPython shows a value in a terminal
                _write("stdout", f"{prompt}\n{text}\n" if "\n" in text else f"{prompt} {text}\n")
                return
            _write("stdout", prompt + "\n")
        display(content, metadata=data.get("metadata") or None, raw=True)

    def _traceback(self, task) -> list[str]:
        exc = task.exception() if task.done() else None
        if exc is None:
            return []
        if isinstance(exc, RemoteError):
            text = exc.traceback or f"{exc.ename}: {exc.evalue}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        return [f"[{task.metadata['engine_id']}:execute]", *text.rstrip("\n").split("\n")]

    def _show_error(self, task) -> None:
        """Streaming: an engine's error is shown (on stderr) as soon as that engine is done."""
        lines = self._traceback(task)
        if lines:
            _write("stderr", "\n".join(lines) + "\n")

    def _raise_errors(self) -> None:
        """The error of the cell: streamed, its tracebacks were shown already, so several
        engines' errors are an `AlreadyDisplayedError` ("6 errors"); else each failed engine's
        traceback once, instead of the local frames of this magic."""
        error = self.ar.exception()
        if error is None:
            return
        if self.options.stream and isinstance(error, CompositeError):
            raise AlreadyDisplayedError(error) from None
        lines = [line for task in self._by_engine() for line in self._traceback(task)]
        error._render_traceback_ = lambda: lines
        raise error


def _rich_frontend() -> bool:
    """True in a Jupyter kernel, where display data shows richly (not as its text)."""
    from IPython import get_ipython

    return type(get_ipython()).__name__ == "ZMQInteractiveShell"


def _write(name: str, text: str) -> None:
    stream = sys.stdout if name == "stdout" else sys.stderr
    stream.write(text)
    stream.flush()
