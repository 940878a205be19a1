"""Find launchers by name in the ``ipcluster.launchers`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points

GROUP = "ipcluster.launchers"


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names() -> list[str]:
    return sorted(_entry_points())


def get(name: str) -> type:
    """The launcher class registered as `name`; an unknown name lists the known ones."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none (is ipcluster installed? `pip install -e .`)"
        raise ValueError(
            f"unknown launcher {name!r}; known launchers: {known}. Third-party launchers "
            f"register a class in the entry-point group {GROUP!r}"
        )
    return eps[name].load()
