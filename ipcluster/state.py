"""Client API layer: ``cluster.json``, the record of a running cluster on disk, written and read
only here: who owns it, the pids of its controller and engines, its batch jobs, whether it is
ready. The cluster's supervisor writes it; ``ipcluster list``, ``status``, ``stop`` and
``engines add`` read it (the last appends the engines it added)."""

from __future__ import annotations

import json
import os

from ipcluster.config import cluster_dir

FILENAME = "cluster.json"


def write(cluster_id: str, state: dict) -> None:
    """Replace the record at once (written aside, then renamed), so a reader never sees half."""
    path = cluster_dir(cluster_id) / FILENAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def read(cluster_id: str) -> dict | None:
    """The record of `cluster_id`, or None if it has none (or an unreadable one)."""
    try:
        return json.loads((cluster_dir(cluster_id) / FILENAME).read_text())
    except (OSError, ValueError):
        return None


def append(cluster_id: str, **lists) -> None:
    """Add items to list fields of the record (engines added to a running cluster)."""
    state = read(cluster_id) or {}
    for key, items in lists.items():
        state[key] = list(state.get(key, [])) + list(items)
    write(cluster_id, state)
