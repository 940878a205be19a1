"""The link case: a 100 MB push from a client to an engine on another (fake) host, over links
of 1 Gbit/s, as a multiple of the link's transfer time (tests/test_link.py makes the hosts:
network namespaces with their own host names and /dev/shm, tc tbf on every link). Needs root;
without it the case is reported as skipped.

What is timed is what the test times: `rc[0].push({"a": array}, block=True)` of 100 MB, after a
1 MiB warm-up push; the first 100 MB push (during which the test samples memory) is left out
and the figure is the median of the next five. The broadcast case does the same with
`rc[:].push` to engines on two hosts. The link is shaped, but the sender, the
receiver and Curve encryption still need CPU: on a loaded machine (the 3.02 x of an earlier run
came at a load average of 20-29 on 2 cores, right after a peer stopped at its timeout had left
its workers running) the figure measures the load, so the load average and the CPU other
processes used are recorded with it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.noise import NoiseMeter

PUSHES = 6  # the first is left out


def measure(engines: int = 1) -> dict:
    """{"value": seconds / link time, "detail": {...}} or {"skipped": why}. With two `engines`
    (on two hosts), the push is a broadcast: the client sends it once, the first engine passes
    it on to the second."""
    from tests import test_link as link

    if not link.can_make_hosts():
        return {"skipped": "needs root, iproute2 (namespaces, tc) and unshare"}
    meter, load = NoiseMeter(), os.getloadavg()[0]
    meter.start()
    try:
        with link.fake_hosts() as hosts, tempfile.TemporaryDirectory(prefix="ipcluster-link-") as tmp:
            result = link.run_cluster(hosts, Path(tmp), pushes=PUSHES,
                                      engines=("eng", "eng2")[:engines],
                                      script=link.CLIENT if engines == 1 else link.BROADCAST)
    finally:
        noise = meter.stop()
    link_time = link.SIZE * 8 / link.RATE
    seconds = statistics.median(result["times"][1:])
    return {"value": round(seconds / link_time, 3),
            "detail": {"seconds": round(seconds, 3), "best_seconds": round(min(result["times"][1:]), 3),
                       "times": [round(t, 3) for t in result["times"]], "link_seconds": link_time,
                       "controller_received_bytes": result["controller_received"],
                       "client_sent_bytes": result["bytes"]["cli"]["tx"],
                       "links": result["links"], "load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
                       "noise": noise}}
