"""Client API layer: cutting sequences into parts for engines, and joining parts back.

Used by `map` (consecutive chunks), `scatter`/`gather` (``dist="b"``: consecutive blocks whose
sizes differ by at most one; ``dist="r"``: round robin) and `@parallel`. numpy arrays are cut
into views, so their parts travel without a copy.
"""

from __future__ import annotations

DISTS = {"b": "consecutive blocks", "r": "round robin"}


def check_dist(dist: str) -> None:
    if dist not in DISTS:
        raise ValueError(f"dist must be 'b' ({DISTS['b']}) or 'r' ({DISTS['r']}), not {dist!r}")


def length(seq, what: str = "scatter") -> int:
    try:
        n = len(seq)
        seq[0:0]
    except TypeError:
        raise TypeError(f"{what} needs a sequence that can be sliced (a list, tuple, range or "
                        f"numpy array), not a {type(seq).__name__}; wrap it in list() first") from None
    return n


def parts(seq, n: int, dist: str = "b") -> list:
    """`seq` cut into `n` parts (some empty if `seq` is shorter than `n`)."""
    check_dist(dist)
    size = length(seq)
    if dist == "r":
        return [seq[i::n] for i in range(n)]
    base, extra = divmod(size, n)
    out, start = [], 0
    for i in range(n):
        stop = start + base + (1 if i < extra else 0)
        out.append(seq[start:stop])
        start = stop
    return out


def chunks(sequences: tuple, size: int):
    """Consecutive chunks of at most `size` items of equally long `sequences`, as lists."""
    n = len(sequences[0])
    for start in range(0, n, size):
        yield [list(s[start:start + size]) for s in sequences]


def equal_lengths(sequences: tuple) -> int:
    if not sequences:
        raise TypeError("map needs at least one sequence")
    lengths = [length(s, "map") for s in sequences]
    if len(set(lengths)) > 1:
        raise ValueError(f"map: the sequences have different lengths {lengths}; "
                         "pass sequences of equal length")
    return lengths[0]


def shortest(iterables: tuple) -> tuple[tuple, int]:
    """`iterables` as sequences cut to the shortest, as builtin ``map`` stops there; one that
    cannot be sliced (a generator, an iterator) is read into a list first."""
    if not iterables:
        raise TypeError("map needs at least one iterable")
    sequences = []
    for it in iterables:
        try:
            len(it)
            it[0:0]
        except TypeError:
            it = list(it)
        sequences.append(it)
    n = min(len(s) for s in sequences)
    return tuple(s if len(s) == n else s[:n] for s in sequences), n


def join(values: list, dist: str = "b"):
    """Parts back into one sequence (a list, or an array if the parts are arrays)."""
    values = [v for v in values if v is not None]
    if values and all(type(v).__module__ == "numpy" and hasattr(v, "ndim") for v in values):
        import numpy as np

        if dist == "b":
            return np.concatenate(values)
        out = np.empty((sum(len(v) for v in values), *values[0].shape[1:]), values[0].dtype)
        for i, v in enumerate(values):
            out[i::len(values)] = v
        return out
    lists = [list(v) if isinstance(v, (list, tuple, range)) else [v] for v in values]
    if dist == "b":
        return [item for part in lists for item in part]
    out = []
    for i in range(max((len(p) for p in lists), default=0)):
        out += [p[i] for p in lists if i < len(p)]
    return out
