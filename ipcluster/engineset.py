"""Client API layer: an engine set, the engines that one ``start_engines`` call started.

A cluster's engines come in sets, as ipyparallel's do: ``await cluster.start_engines(n)``
starts `n` engines through a launcher of their own and returns the set's id, under which
``cluster.engines[id]`` keeps the set until it is stopped; a set is signalled, restarted and
stopped as one (``signal_engines(sig, id)``, ``restart_engines(id)``, ``stop_engines(id)``).
Every launcher can run several sets at once: each set's launcher keeps its logs and job
scripts in a directory of its own (the first set in the cluster directory itself, so that its
engine logs are where they always were, each other set in ``engines-<id>/`` inside it).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from pathlib import Path

from ipcluster import launchers
from ipcluster.config import resolve


class EngineSet:
    """`n` engines started together by `launcher`, known to their cluster as `id`."""

    def __init__(self, id: str, n: int, launcher: launchers.Launcher, log_dir: Path) -> None:
        self.id, self.n, self.launcher, self.log_dir = id, n, launcher, log_dir

    def __repr__(self) -> str:
        return (f"<EngineSet {self.id!r}: {self.n} {self.launcher.name} engines, "
                f"{self.launcher.state().value}>")

    @property
    def pids(self) -> list[int]:
        """Process ids of the engines on this machine (none for batch jobs or remote hosts)."""
        return list(self.launcher.pids)

    @property
    def jobs(self) -> list[str]:
        """Batch job ids, for launchers that submit jobs."""
        return list(getattr(self.launcher, "jobs", []))

    def cancel_argv(self) -> list[str] | None:
        """The command that cancels this set's batch jobs, for the cluster's record."""
        jobs = self.jobs
        return self.launcher.cancel_argv(jobs) if jobs else None

    def signal(self, sig: int) -> None:
        self.launcher.signal(sig)

    def stop(self) -> None:
        self.launcher.stop()


# What `ipcluster engine` imports: the local launcher's template process imports these once and
# forks each engine, instead of each engine starting an interpreter and importing them.
ENGINE_MODULES = ["argparse", "ipcluster.engine.command", "ipcluster.engine.main",
                  "ipcluster.engine.walltime"]


class EngineSets(Mapping):
    """A cluster's engine sets by id, oldest first (``cluster.engines``), and the launchers
    they run on: each set has a launcher of its own, made from the cluster's launcher name
    and options, writing in a directory of its own."""

    def __init__(self, launcher_name: str, launcher_options: dict, cluster_dir: Path) -> None:
        if launcher_name == "local":  # engines forked from one pre-imported process
            launcher_options.setdefault("preload", ENGINE_MODULES)
        self.launcher_name, self.launcher_options = launcher_name, launcher_options
        self.cluster_dir = cluster_dir
        self._sets: dict[str, EngineSet] = {}
        self._log_dirs: dict[str, Path] = {}  # engine set id -> where its launcher writes
        # the launcher the first set uses, made now: a bad option fails when the cluster is made
        self._spare: launchers.Launcher | None = self._make(cluster_dir)

    def join_others(self) -> None:
        """The cluster directory holds the engines another process started (this object adds
        sets to a cluster it does not own): every set of this object writes in a directory of
        its own, none in the cluster directory beside the owner's logs."""
        self._log_dirs.setdefault("", self.cluster_dir)  # the owner's first set, by no id
        self._spare = None

    def __getitem__(self, engine_set_id: str) -> EngineSet:
        return self._sets[check_id(engine_set_id, self._sets)]

    def __iter__(self):
        return iter(self._sets)

    def __len__(self) -> int:
        return len(self._sets)

    def __repr__(self) -> str:
        return repr(self._sets)

    def _make(self, log_dir: Path) -> launchers.Launcher:
        return make_launcher(self.launcher_name, log_dir, **self.launcher_options)

    @property
    def launcher(self) -> launchers.Launcher:
        """The launcher of the newest set; before the first, the one it will use."""
        if self._sets:
            return next(reversed(self._sets.values())).launcher
        if self._spare is None:
            self._spare = self._make(self.cluster_dir)
        return self._spare

    def add(self, n: int, engine_set_id: str | None = None) -> EngineSet:
        """A new set of `n` engines (not started yet), with a launcher of its own: the first
        set writes in the cluster directory, each other in ``engines-<id>/`` (so that no two
        sets' logs and job scripts collide)."""
        if engine_set_id in self._sets:
            raise ValueError(f"engine set {engine_set_id!r} is running already; stop it first "
                             f"(stop_engines({engine_set_id!r})) or choose another id")
        set_id = engine_set_id or new_id(self._sets)
        log_dir = self._log_dirs.setdefault(
            set_id, self.cluster_dir / f"engines-{set_id}" if self._log_dirs else self.cluster_dir)
        if log_dir == self.cluster_dir and self._spare is not None:
            launcher, self._spare = self._spare, None
        else:
            log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            launcher = self._make(log_dir)
        self._sets[set_id] = EngineSet(set_id, n, launcher, log_dir)
        return self._sets[set_id]

    def stop(self, set_ids: list[str], guard) -> None:
        """Stop the sets `set_ids`; each leaves the mapping, under the lock `guard`, before its
        engines stop (so that whoever watches them does not take their exit for a crash)."""
        for set_id in set_ids:
            with guard:
                engine_set = self._sets.pop(check_id(set_id, self._sets))
            engine_set.stop()
        if not self._sets and self._spare is not None:
            self._spare.stop()  # what it prepared (the local launcher's template process)

    def signal(self, sig: int, set_ids: list[str]) -> None:
        for set_id in set_ids:
            self[set_id].signal(sig)

    def chosen(self, engine_set_id: str | None) -> list[str]:
        """The ids `engine_set_id` means: that set's, or every set's when it is None."""
        return list(self._sets) if engine_set_id is None else [check_id(engine_set_id, self._sets)]

    def record(self) -> dict:
        """What the cluster's record (`ipcluster.state`) keeps of the sets, to stop them."""
        sets = list(self._sets.values())
        return {"engine_pids": [pid for s in sets for pid in s.pids],
                "jobs": [job for s in sets for job in s.jobs],
                "cancel": [argv for s in sets if (argv := s.cancel_argv())],
                "engine_sets": {s.id: s.n for s in sets}}


def make_launcher(engines: str, log_dir, **options) -> launchers.Launcher:
    """The `engines` launcher with options from `options`, then dask.config, then defaults."""
    cls = launchers.get(engines)
    resolved = resolve(cls.options_class, engines, {"log_dir": str(log_dir), **options})
    return cls(resolved)


def check_count(n, what: str = "n") -> int:
    """`n` as a number of engines, or a clear error saying what was expected."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what} must be a whole number of engines, 0 or more; got {n!r} "
                         f"({type(n).__name__}); e.g. Cluster(n=4) or `ipcluster start -n 4`")
    return n


def new_id(taken) -> str:
    """An engine set id not in `taken`: the time it started (as ipyparallel's), made unique."""
    base = time.strftime("%Y%m%d-%H%M%S")
    return next(candidate for candidate in itertools.chain(
        [base], (f"{base}-{i}" for i in itertools.count(1))) if candidate not in taken)


def check_id(engine_set_id, taken) -> str:
    """`engine_set_id` as the id of an engine set that exists, or a clear KeyError."""
    if engine_set_id not in taken:
        raise KeyError(f"no engine set {engine_set_id!r} in this cluster; its engine sets: "
                       f"{sorted(taken) or 'none (start_engines(n) starts one)'}")
    return engine_set_id
