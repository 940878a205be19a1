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

from ipcluster.errors import RemoteError


class CellOutput:
    """The output of one blocking %px cell, shown in the calling thread as it arrives."""

    def __init__(self, ar, options) -> None:  # options: magics.PxOptions
        self.ar, self.options = ar, options
        self.tasks = ar.tasks
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.arrived: list[tuple] = []  # (task, name, data) in arrival order, for "order"
        self.partial: dict[tuple, str] = {}  # incomplete last lines, by (task id, stream)
        self.finished = 0
        self.bar = None

    def show(self):
        for task in self.tasks:
            task.add_output_callback(lambda t, name, data: self.events.put((t, name, data)))
            task.add_done_callback(lambda t: self.events.put((t, "done", None)))
        started = time.monotonic()
        interrupted = False
        try:
            while True:
                self._take_events()
                if self.finished == len(self.tasks):
                    break
                self._progress(time.monotonic() - started)
                concurrent.futures.wait(self.tasks, 0.1)
        except KeyboardInterrupt:  # Ctrl-C: stop the cell's work on the engines running it
            interrupted = True
            self.ar.interrupt()
        finally:
            self._take_events()
            if self.bar is not None:
                self.bar.update(sum(t.done() for t in self.tasks) - self.bar.n)
                self.bar.close()
        if not self.options.stream:
            self._show_grouped()
        if interrupted and not self.ar.done():
            raise KeyboardInterrupt
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
            elif self.options.stream:
                self._render(task, name, data)
            else:
                self.arrived.append((task, name, data))

    def _progress(self, elapsed: float) -> None:
        after = self.options.progress_after
        if self.bar is None and 0 <= after <= elapsed:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(self.tasks), unit="engines", desc="%px")
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
        group, tasks = self.options.group_outputs, self._by_engine()
        if group == "order":
            events = self.arrived
        elif group == "engine":
            events = [e for task in tasks for e in self.arrived if e[0] is task]
        else:  # "type": all stdout, all stderr, all display data, then the Out values
            kinds = ("stdout", "stderr", "display_data", "execute_result")
            events = [e for kind in kinds for task in tasks for e in self.arrived
                      if e[0] is task and e[1] == kind]
        for task, name, data in events:
            self._render(task, name, data)
        for task in tasks:
            self._end_lines(task)

    def _raise_errors(self) -> None:
        """Each failed engine's error once, with its traceback, as the error of the cell."""
        error = self.ar.exception()
        if error is None:
            return
        lines = []
        for task in self._by_engine():
            exc = task.exception() if task.done() else None
            if exc is None:
                continue
            eid = task.metadata["engine_id"]
            if isinstance(exc, RemoteError):
                text = exc.traceback or f"{exc.ename}: {exc.evalue}"
            else:
                text = f"{type(exc).__name__}: {exc}"
            lines.append(f"[{eid}:execute]")
            lines += text.rstrip("\n").split("\n")
        # IPython shows an exception with `_render_traceback_` as the lines it returns: here,
        # the remote tracebacks, instead of the local frames of this magic.
        error._render_traceback_ = lambda: lines
        raise error


def _write(name: str, text: str) -> None:
    stream = sys.stdout if name == "stdout" else sys.stderr
    stream.write(text)
    stream.flush()
