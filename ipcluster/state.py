"""Messages layer: a cluster's record on disk, ``cluster.json``: what was started, by which
process (its owner), and what stops it; and the one rule for which cluster a command means.

The record is written by the process that starts a cluster (`Cluster`) and by ``ipcluster
engines``, through `update`; it is read by ``ipcluster list/stop/clean`` and by the controller,
which stops the cluster when its owner has died (`Owner.alive` is false) using the engine pids
and the batch cancel commands written here.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ipcluster import command, connection
from ipcluster.config import DEFAULT_CLUSTER_ID, cluster_dir, ipcluster_dir
from ipcluster.errors import ConnectionFileError

FILENAME = "cluster.json"


@dataclass(frozen=True)
class Owner:
    """A process, by pid and start time: a pid alone may be reused by another process."""

    pid: int
    started: float  # psutil's create_time()

    @classmethod
    def this_process(cls) -> Owner:
        import psutil

        return cls(os.getpid(), psutil.Process().create_time())

    @classmethod
    def parse(cls, text: str) -> Owner:
        """From ``PID:STARTED``, as the controller's ``--owner`` takes it."""
        pid, sep, started = text.partition(":")
        try:
            return cls(int(pid), float(started))
        except ValueError:
            raise ValueError(f"--owner expects PID:START_TIME (e.g. 1234:1764513600.5), "
                             f"not {text!r}") from None

    def __str__(self) -> str:
        return f"{self.pid}:{self.started!r}"

    def alive(self) -> bool:
        import psutil

        if self.pid <= 0:
            return False
        try:
            proc = psutil.Process(self.pid)
            return (abs(proc.create_time() - self.started) < 1.0
                    and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False


def owner_of(record: dict) -> Owner:
    """The process that started the cluster (``ipcluster start``, or the user's Python)."""
    owner = record.get("owner") or {}
    return Owner(int(owner.get("pid", 0)), float(owner.get("started", 0.0)))


def start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def start_times(pids) -> dict[str, float]:
    """``{pid: start time}`` of the processes still there, for a record: pids are reused (and
    soon, with pid_max 32768), so a recorded pid is ours only if its start time matches."""
    return {str(pid): t for pid in pids if pid and (t := start_time(pid)) is not None}


def alive(pid: int | None, found: dict | None = None) -> bool:
    """Whether `pid` is still a running ipcluster process; given its cluster's record `found`,
    whether it is still the very process recorded there (same start time), not a reuse of its
    pid by another (perhaps another cluster's engine)."""
    import psutil

    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or "ipcluster" not in " ".join(proc.cmdline()):
            return False
        if found is None:
            return True
        recorded = (found.get("started") or {}).get(str(pid))
        return recorded is not None and abs(proc.create_time() - recorded) < 1.0
    except psutil.Error:
        return False


def record_of(cluster) -> dict:
    """The record of a `Cluster` (its fields, its owner, its processes, its engine sets and
    what cancels their jobs), as `update` writes it."""
    sets = cluster.engines.record()
    controller_pid = cluster.controller.pid if cluster.controller else None
    return {
        "cluster_id": cluster.cluster_id, "n": cluster.n, "engines": cluster.launcher_name,
        "owner": {"pid": cluster.owner.pid, "started": cluster.owner.started,
                  "command": " ".join(sys.argv[:3])},
        "shutdown_atexit": cluster.shutdown_atexit, "controller_pid": controller_pid,
        "started": start_times([controller_pid, *sets["engine_pids"]]),
        **sets, "created": cluster.created, "ready": cluster.ready,
    }


def path(cluster_id: str, root: Path | None = None) -> Path:
    """The record of `cluster_id` (in `root`, a directory of clusters, else `ipcluster_dir()`)."""
    return cluster_dir(cluster_id, root) / FILENAME


def read(cluster_id: str, root: Path | None = None) -> dict | None:
    try:
        return json.loads(path(cluster_id, root).read_text())
    except (OSError, ValueError):
        return None


def write(cluster_id: str, record: dict, root: Path | None = None) -> None:
    """Replace the record atomically (a reader never sees half a file)."""
    target = path(cluster_id, root)
    tmp = target.with_name(f".{FILENAME}.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, target)


def update(cluster_id: str, /, root: Path | None = None, **fields) -> dict:
    record = {**(read(cluster_id, root) or {}), **fields}
    write(cluster_id, record, root)
    return record


def add_engines(cluster_id: str, pids: list[int], cancel: list[str] | None) -> None:
    """Engines added to a running cluster (``ipcluster engines``): stopped with the others."""
    found = read(cluster_id) or {}
    added = list(found.get("added", [])) + [{"pids": list(pids), "cancel": cancel}]
    update(cluster_id, added=added, started={**found.get("started", {}), **start_times(pids)})


def engines(found: dict) -> tuple[list[int], list[list[str]]]:
    """Local engine pids, and the commands that cancel batch jobs, of every engine recorded."""
    pids = list(found.get("engine_pids", []))
    cancel = list(found.get("cancel", []))
    for added in found.get("added", []):
        pids += added.get("pids", [])
        cancel += [added["cancel"]] if added.get("cancel") else []
    return pids, cancel


def cluster_ids(root: Path | None = None) -> list[str]:
    """Every cluster with a directory in `root` (default $IPCLUSTER_DIR): running, failed or
    stale."""
    root = Path(root) if root is not None else ipcluster_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir()
                  and ((p / FILENAME).exists() or (p / connection.FILENAME).exists()))


def status(cluster_id: str, root: Path | None = None) -> str:
    """``running`` (its controller is alive), ``starting``, ``failed`` (its start failed; the
    logs are kept) or ``stale`` (nothing runs, but its directory was not removed)."""
    record = read(cluster_id, root)
    if record is None:  # a controller started by hand (`ipcluster controller`): no record
        try:
            pid = connection.read(cluster_dir(cluster_id, root) / connection.FILENAME).controller_pid
        except ConnectionFileError:
            pid = None
        return "running" if alive(pid) else "stale"
    if record.get("failed"):
        return "failed"
    if alive(record.get("controller_pid"), record):
        return "running"
    if record.get("controller_pid") is None and owner_of(record).alive():
        return "starting"
    return "stale"


def running() -> list[str]:
    return [cid for cid in cluster_ids() if status(cid) == "running"]


def choose(cluster_id: str | None) -> str:
    """The cluster a command means: the one given; else the only running one; else
    ``default`` if it is running; else an error listing the running and the stale clusters."""
    if cluster_id is not None:
        return cluster_id
    ids = running()
    if len(ids) == 1:
        return ids[0]
    if DEFAULT_CLUSTER_ID in ids:
        return DEFAULT_CLUSTER_ID
    others = [f"{cid} ({status(cid)})" for cid in cluster_ids() if cid not in ids]
    if not ids:
        mixup = command.clash()
        raise ConnectionFileError(
            f"no running cluster in {ipcluster_dir()}"
            + (f" (only {', '.join(others)}: `ipcluster clean` removes them)" if others else "")
            + "; start one with `ipcluster start -n 4` or `ipcluster.Cluster(n=4)`"
            + (f". Note: {mixup}" if mixup else ""))
    raise ConnectionFileError(
        f"{len(ids)} clusters are running ({', '.join(ids)}) and none is 'default'; name the "
        "one you mean: `ipcluster stop CLUSTER_ID`, `--cluster-id CLUSTER_ID`, Client(cluster_id)"
        + (f"; also in {ipcluster_dir()}: {', '.join(others)}" if others else ""))
