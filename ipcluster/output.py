"""Client API layer: showing the output of tasks: their text streamed line by line, each line
labelled with its engine, and rich output (display data, results) as text."""

from __future__ import annotations

import threading


def rich_text(name: str, data: dict, engine_id) -> str:
    """Display data (``[output:0] ...``) or a cell's value (``Out[0:3]: ...``) as plain text."""
    text = data.get("data", {}).get("text/plain", "")
    if name == "execute_result":
        prompt = f"Out[{engine_id}:{data.get('execution_count')}]: "
    else:
        prompt = f"[output:{engine_id}] "
    return prompt + ("\n" + text if "\n" in text else text)


def display_outputs(tasks, file) -> None:
    for task in tasks:
        eid = task.metadata["engine_id"]
        for name in ("stdout", "stderr"):
            text = task.metadata[name]
            if text:
                file.write(f"[{name}:{eid}] {text}" if "\n" not in text.rstrip("\n")
                           else f"[{name}:{eid}]\n{text}")
                if not text.endswith("\n"):
                    file.write("\n")
        for data in task.metadata["outputs"]:
            file.write(rich_text("display_data", data, eid) + "\n")
        if task.metadata["execute_result"] is not None:
            file.write(rich_text("execute_result", task.metadata["execute_result"], eid) + "\n")


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
