"""CPU time per task in each process (client, controller, each engine), the figure a loaded
machine distorts least: wall-clock rates on a shared 2-core machine measure the share of the
cores the processes got, CPU seconds per task measure what each hop costs.

    python -m benchmarks.cpu [--roundtrips 2000] [--tasks 5000]

Starts a cluster of two engines, warms up, then times `rc[i].apply_sync(noop)` one at a time
and `lview.apply_async(noop)` for every task, then all `get()`; prints wall figures, the load
average, and the CPU microseconds per task of each process (user + system, from psutil).
"""

from __future__ import annotations

import argparse
import os
import time

import psutil

import ipcluster as ipp


def noop(x=None):
    return x


def cpu(processes: dict) -> dict:
    return {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}


def per_task(before: dict, after: dict, n: int) -> dict:
    costs = {name: round((after[name] - before[name]) / n * 1e6) for name in before}
    return {**costs, "total": sum(costs.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roundtrips", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=5000)
    args = parser.parse_args()
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
        a, t0 = cpu(processes), time.perf_counter()
        for _ in range(args.roundtrips):
            first.apply_sync(noop)
        b, t1 = cpu(processes), time.perf_counter()
        for ar in [lview.apply_async(noop, i) for i in range(args.tasks)]:
            ar.get()
        c, t2 = cpu(processes), time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"round trip {(t1 - t0) / args.roundtrips * 1e3:.3f} ms; CPU us per round trip "
          f"{per_task(a, b, args.roundtrips)}")
    print(f"tasks one by one {args.tasks / (t2 - t1):.0f}/s; CPU us per task "
          f"{per_task(b, c, args.tasks)}")


if __name__ == "__main__":
    main()
