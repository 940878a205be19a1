"""Leaf layer: where cluster state lives on disk, and how option dataclasses are resolved.

An options dataclass is the schema (one comment per field). Values resolve from the call's
arguments, then `dask.config` under ``ipcluster.<section>`` (YAML in ``~/.config/dask/`` or
``DASK_IPCLUSTER__<SECTION>__<KEY>``), then the dataclass defaults. dask is imported only
when options are resolved, so engines never pay for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from ipcluster.launchers.options import check_keys

T = TypeVar("T")

DEFAULT_CLUSTER_ID = "default"


def ipcluster_dir() -> Path:
    """The directory holding one sub-directory per cluster (``$IPCLUSTER_DIR``, else ``~/.ipcluster``)."""
    return Path(os.environ.get("IPCLUSTER_DIR") or Path.home() / ".ipcluster")


def cluster_dir(cluster_id: str, root: str | Path | None = None) -> Path:
    """Where cluster `cluster_id` keeps its state: in `root`, else in `ipcluster_dir()`."""
    return (Path(root) if root is not None else ipcluster_dir()) / cluster_id


def locate(cluster_id: str | None, profile: str | None = None,
           profile_dir: str | None = None) -> tuple[str, str]:
    """(profile_dir, cluster_id) of a cluster named the ipyparallel way: `profile_dir` holds
    cluster directories (default `ipcluster_dir()`); `profile` names the cluster whose id it
    is when `cluster_id` is None or ``""``; ``""`` alone is `DEFAULT_CLUSTER_ID`, the cluster
    ``ipcluster start`` starts; None alone, a new id from the time and 6 random hex digits."""
    import secrets
    import time

    root = os.path.abspath(profile_dir) if profile_dir else str(ipcluster_dir())
    if cluster_id is None and not profile:
        return root, f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    return root, cluster_id or profile or DEFAULT_CLUSTER_ID


def resolve(options_cls: type[T], section: str, overrides: dict[str, Any] | None = None) -> T:
    """Build `options_cls` from dask.config ``ipcluster.<section>`` and explicit `overrides`.

    Explicit overrides win over configuration, which wins over the dataclass defaults. An
    unknown key, in either place, is an error that lists the valid keys with their defaults.
    """
    import dask.config

    configured = dask.config.get(f"ipcluster.{section}", default={}) or {}
    if not isinstance(configured, dict):
        raise TypeError(f"dask config 'ipcluster.{section}' must be a mapping, got {configured!r}")
    configured = {k.replace("-", "_"): v for k, v in configured.items()}
    check_keys(options_cls, configured, f"configured ipcluster.{section}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_keys(options_cls, overrides, section)
    return options_cls(**{**configured, **overrides})
