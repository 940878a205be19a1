"""What the durable ledger costs: individually submitted tiny tasks per second with the task
ledger in memory and in SQLite (``--db sqlite``), and the time to detect an exited engine.

    python -m benchmarks.ledger_cost
"""

from __future__ import annotations

import os
import signal
import time

import ipcluster


def rate(db: str | None, n: int = 3000) -> float:
    if db:
        os.environ["DASK_IPCLUSTER__CONTROLLER__DB"] = db
    try:
        with ipcluster.Cluster(n=2) as rc:
            view = rc.load_balanced_view()
            view.map_sync(abs, range(100))
            t0 = time.perf_counter()
            ars = [view.apply_async(abs, i) for i in range(n)]
            for ar in ars:
                ar.get()
            return n / (time.perf_counter() - t0)
    finally:
        os.environ.pop("DASK_IPCLUSTER__CONTROLLER__DB", None)


def exit_detection() -> float:
    with ipcluster.Cluster(n=1) as rc:
        pid = rc[0].apply_sync(os.getpid)
        ar = rc[0].apply_async(time.sleep, 60)
        time.sleep(0.2)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        try:
            ar.get(timeout=30)
        except ipcluster.EngineError:
            return time.perf_counter() - t0
    raise RuntimeError("the task did not fail")


def main() -> None:
    memory, sqlite = rate(None), rate("sqlite")
    print(f"tasks/s, ledger in memory: {memory:,.0f}; in SQLite: {sqlite:,.0f} "
          f"(per task: {1e6 / memory:.0f} us vs {1e6 / sqlite:.0f} us)")
    print(f"exited engine: its task failed {exit_detection():.3f} s after the kill")


if __name__ == "__main__":
    main()
