"""Run the selected cases for one peer and print the results as one line of JSON.

    python benchmarks/peers/run.py --peer dask [--quick] [--only start,roundtrip]

This script runs inside the peer's own interpreter (its venv), so it and the modules beside it
use only the standard library, numpy and psutil, plus the peer itself. Each peer is a module
``<peer>_peer.py`` with a `start(n)` that returns a session once each of n workers ran a task;
a session offers the operations the cases need, and a case the peer cannot do is left out.

The no-op task is defined here, in ``__main__``, so every peer ships it by value to its workers.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import sys
import time
import traceback

import numpy as np

import measure
from cases import ARRAY_BYTES, MB, SIZES, select


def noop(x=None):
    return x


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Runner:
    def __init__(self, peer, names: list[str], sizes: dict) -> None:
        self.peer, self.names, self.sizes = peer, names, sizes
        self.results: dict[str, dict] = {}
        self.errors: dict[str, str] = {}

    def want(self, *names) -> bool:
        return any(n in self.names for n in names)

    def record(self, name: str, value, **detail) -> None:
        self.results[name] = {"value": value, **({"detail": detail} if detail else {})}
        log(f"{name} = {value} {detail if detail else ''}")

    def guarded(self, name: str, fn, *args) -> None:
        """Run one case; a failure is recorded for that case and the others go on."""
        try:
            fn(*args)
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} failed:\n{traceback.format_exc()}")

    # -- the sessions -------------------------------------------------------------------

    def run(self) -> None:
        two = ("roundtrip_median", "roundtrip_p90", "submit", "map_default", "map_chunksize1",
               "pushpull_1MB", "pushpull_100MB", "pushpull_1GB")
        eight = ("broadcast_10MB", "memory_engine", "memory_controller")
        kept = {}
        for n in (2, 8, 32, 64):
            if self.want(f"start_{n}"):
                repeats = self.sizes.get(f"start_{n}_repeats", self.sizes["start_repeats"]) or 1
                keep = (n == 2 and self.want(*two)) or (n == 8 and self.want(*eight))
                self.guarded(f"start_{n}", self.start_case, n, repeats, keep, kept)
        if self.want(*two):
            self.with_session(2, kept, lambda s: self.two_engine_cases(s))
        if self.want(*eight):
            self.with_session(8, kept, lambda s: self.eight_engine_cases(s))
        if self.want("scale_register", "scale_tasks_8", "scale_tasks_many",
                     "scale_controller_memory") and hasattr(self.peer, "scale"):
            self.guarded("scale", self.peer.scale, self, noop)
        if self.want("copy_100MB") and getattr(self.peer, "COPY_REFERENCE", False):
            self.guarded("copy_100MB", self.copy_case)

    def start_case(self, n: int, repeats: int, keep: bool, kept: dict) -> None:
        times = []
        for i in range(repeats):
            gc.collect()
            t, session = measure.timed(self.peer.start, n, noop)
            times.append(t)
            if keep and i == repeats - 1:
                kept[n] = session
            else:
                session.stop()
        self.record(f"start_{n}", round(measure.median(times), 3), samples=[round(t, 3) for t in times])

    def with_session(self, n: int, kept: dict, body) -> None:
        try:
            session = kept.pop(n, None) or self.peer.start(n, noop)
        except Exception as exc:
            self.errors[f"session_{n}"] = f"{type(exc).__name__}: {exc}"
            log(f"could not start {n} workers:\n{traceback.format_exc()}")
            return
        try:
            body(session)
        finally:
            session.stop()

    # -- cases on two workers (one per core) --------------------------------------------

    def two_engine_cases(self, s) -> None:
        if self.want("roundtrip_median", "roundtrip_p90"):
            self.guarded("roundtrip", self.roundtrip_case, s)
        if self.want("submit"):
            self.guarded("submit", self.submit_case, s)
        if self.want("map_default") and hasattr(s, "map"):
            n = self.sizes["map_default" if getattr(s, "CHUNKS_BY_DEFAULT", False) else "map_per_item"]
            self.guarded("map_default", self.map_case, s, "map_default", n, None)
        if self.want("map_chunksize1") and hasattr(s, "map"):
            self.guarded("map_chunksize1", self.map_case, s, "map_chunksize1",
                         self.sizes["map_chunksize1"], 1)
        for label in ("1MB", "100MB", "1GB"):
            if self.want(f"pushpull_{label}") and hasattr(s, "push_pull"):
                self.guarded(f"pushpull_{label}", self.pushpull_case, s, label)

    def roundtrip_case(self, s) -> None:
        for _ in range(50):  # warm up: first calls pay imports and connection setup
            s.roundtrip(noop)
        samples = []
        for _ in range(self.sizes["roundtrip"]):
            t0 = time.perf_counter()
            s.roundtrip(noop)
            samples.append(time.perf_counter() - t0)
        self.record("roundtrip_median", round(measure.median(samples) * 1000, 3), n=len(samples))
        self.record("roundtrip_p90", round(measure.percentile(samples, 0.9) * 1000, 3), n=len(samples))

    def submit_case(self, s) -> None:
        s.submit_many(noop, 100)  # warm up
        n = self.sizes["submit"]
        t, _ = measure.timed(s.submit_many, noop, n)
        self.record("submit", round(n / t), n=n, seconds=round(t, 3))

    def map_case(self, s, name: str, n: int, chunksize) -> None:
        s.map(noop, range(100), chunksize)  # warm up
        t, out = measure.timed(s.map, noop, range(n), chunksize)
        if len(out) != n:
            raise AssertionError(f"map returned {len(out)} items, expected {n}")
        self.record(name, round(n / t), n=n, seconds=round(t, 3))

    def pushpull_case(self, s, label: str) -> None:
        nbytes = ARRAY_BYTES[label]
        if label == "1GB" and measure.psutil.virtual_memory().available < 8 * nbytes:
            log("pushpull_1GB skipped: less than 8 GB of memory available")
            return
        a = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
        s.push_pull(a[: 1000])  # warm up
        times = []
        for _ in range(self.sizes["pushpull_repeats"].get(label, 1)):
            gc.collect()
            t, back = measure.timed(s.push_pull, a)
            if back.shape != a.shape or back[-1] != a[-1]:
                raise AssertionError("pulled array differs from the pushed one")
            del back
            times.append(t)
        t = measure.median(times)
        # bytes moved: the array goes out and comes back
        self.record(f"pushpull_{label}", round(2 * nbytes / MB / t), seconds=round(t, 4),
                    samples=len(times))

    # -- cases on eight workers ---------------------------------------------------------

    def eight_engine_cases(self, s) -> None:
        if self.want("memory_engine", "memory_controller") and hasattr(s, "memory"):
            self.guarded("memory", self.memory_case, s)
        if self.want("broadcast_10MB") and hasattr(s, "broadcast"):
            self.guarded("broadcast_10MB", self.broadcast_case, s)

    def memory_case(self, s) -> None:
        time.sleep(1.0)  # let the workers settle after their first task
        engines, controller, note = s.memory()
        self.record("memory_engine", round(sum(engines) / len(engines), 1), per_worker=engines)
        if controller is not None:
            self.record("memory_controller", controller, note=note)

    def broadcast_case(self, s) -> None:
        a = np.random.default_rng(1).integers(0, 255, ARRAY_BYTES["10MB"], dtype=np.uint8)
        best = {}
        for how in s.broadcast_ways():
            s.broadcast(a, how)  # warm up
            times = [measure.timed(s.broadcast, a, how)[0] for _ in range(self.sizes["broadcast_repeats"])]
            best[how] = round(measure.median(times), 4)
        self.record("broadcast_10MB", min(best.values()), ways=best)

    # -- the physical reference ---------------------------------------------------------

    def copy_case(self) -> None:
        a = np.random.default_rng(2).integers(0, 255, 100 * MB, dtype=np.uint8)
        dst = np.empty_like(a)
        np.copyto(dst, a)  # warm up: the destination pages are mapped once
        warm = measure.median([measure.timed(np.copyto, dst, a)[0] for _ in range(10)])
        fresh = measure.median([measure.timed(a.copy)[0] for _ in range(5)])
        self.record("copy_100MB", round(100 / warm), fresh_copy_MB_s=round(100 / fresh))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    names = select([o for o in args.only.split(",") if o], args.quick)
    peer = importlib.import_module(f"{args.peer}_peer")
    names = [n for n in names if n in getattr(peer, "CASES", names)]
    runner = Runner(peer, names, SIZES["quick" if args.quick else "full"])
    t0 = time.perf_counter()
    try:
        runner.run()
    finally:
        print(json.dumps({"peer": args.peer, "results": runner.results, "errors": runner.errors,
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
