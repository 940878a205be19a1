"""The harness's stand-in for ``ipyparallel.tests``: the cluster the upstream test classes run
on, and `add_engines`, with ipcluster's `Cluster` in place of ipyparallel's launcher classes.

Upstream starts a controller and one engine per test module under the profile ``iptest``, and
each test class adds engines up to the count it needs; so does this, as the cluster whose id is
``iptest`` (``Client(profile="iptest")`` connects to it).
"""

from __future__ import annotations

import cloudpickle

import ipcluster

PROFILE = "iptest"
launchers: list = []  # the engine processes started for the tests (each has poll())
_cluster: ipcluster.Cluster | None = None


def setup() -> ipcluster.Cluster:
    """A controller and one engine, as upstream's module setup."""
    global _cluster
    _cluster = ipcluster.Cluster(n=1, cluster_id=PROFILE)
    try:
        _cluster.start_controller_sync()
        add_engines(1)
    except BaseException:
        teardown()
        raise
    return _cluster


def teardown() -> None:
    global _cluster
    cluster, _cluster = _cluster, None
    launchers.clear()
    if cluster is not None:
        cluster.stop_cluster_sync()


def add_engines(n: int = 1, profile: str = PROFILE, total: bool = False) -> list:
    """Start `n` more engines (with `total`, only those missing for `n` in all) and wait for
    them to register; the new engine processes."""
    if _cluster is None or profile != PROFILE:
        raise RuntimeError(f"no test cluster for profile {profile!r}; the `cluster` fixture "
                           "starts it")
    with ipcluster.Client(_cluster.connection_file) as rc:
        base = len(rc)
        n = max(n - base, 0) if total else n
        if n == 0:
            return []
        engine_set_id = _cluster.start_engines_sync(n)
        new = list(_cluster.engines[engine_set_id].launcher.processes)
        launchers.extend(new)
        rc.wait_for_engines(base + n, timeout=30)
    return new


def can(obj) -> bytes:
    """``ipyparallel.serialize.can``: here, what ipcluster sends a function as."""
    return cloudpickle.dumps(obj)


def uncan(data: bytes, user_ns: dict | None = None):
    """``ipyparallel.serialize.uncan``: the object back, as an engine receives it."""
    return cloudpickle.loads(data)
