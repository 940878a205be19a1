"""Leaf layer: whose ``ipcluster`` command is on PATH. ipyparallel installs a command of the
same name; in one environment, the package installed last owns it, and ipyparallel's starts
IPython Parallel clusters that ipcluster's clients cannot see. Errors that may come from this
mix-up (no running cluster found) add `clash()`'s explanation."""

from __future__ import annotations

import shutil


def clash() -> str | None:
    """An explanation if the ``ipcluster`` on PATH is ipyparallel's, else None."""
    path = shutil.which("ipcluster")
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if b"ipyparallel" not in head:
        return None
    return (f"the `ipcluster` command on PATH ({path}) is ipyparallel's, not this package's: "
            "ipyparallel and ipcluster both install a command named `ipcluster`, and the one "
            "installed last wins. Its clusters are IPython Parallel clusters, which "
            "ipcluster.Client() does not see. Run this package's as `python -m ipcluster ...`, "
            "or reinstall it to take the command back (`pip install --force-reinstall --no-deps "
            "ipcluster`), or use ipyparallel in an environment of its own")
