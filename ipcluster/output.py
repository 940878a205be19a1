"""Client API layer: showing the output of tasks: their text streamed line by line, each line
labelled with its engine, and rich output (display data, results) as text."""

from __future__ import annotations

import sys
import threading


def rich_text(name: str, data: dict, engine_id) -> str:
    """Display data (``[output:0] ...``) or a cell's value (``Out[0:3]: ...``) as plain text."""
    text = data.get("data", {}).get("text/plain", "")
    if name == "execute_result":
        prompt = f"Out[{engine_id}:{data.get('execution_count')}]: "
    else:
        prompt = f"[output:{engine_id}] "
    return prompt + ("\n" + text if "\n" in text else text)


def print_rich(name: str, data: dict, engine_id) -> None:
    """Display data as its text; a cell's value as ``Out[engine:count]: text``."""
    text = data.get("data", {}).get("text/plain", "")
    if name == "execute_result":
        prompt = f"Out[{engine_id}:{data.get('execution_count')}]: "
        text = prompt + ("\n" + text if "\n" in text else text)
    sys.stdout.write(text + "\n")


def display_outputs(tasks, groupby: str = "type", single: bool = False,
                    result_only: bool = False, rich=print_rich) -> None:
    """Show the tasks' output as ipyparallel's ``display_outputs``: stdout on sys.stdout,
    stderr on sys.stderr, labelled ``[stdout:<engine>]`` unless `single`; display data under
    ``[output:<engine>]``, shown by ``rich(name, data, engine_id)``; then ``Out`` values.

    `groupby`: ``"type"`` (all stdout, all stderr, each engine's display data, the values),
    ``"engine"`` (each engine's output together) or ``"order"`` (display data by position)."""
    if groupby not in ("type", "engine", "order"):
        raise ValueError(f"groupby is 'type', 'engine' or 'order', not {groupby!r}")

    def stream(task, name: str) -> None:
        text = task.metadata[name]
        if not text or result_only:
            return
        file = sys.stdout if name == "stdout" else sys.stderr
        prefix = "" if single else f"[{name}:{task.metadata['engine_id']}]"
        if prefix:
            multiline = text.count("\n") > int(text.endswith("\n"))
            prefix += "\n" if multiline else " "
        file.write(prefix + text + ("" if text.endswith("\n") else "\n"))

    def outputs(task, items) -> None:
        if items and not result_only:
            eid = task.metadata["engine_id"]
            if not single:
                sys.stdout.write(f"[output:{eid}]\n")
            for data in items:
                rich("display_data", data, eid)

    def value(task) -> None:
        if task.metadata["execute_result"] is not None:
            rich("execute_result", task.metadata["execute_result"], task.metadata["engine_id"])

    if groupby == "engine":
        for task in tasks:
            stream(task, "stdout")
            stream(task, "stderr")
            outputs(task, task.metadata["outputs"])
            value(task)
        return
    for name in ("stdout", "stderr"):
        for task in tasks:
            stream(task, name)
    if groupby == "type":
        for task in tasks:
            outputs(task, task.metadata["outputs"])
    else:
        for i in range(max((len(t.metadata["outputs"]) for t in tasks), default=0)):
            for task in tasks:
                outputs(task, task.metadata["outputs"][i:i + 1])
    for task in tasks:
        value(task)


class Streaming:
    """Prints the output of an `AsyncResult`'s tasks line by line as it arrives (rich output
    as its text)."""

    def __init__(self, ar, file) -> None:
        self._ar, self._file = ar, file
        self._partial: dict[tuple, str] = {}
        self._lock = threading.Lock()
        for task in ar._tasks:
            task.add_output_callback(self._on_output)
            task.add_done_callback(self._flush_task)

    def _on_output(self, task, name: str, text) -> None:
        if name not in ("stdout", "stderr"):
            with self._lock:
                self._file.write(rich_text(name, text, task.metadata["engine_id"]) + "\n")
                self._file.flush()
            return
        key = (task.task_id, name)
        with self._lock:
            text = self._partial.pop(key, "") + text
            *lines, rest = text.split("\n")
            if rest:
                self._partial[key] = rest
            eid = task.metadata["engine_id"]
            for line in lines:
                self._file.write(f"[{name}:{eid}] {line}\n")
            self._file.flush()

    def _flush_task(self, task) -> None:
        with self._lock:
            for name in ("stdout", "stderr"):
                rest = self._partial.pop((task.task_id, name), "")
                if rest:
                    self._file.write(f"[{name}:{task.metadata['engine_id']}] {rest}\n")
        self.stop_task(task)

    def stop_task(self, task) -> None:
        if self._on_output in task.output_callbacks:
            task.output_callbacks.remove(self._on_output)

    def __enter__(self) -> "Streaming":
        return self

    def __exit__(self, *exc) -> None:
        for task in self._ar._tasks:
            self.stop_task(task)


class ExecuteReply:
    """What `execute` gives for one engine: its ``Out`` value (`execute_result`, shown as
    itself by IPython), display `outputs`, `stdout`, `stderr` and `execution_count`."""

    def __init__(self, metadata) -> None:
        self.metadata = metadata

    def __getattr__(self, key):
        if key.startswith("_repr_") and key.endswith("_"):
            return self._repr(key)
        try:
            return self.metadata[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def execution_count(self):
        return (self.metadata["execute_result"] or {}).get("execution_count")

    def _repr(self, key: str):
        """IPython's ``_repr_png_`` and friends, from the mime types of the ``Out`` value."""
        result = self.metadata["execute_result"] or {}
        wanted = {"_repr_" + m.split("/")[-1].split("+")[0] + "_": m for m in result.get("data", {})}
        if key not in wanted:
            raise AttributeError(key)
        mime = wanted[key]
        data, md = result["data"][mime], (result.get("metadata") or {}).get(mime)
        return (lambda: (data, md)) if md else (lambda: data)

    def __eq__(self, other) -> bool:  # the same cell's reply, however it was fetched
        return isinstance(other, ExecuteReply) and dict(other.metadata) == dict(self.metadata)

    __hash__ = None

    def __repr__(self) -> str:
        text = ((self.metadata["execute_result"] or {}).get("data") or {}).get("text/plain", "")
        return f"<ExecuteReply[{self.execution_count}]: {text}>"
