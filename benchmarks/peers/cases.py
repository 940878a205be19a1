"""Every case of the suite, once: its name, what it measures, its unit, and which way is better.

Imported both by the suite (to print tables) and by each peer's runner (to pick what to run),
so it uses the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    unit: str
    better: str  # "lower" or "higher"


CASES = [
    Case("start_2", "start to 2 usable (each ran a task)", "s", "lower"),
    Case("start_8", "start to 8 usable (each ran a task)", "s", "lower"),
    Case("start_32", "start to 32 usable (each ran a task)", "s", "lower"),
    Case("start_64", "start to 64 usable (each ran a task)", "s", "lower"),
    Case("roundtrip_median", "round trip, no-op on one worker, median", "ms", "lower"),
    Case("roundtrip_p90", "round trip, no-op on one worker, p90", "ms", "lower"),
    Case("submit", "no-op tasks submitted one by one", "tasks/s", "higher"),
    Case("map_default", "map of no-op items, default settings", "items/s", "higher"),
    Case("map_chunksize1", "map of no-op items, chunksize=1", "items/s", "higher"),
    Case("pushpull_1MB", "push + pull of a 1 MB array", "MB/s", "higher"),
    Case("pushpull_100MB", "push + pull of a 100 MB array", "MB/s", "higher"),
    Case("pushpull_1GB", "push + pull of a 1 GB array", "MB/s", "higher"),
    Case("broadcast_10MB", "broadcast 10 MB to 8 workers", "s", "lower"),
    Case("link_push_100MB", "push 100 MB to another host over 1 Gbit/s, x the link's time",
         "x", "lower"),
    Case("link_broadcast_100MB", "push 100 MB to engines on two other hosts, x one link's time",
         "x", "lower"),
    Case("memory_engine", "idle worker memory (RSS, helpers included)", "MiB", "lower"),
    Case("memory_controller", "controller / scheduler memory (RSS, all processes)", "MiB", "lower"),
    Case("scale_register", "10,000 simulated engines registered", "s", "lower"),
    Case("scale_tasks_8", "tiny tasks, 8 simulated engines", "tasks/s", "higher"),
    Case("scale_tasks_many", "tiny tasks, 10,000 simulated engines", "tasks/s", "higher"),
    Case("scale_controller_memory", "controller RSS with 10,000 simulated engines", "MiB", "lower"),
    Case("copy_100MB", "in-process copy of a 100 MB array (reference)", "MB/s", "higher"),
]
BY_NAME = {c.name: c for c in CASES}

# How much work each case does. A full run must finish within 15 minutes on a 2-core machine;
# `quick` is a smoke run of about 2 minutes that skips 32 and 64 engines and the 1 GB array.
SIZES = {
    "full": {
        "start_repeats": 3, "start_32_repeats": 1, "start_64_repeats": 1,
        "roundtrip": 1000,
        "submit": 10_000,
        "map_default": 100_000,
        # peers without automatic chunking send one task per item: their rate is measured on
        # fewer items (it does not depend on the count), or one case would take minutes
        "map_per_item": 10_000,
        "map_chunksize1": 10_000,
        "pushpull_repeats": {"1MB": 20, "100MB": 5, "1GB": 2},
        "broadcast_repeats": 5,
        "scale_engines": 10_000, "scale_tasks": 10_000,
    },
    "quick": {
        "start_repeats": 1, "start_32_repeats": 0, "start_64_repeats": 0,
        "roundtrip": 200,
        "submit": 2000,
        "map_default": 20_000,
        "map_per_item": 2000,
        "map_chunksize1": 2000,
        "pushpull_repeats": {"1MB": 5, "100MB": 2},
        "broadcast_repeats": 3,
        "scale_engines": 1000, "scale_tasks": 2000,
    },
}

MB = 1_000_000
ARRAY_BYTES = {"1MB": MB, "100MB": 100 * MB, "1GB": 1000 * MB, "10MB": 10 * MB}


def select(only: list[str] | None, quick: bool) -> list[str]:
    """Case names to run: those matching a name or prefix in `only`, else all for the mode."""
    names = [c.name for c in CASES]
    if only:
        chosen = [n for n in names if any(n == o or n.startswith(o) for o in only)]
        unknown = [o for o in only if not any(n == o or n.startswith(o) for n in names)]
        if unknown:
            raise SystemExit(f"unknown case {', '.join(unknown)}; the cases are: {', '.join(names)}")
        return chosen
    if quick:
        return [n for n in names
                if n not in ("start_32", "start_64", "pushpull_1GB", "link_push_100MB",
                             "link_broadcast_100MB")]
    return names
