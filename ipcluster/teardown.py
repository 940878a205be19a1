"""Surfaces layer: stopping clusters from the command line: ``ipcluster stop [CLUSTER_ID]
[--all]`` and ``ipcluster clean``, from what each cluster's record (`ipcluster.state`) says.

An ``ipcluster start`` that owns a cluster is asked to stop it (SIGTERM), so that it stops its
engines and jobs itself; what is left (or a cluster owned by a Python process, which is never
killed) is stopped here: batch jobs cancelled, processes sent SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from ipcluster import connection, shm, state
import ipcluster.dashboard.link as dashboard
from ipcluster.config import cluster_dir, ipcluster_dir
from ipcluster.errors import ConnectionFileError


def _wait_gone(pids: list[int], found: dict, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if state.alive(p, found)]
        if not pids:
            break
        time.sleep(0.05)
    return [p for p in pids if state.alive(p, found)]


def _kill(pids: list[int], found: dict, sig: int) -> None:
    """Signal the processes recorded in `found` that are still those processes (a pid reused
    by another process, another cluster's engine say, is left alone)."""
    for pid in pids:
        if state.alive(pid, found):
            try:
                os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def _started_by_the_cli(owner: state.Owner) -> bool:
    """The owner is an ``ipcluster start`` still running (not the user's Python)."""
    import psutil

    if not owner.alive():
        return False
    try:
        argv = psutil.Process(owner.pid).cmdline()
    except psutil.Error:
        return False
    return "start" in argv and any(a.endswith(("ipcluster", "__main__.py")) for a in argv[:3])


def stop(cluster_id: str) -> list[int]:
    """Stop everything recorded for `cluster_id` and remove its directory; returns the pids
    that would not stop."""
    found = state.read(cluster_id) or {}
    owner = state.owner_of(found)
    try:  # read before anything stops: a controller that stops removes the file
        key = connection.read(cluster_dir(cluster_id) / connection.FILENAME).key_bytes
    except ConnectionFileError:
        key = None
    if _started_by_the_cli(owner):
        os.kill(owner.pid, signal.SIGTERM)  # it stops its engines, jobs and controller
        deadline = time.monotonic() + 40
        while owner.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    pids, cancel = state.engines(found)
    for argv in cancel:
        try:
            subprocess.run(argv, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"ipcluster: could not cancel jobs with {argv}: {exc}", file=sys.stderr)
    dashboard.stop(cluster_dir(cluster_id))
    children = [found.get("controller_pid"), *pids]
    _kill(children, found, signal.SIGTERM)
    left = _wait_gone(children, found, 5)
    _kill(left, found, signal.SIGKILL)
    left = _wait_gone(left, found, 5)
    if key is not None:  # the files of processes killed -9 (an owner, a controller
        shm.sweep(shm.prefix(key))  # that swept nothing, engines it killed): probes, segments
    if not _started_by_the_cli(owner):
        shutil.rmtree(cluster_dir(cluster_id), ignore_errors=True)
    return left


def cmd_stop(args) -> int:
    if args.all:
        ids = state.running()
        if not ids:
            print(f"no running clusters in {ipcluster_dir()}")
            return 0
    else:
        try:
            ids = [state.choose(args.cluster or args.cluster_id)]
        except ConnectionFileError as exc:
            print(f"ipcluster: {exc}", file=sys.stderr)
            return 1
        if not cluster_dir(ids[0]).is_dir():
            print(f"ipcluster: no cluster {ids[0]!r} in {ipcluster_dir()}; running: "
                  f"{', '.join(state.running()) or 'none'}", file=sys.stderr)
            return 1
    code = 0
    for cluster_id in ids:
        left = stop(cluster_id)
        if left:
            print(f"ipcluster: processes {left} of cluster {cluster_id!r} did not stop",
                  file=sys.stderr)
            code = 1
        else:
            print(f"cluster {cluster_id!r} stopped")
    return code


def cmd_clean(args) -> int:
    """Remove failed and stale clusters: whatever of them still runs is stopped first."""
    removed = 0
    for cluster_id in state.cluster_ids():
        status = state.status(cluster_id)
        if status in ("failed", "stale"):
            stop(cluster_id)
            print(f"removed {status} cluster {cluster_id!r}")
            removed += 1
    if not removed:
        print(f"nothing to clean in {ipcluster_dir()}")
    return 0
