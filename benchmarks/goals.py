"""The goals of the performance issue, checked against one run's figures.

Each goal compares ipcluster with a peer (or a fixed number) in the same run; a goal whose
figures are missing (a case or peer not run) is reported as not measured.
"""

from __future__ import annotations

from benchmarks.report import figure, value


def _v(data, peer, case):
    return value(data, peer, case)


def _ratio(data, case, peer):
    ours, theirs = _v(data, "ipcluster", case), _v(data, peer, case)
    return None if ours is None or theirs is None or not theirs else ours / theirs


def _at_most(r, limit):
    return None if r is None else r <= limit


def _at_least(r, limit):
    return None if r is None else r >= limit


def _show(r):
    return "–" if r is None else f"{r:.3g}"


def check(data: dict) -> list[dict]:
    goals = []

    def goal(text, measured, met):
        goals.append({"goal": text, "measured": measured, "met": met})

    # the wire issue's hard goals, then its stretch goals
    r = _ratio(data, "roundtrip_median", "floor")
    goal("round trip ≤ 2 × the floor probe's", f"{_show(r)} ×", _at_most(r, 2))
    r = _ratio(data, "submit", "ipyparallel")
    goal("tasks one by one ≥ 20 × ipyparallel's rate", f"{_show(r)} ×", _at_least(r, 20))
    v = _v(data, "ipcluster", "scale_register")
    goal("10,000 simulated engines register within 10 s", "–" if v is None else f"{v:.3g} s",
         _at_most(v, 10))
    big, small = _v(data, "ipcluster", "scale_tasks_many"), _v(data, "ipcluster", "scale_tasks_8")
    r = None if big is None or not small else big / small
    goal("task rate at 10,000 engines ≥ 0.5 × the rate at 8", f"{_show(r)} ×", _at_least(r, 0.5))
    v = _v(data, "ipcluster", "scale_controller_memory")
    goal("controller ≤ 300 MiB with 10,000 engines", "–" if v is None else f"{v:.3g} MiB",
         _at_most(v, 300))
    r = _ratio(data, "start_64", "ipyparallel")
    goal("start to 64 usable ≤ 0.15 × ipyparallel's", f"{_show(r)} ×", _at_most(r, 0.15))
    r = _ratio(data, "roundtrip_median", "pool")
    goal("(stretch) round trip ≤ 1.5 × ProcessPoolExecutor's", f"{_show(r)} ×", _at_most(r, 1.5))
    r = _ratio(data, "submit", "pool")
    goal("(stretch) tasks one by one ≥ 1 × ProcessPoolExecutor's rate", f"{_show(r)} ×",
         _at_least(r, 1))
    r = _ratio(data, "start_64", "ipyparallel")
    goal("(stretch) start to 64 usable ≤ 0.1 × ipyparallel's", f"{_show(r)} ×", _at_most(r, 0.1))

    # the earlier performance issue's goals, kept so that none regresses unseen
    r = _ratio(data, "roundtrip_median", "ipyparallel")
    goal("round trip ≤ 0.15 × ipyparallel's", f"{_show(r)} ×", _at_most(r, 0.15))
    r = _ratio(data, "roundtrip_median", "pool")
    goal("round trip ≤ 3 × ProcessPoolExecutor's", f"{_show(r)} ×", _at_most(r, 3))
    r = _ratio(data, "submit", "pool")
    goal("tasks one by one ≥ 0.5 × ProcessPoolExecutor's rate", f"{_show(r)} ×", _at_least(r, 0.5))
    v = _v(data, "ipcluster", "map_default")
    goal("default map of tiny items ≥ 300,000 items/s",
         "–" if v is None else f"{figure(v)} items/s", _at_least(v, 300_000))
    r = _ratio(data, "start_8", "ipyparallel")
    goal("start to 8 usable ≤ 0.15 × ipyparallel's", f"{_show(r)} ×", _at_most(r, 0.15))
    r = _ratio(data, "start_8", "dask")
    goal("start to 8 usable no slower than dask's", f"{_show(r)} ×", _at_most(r, 1.0))
    r = _ratio(data, "pushpull_100MB", "dask")
    goal("push + pull of 100 MB ≥ 2 × dask's rate", f"{_show(r)} ×", _at_least(r, 2))
    ours, copy = _v(data, "ipcluster", "pushpull_100MB"), _v(data, "pool", "copy_100MB")
    r = None if ours is None or copy is None else ours / copy
    goal("(stretch) push + pull of 100 MB ≥ 25 % of the in-process copy rate",
         "–" if r is None else f"{100 * r:.1f} %", _at_least(r, 0.25))
    ours = _v(data, "ipcluster", "broadcast_10MB")
    others = [_v(data, p, "broadcast_10MB") for p in data["peers"] if p != "ipcluster"]
    others = [o for o in others if o is not None]
    r = None if ours is None or not others else ours / min(others)
    goal("broadcast of 10 MB to 8 faster than every peer", f"{_show(r)} × the fastest peer's time",
         None if r is None else r < 1)
    # the data plane issue's goals
    r = _ratio(data, "pushpull_1GB", "ipyparallel")
    goal("push + pull of 1 GB ≥ 4 × ipyparallel's rate", f"{_show(r)} ×", _at_least(r, 4))
    ours = _v(data, "ipcluster", "broadcast_10MB")
    theirs = _v(data, "ipyparallel", "broadcast_10MB")
    r = None if ours is None or not theirs else ours / theirs
    goal("broadcast of 10 MB to 8 ≤ 0.5 × ipyparallel's best time", f"{_show(r)} ×",
         _at_most(r, 0.5))
    v = _v(data, "ipcluster", "link_push_100MB")
    goal("push of 100 MB across a 1 Gbit/s link ≤ 1.2 × the link's transfer time",
         f"{_show(v)} ×", _at_most(v, 1.2))
    r = _ratio(data, "memory_engine", "ipyparallel")
    goal("idle engine memory ≤ 0.4 × ipyparallel's", f"{_show(r)} ×", _at_most(r, 0.4))
    r = _ratio(data, "memory_controller", "ipyparallel")
    goal("controller memory ≤ 0.2 × ipyparallel's", f"{_show(r)} ×", _at_most(r, 0.2))
    return goals


def table(goals: list[dict]) -> str:
    mark = {True: "met", False: "**not met**", None: "not measured"}
    lines = ["| goal | measured | |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['measured']} | {mark[g['met']]} |" for g in goals]
    return "\n".join(lines)
