"""CPU time per task in each process (client, controller, each engine), the figure a loaded
machine distorts least: wall-clock rates on a shared 2-core machine measure the share of the
cores the processes got, CPU seconds per task measure what each hop costs.

    python -m benchmarks.cpu [--roundtrips 2000] [--tasks 5000] [--threads] [--floor]

Starts a cluster of two engines, warms up, then times `rc[i].apply_sync(noop)` one at a time
and `lview.apply_async(noop)` for every task, then all `get()`; prints wall figures, the load
average, and the CPU microseconds per task of each process (user + system, from psutil).
`--threads` splits each process by thread (libzmq's I/O threads apart). `--floor` measures the
floor probe (`peers/floor_peer.py`) the same way: what Python and zmq cost for the same hops.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psutil

import ipcluster as ipp


def noop(x=None):
    return x


def cpu(processes: dict, threads: bool = False) -> dict:
    if not threads:
        return {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
    out = {}
    for name, p in processes.items():
        for t in p.threads():
            try:
                comm = Path(f"/proc/{p.pid}/task/{t.id}/comm").read_text().strip()
            except OSError:
                comm = "?"
            out[f"{name} {comm} {t.id}"] = t.user_time + t.system_time
    return out


def per_task(before: dict, after: dict, n: int) -> dict:
    costs = {name: round((after.get(name, 0) - before.get(name, 0)) / n * 1e6) for name in after}
    costs = {name: us for name, us in costs.items() if us}
    return {**costs, "total": sum(costs.values())}


def floor(args) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "peers"))
    import floor_peer

    session = floor_peer.start(2, noop)
    try:
        processes = {"client": psutil.Process(), "relay": psutil.Process(session.procs[0].pid)}
        processes.update({f"engine {i}": psutil.Process(p.pid)
                          for i, p in enumerate(session.procs[1:])})
        for _ in range(200):
            session.roundtrip(noop)
        a, t0 = cpu(processes, args.threads), time.perf_counter()
        for _ in range(args.roundtrips):
            session.roundtrip(noop)
        b, t1 = cpu(processes, args.threads), time.perf_counter()
        session.submit_many(noop, args.tasks)
        c, t2 = cpu(processes, args.threads), time.perf_counter()
    finally:
        session.stop()
    report("floor probe", args, a, b, c, t0, t1, t2)


def report(what: str, args, a, b, c, t0, t1, t2) -> None:
    print(f"{what}: load average {os.getloadavg()[0]:.1f}")
    print(f"round trip {(t1 - t0) / args.roundtrips * 1e3:.3f} ms; CPU us per round trip "
          f"{per_task(a, b, args.roundtrips)}")
    print(f"tasks one by one {args.tasks / (t2 - t1):.0f}/s; CPU us per task "
          f"{per_task(b, c, args.tasks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roundtrips", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--threads", action="store_true", help="each thread apart")
    parser.add_argument("--floor", action="store_true", help="the floor probe, not ipcluster")
    args = parser.parse_args()
    if args.floor:
        return floor(args)
    with ipp.Cluster(n=2) as rc:
        rc.wait_for_engines(2, timeout=60)
        processes = {"client": psutil.Process(), "controller": psutil.Process(rc.cluster.controller.pid)}
        processes.update({f"engine {eid}": psutil.Process(e["pid"])
                          for eid, e in rc.engine_info().items()})
        first, lview = rc[rc.ids[0]], rc.load_balanced_view()
        for _ in range(200):
            first.apply_sync(noop)
        for ar in [lview.apply_async(noop, i) for i in range(500)]:
            ar.get()
        a, t0 = cpu(processes, args.threads), time.perf_counter()
        for _ in range(args.roundtrips):
            first.apply_sync(noop)
        b, t1 = cpu(processes, args.threads), time.perf_counter()
        for ar in [lview.apply_async(noop, i) for i in range(args.tasks)]:
            ar.get()
        c, t2 = cpu(processes, args.threads), time.perf_counter()
    report("ipcluster", args, a, b, c, t0, t1, t2)


if __name__ == "__main__":
    main()
