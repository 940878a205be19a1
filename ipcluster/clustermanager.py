"""Client API layer: `ClusterManager`, ipyparallel's registry of `Cluster` objects by key, for
code that lists, starts and stops several clusters (a notebook extension, a dashboard).

A key is the cluster id for a cluster in the default directory (``$IPCLUSTER_DIR``, else
``~/.ipcluster``), ``<profile_dir>:<cluster_id>`` for one elsewhere. `load_clusters` adds the
running clusters recorded on disk (as `Cluster.from_file` loads them) and drops those of them
that stopped since, and any whose controller died; a cluster made with `new_cluster` stays
until `remove_cluster`, started or not (as in ipyparallel).
"""

from __future__ import annotations

from pathlib import Path

from ipcluster import state
from ipcluster.cluster import Cluster
from ipcluster.config import ipcluster_dir


def cluster_key(cluster: Cluster) -> str:
    """The key of `cluster` in a `ClusterManager`."""
    if Path(cluster.profile_dir) == ipcluster_dir():
        return cluster.cluster_id
    return f"{cluster.profile_dir}:{cluster.cluster_id}"


class ClusterManager:
    """Clusters by key (`clusters`): made here (`new_cluster`) or found on disk (`load_clusters`)."""

    def __init__(self) -> None:
        self.clusters: dict[str, Cluster] = {}
        self._loaded: set[str] = set()  # keys of clusters found running on disk

    def __repr__(self) -> str:
        return f"<ClusterManager clusters={list(self.clusters)}>"

    def load_clusters(self, *, profile_dirs: list[str] | None = None,
                      profile_dir: str | None = None, profiles: list[str] | None = None,
                      profile: str | None = None) -> dict[str, Cluster]:
        """Add the clusters running in `profile_dirs` (or `profile_dir`; default: the default
        directory), only those named `profiles` (or `profile`) if given; drop those that
        stopped. Returns `clusters`."""
        for key, cluster in list(self.clusters.items()):
            was_running = key in self._loaded or cluster.controller is not None
            if was_running and state.status(cluster.cluster_id, Path(cluster.profile_dir)) != "running":
                self.clusters.pop(key)
                self._loaded.discard(key)
        dirs = profile_dirs or [profile_dir or ipcluster_dir()]
        names = profiles or ([profile] if profile else None)
        for root in map(Path, dirs):
            for cluster_id in state.cluster_ids(root):
                if names is not None and cluster_id not in names:
                    continue
                if state.status(cluster_id, root) != "running":
                    continue
                cluster = Cluster.from_file(state.path(cluster_id, root))
                key = cluster_key(cluster)
                if key not in self.clusters:
                    self.clusters[key] = cluster
                    self._loaded.add(key)
        return self.clusters

    def list_clusters(self) -> list[str]:
        """The keys of `clusters`."""
        return list(self.clusters)

    def new_cluster(self, **kwargs) -> tuple[str, Cluster]:
        """A new `Cluster(**kwargs)` (not started), and its key; a KeyError if the key is taken."""
        cluster = Cluster(**kwargs)
        key = cluster_key(cluster)
        if key in self.clusters:
            raise KeyError(f"cluster {key!r} exists already in this manager; choose another "
                           f"cluster_id, or get_cluster({key!r})")
        self.clusters[key] = cluster
        return key, cluster

    def get_cluster(self, key: str) -> Cluster:
        """The cluster under `key`; a KeyError listing the keys if there is none."""
        try:
            return self.clusters[key]
        except KeyError:
            raise KeyError(f"no cluster {key!r} in this manager; its clusters: "
                           f"{self.list_clusters() or 'none (load_clusters() finds the running ones)'}"
                           ) from None

    def remove_cluster(self, key: str) -> None:
        """Forget the cluster under `key` (it keeps running: `stop_cluster` stops it)."""
        self.get_cluster(key)
        del self.clusters[key]
        self._loaded.discard(key)
