"""The link case: a 100 MB push from a client to an engine on another (fake) host, over links
of 1 Gbit/s, as a multiple of the link's transfer time (tests/test_link.py makes the hosts:
network namespaces with their own host names and /dev/shm, tc tbf on every link). Needs root;
without it the case is reported as skipped."""

from __future__ import annotations

import tempfile
from pathlib import Path


def measure() -> dict:
    """{"value": seconds / link time, "detail": {...}} or {"skipped": why}."""
    from tests import test_link as link

    if not link.can_make_hosts():
        return {"skipped": "needs root, iproute2 (namespaces, tc) and unshare"}
    with link.fake_hosts() as hosts, tempfile.TemporaryDirectory(prefix="ipcluster-link-") as tmp:
        result = link.run_cluster(hosts, Path(tmp))
    link_time = link.SIZE * 8 / link.RATE
    return {"value": round(result["seconds"] / link_time, 3),
            "detail": {"seconds": round(result["seconds"], 3), "link_seconds": link_time,
                       "controller_received_bytes": result["controller_received"],
                       "links": result["links"]}}
