"""The suite's table: each case's figure for each peer, and its ratio to the best peer."""

from __future__ import annotations

from benchmarks.peers.cases import CASES

PEER_TITLES = {"ipcluster": "ipcluster", "floor": "floor probe", "ipyparallel": "ipyparallel",
               "dask": "dask.distributed", "pool": "ProcessPoolExecutor"}


def figure(x: float) -> str:
    """A figure with three significant digits, thousands separated."""
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def value(data: dict, peer: str, case: str):
    result = data["peers"].get(peer, {}).get("results", {}).get(case)
    return None if result is None else result["value"]


def worse_by(case, x: float, best: float) -> float:
    """How many times worse than the best `x` is: 1.0 for the best."""
    if case.better == "lower":
        return x / best if best else float("inf")
    return best / x if x else float("inf")


def table(data: dict) -> str:
    """Markdown: one row per case; each cell is the figure and, in brackets, how many times
    worse than the best peer it is (``best`` for the best one)."""
    peers = list(data["peers"])
    head = ["case", "unit", *(PEER_TITLES.get(p, p) for p in peers)]
    if "ipcluster" in peers and len(peers) > 1:
        head.append("ipcluster vs best other")
    rows = []
    for case in CASES:
        values = {p: value(data, p, case.name) for p in peers}
        present = {p: v for p, v in values.items() if v is not None}
        if not present:
            continue
        pick = min if case.better == "lower" else max
        best = pick(present.values())
        cells = []
        for p in peers:
            v = values[p]
            if v is None:
                cells.append("–")
            elif len(present) == 1:
                cells.append(figure(v))
            else:
                ratio = worse_by(case, v, best)
                cells.append(f"{figure(v)} (best)" if ratio <= 1.0 else f"{figure(v)} ({times(ratio)})")
        row = [case.title, case.unit, *cells]
        if len(head) > len(row):
            others = {p: v for p, v in present.items() if p != "ipcluster"}
            row.append(_versus(case, values.get("ipcluster"), others))
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _versus(case, ours, others: dict) -> str:
    if ours is None or not others:
        return "–"
    pick = min if case.better == "lower" else max
    name, best = pick(others.items(), key=lambda kv: kv[1])
    ratio = worse_by(case, ours, best)
    word = "better" if ratio < 1 else "worse"
    factor = 1 / ratio if ratio < 1 else ratio
    return f"{times(factor)} {word} than {PEER_TITLES.get(name, name)}"


def times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.1f}×" if ratio >= 10 else f"{ratio:.2f}×"
