"""Surfaces layer: what is running: the clusters in $IPCLUSTER_DIR (``ipcluster list``) and
the engines of one, with their work and resources (``ipcluster status``)."""

from __future__ import annotations

import json
import sys
import time

from ipcluster import connection, state
from ipcluster.config import cluster_dir, ipcluster_dir


# -- status -------------------------------------------------------------------------------------

def _resources(pid: int, host: str) -> tuple:
    """CPU % and RSS of an engine process on this host (unknown elsewhere)."""
    import socket

    import psutil

    if host != socket.gethostname():
        return None, None
    try:
        proc = psutil.Process(pid)
        return proc.cpu_percent(interval=0.05), proc.memory_info().rss
    except psutil.Error:
        return None, None


def cmd_status(args) -> int:
    from ipcluster.client import Client
    from ipcluster.errors import IpclusterError

    try:
        with Client(state.choose(args.cluster_id), timeout=5) as rc:
            engines = rc.engine_info()
            status = rc.queue_status()
            current = [e["current"] for e in engines.values() if e["current"]]
            labels = {r["msg_id"]: r["label"] for r in rc.db_query(
                {"msg_id": {"$in": current}}, keys=["msg_id", "label"])} if current else {}
            store = rc.store_problem

    except IpclusterError as exc:
        print(f"ipcluster: {exc}", file=sys.stderr)
        return 1
    # queued: not yet given to an engine, and given to one but waiting behind its running task
    queue = status.pop("unassigned") + sum(max(0, s["queue"] + s["tasks"] - 1) for s in status.values())
    rows = []
    for eid, e in sorted(engines.items()):
        cpu, rss = _resources(e["pid"], e["host"])
        rows.append({"engine": eid, "host": e["host"], "pid": e["pid"], "state": e["state"],
                     "task": e["current"], "label": labels.get(e["current"]), "done": e["completed"],
                     "cpu_percent": cpu, "rss": rss})
    if args.output == "json":
        print(json.dumps({"engines": rows, "queued": queue, "store": store}, indent=1))
        return 0
    cols = ["engine", "host", "pid", "state", "task", "label", "done", "cpu_percent", "rss"]
    shown = [{**r, "cpu_percent": "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.0f}",
              "rss": "-" if r["rss"] is None else f"{r['rss'] / 2**20:.0f} MiB",
              "task": r["task"] or "-", "label": r["label"] or "-"} for r in rows]
    widths = [max(len(c), *(len(str(r[c])) for r in shown)) if shown else len(c) for c in cols]
    print("  ".join(c.upper().replace("_PERCENT", "%").ljust(w) for c, w in zip(cols, widths)))
    for r in shown:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
    print(f"{len(rows)} engines; {queue} tasks queued")
    if store:
        print(f"WARNING: {store}")
    return 0


# -- list ---------------------------------------------------------------------------------------

def cmd_list(args) -> int:
    rows = []
    for cid in state.cluster_ids():
        found = state.read(cid) or {}
        pids, _ = state.engines(found)
        owner = found.get("owner") or {}
        rows.append({
            "cluster_id": cid,
            "state": state.status(cid),
            "engines": sum(1 for p in pids if state.alive(p, found)),
            "jobs": len(found.get("jobs", [])),
            "owner": (f"{owner.get('pid')}" + ("" if found.get("shutdown_atexit", True) else " (kept)")
                      if owner else "-"),
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(found.get("created", 0))),
            "failed": found.get("failed"),
            "directory": str(cluster_dir(cid)),
            "connection_file": str(cluster_dir(cid) / connection.FILENAME),
        })
    if args.output == "json":
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no clusters in {ipcluster_dir()}")
        return 0
    cols = ["cluster_id", "state", "engines", "jobs", "owner", "created"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        if r["state"] in ("failed", "stale"):
            why = f"failed: {r['failed'].splitlines()[0]}" if r["failed"] else "nothing runs"
            print(f"{r['cluster_id']}: {why}; logs in {r['directory']} (`ipcluster clean` "
                  f"removes them)")
    return 0
