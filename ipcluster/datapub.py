"""Processes layer: ``publish_data``, called by code running on an engine to send data to the
client while the task runs (ipyparallel's ``ipyparallel.datapub``); the client sees the latest
values, merged, as ``ar.data``.

    from ipcluster.datapub import publish_data
    for i in range(steps):
        ...
        publish_data({"step": i, "loss": loss})
"""

from __future__ import annotations

import cloudpickle

from ipcluster.engine import capture

__all__ = ["publish_data"]


def publish_data(data: dict) -> None:
    """Send `data` (a dict of picklable values) to the client of the running task, where it
    updates ``ar.data``; it travels with the task's output, signed like everything else."""
    if not isinstance(data, dict):
        raise TypeError(f"publish_data takes a dict of names to values, not {type(data).__name__}")
    if capture.current is None or not capture.current.publish("data", {"pickle": cloudpickle.dumps(data)}):
        raise RuntimeError("publish_data sends data from a task running on an engine; "
                           "no task is running here")
