"""Surfaces layer: the ``ipcluster`` entry of jupyter-server-proxy (entry-point group
``jupyter_serverproxy_servers``): JupyterLab's launcher gets an ipcluster icon that opens the
cluster manager page, and through it each cluster's dashboard, all through the Jupyter server
and behind its authentication (no extra port to tunnel from a login node)."""

from __future__ import annotations

import sys
from pathlib import Path


def proxy_entry() -> dict:
    return {
        "command": [sys.executable, "-m", "ipcluster.dashboard.manager", "{unix_socket}"],
        "unix_socket": True,  # a socket in a private directory: reachable only through Jupyter
        "timeout": 120,  # seconds for the manager to answer at first: a login node may be busy
        "launcher_entry": {"title": "ipcluster", "category": "Other",
                           "icon_path": str(Path(__file__).with_name("icon.svg"))},
    }
