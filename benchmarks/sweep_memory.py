"""A long labelled sweep in bounded memory: no-op tasks with ``--db sqlite``, consumed with
``imap``; the peak RSS of the controller and of the client, both to stay under 300 MiB.

    python -m benchmarks.sweep_memory                  # 1,000,000 tasks: about 20 minutes here
    python -m benchmarks.sweep_memory --tasks 20000    # a shorter look

Opt-in (it takes minutes): not part of ``python -m benchmarks``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import psutil

import ipcluster
from ipcluster import connection

LIMIT_MiB = 300


def same(x):
    return x


def sweep(tasks: int, engines: int = 2) -> dict:
    with ipcluster.Cluster(n=engines, db="sqlite") as rc0:
        rc = ipcluster.Client(rc0.connection_file, timeout=120)
        controller = psutil.Process(connection.read(rc0.connection_file).controller_pid)
        me = psutil.Process()
        peak = {"controller": 0, "client": 0}
        done = threading.Event()

        def watch():
            while not done.wait(0.2):
                peak["controller"] = max(peak["controller"], controller.memory_info().rss)
                peak["client"] = max(peak["client"], me.memory_info().rss)

        watcher = threading.Thread(target=watch, daemon=True)
        start = {"controller": controller.memory_info().rss, "client": me.memory_info().rss}
        watcher.start()
        view = rc.load_balanced_view(label=f"sweep-memory-{os.getpid()}")
        t0 = time.perf_counter()
        count = sum(1 for _ in view.imap(same, range(tasks)))
        seconds = time.perf_counter() - t0
        done.set()
        watcher.join()
        rc.close()
    mib = {k: round(v / 2**20) for k, v in peak.items()}
    return {"tasks": count, "seconds": round(seconds), "tasks_per_s": round(count / seconds),
            "start_MiB": {k: round(v / 2**20) for k, v in start.items()},
            "peak_MiB": mib, "under_limit": all(v < LIMIT_MiB for v in mib.values())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep_memory",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    result = sweep(args.tasks)
    print(json.dumps(result), flush=True)
    return 0 if result["under_limit"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
