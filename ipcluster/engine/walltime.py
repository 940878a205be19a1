"""Processes layer: an engine in a batch job stops taking work a margin before the job ends.

The job script exports ``IPCLUSTER_JOB_END`` (epoch seconds) and ``IPCLUSTER_WALLTIME_MARGIN``.
At ``end - margin`` the engine says why in its log (the job's output file) and, once its running
task has finished, unregisters: the controller sends it no more work and fails what it had
queued with the engine's reason, instead of the scheduler killing it in the middle of a task.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("ipcluster.engine")


def from_environment(environ=os.environ) -> tuple[float, float] | None:
    """(job end in epoch seconds, margin in seconds), if this engine runs in a timed job."""
    try:
        end = float(environ["IPCLUSTER_JOB_END"])
    except (KeyError, ValueError):
        return None
    return end, float(environ.get("IPCLUSTER_WALLTIME_MARGIN", 60.0))


class Walltime(threading.Thread):
    """Owned by the engine process; a daemon thread, so it never keeps the engine alive."""

    def __init__(self, engine, end: float, margin: float) -> None:
        super().__init__(name="ipcluster-walltime", daemon=True)
        self.engine, self.end, self.margin = engine, end, margin

    def run(self) -> None:
        stop_at = self.end - self.margin
        control = self.engine.control
        if control._stopping.wait(max(0.0, stop_at - time.time())):
            return  # the engine stopped first
        ends = time.strftime("%H:%M:%S", time.localtime(self.end))
        log.warning("the job's walltime ends at %s: engine %s takes no new work from now on "
                    "(walltime_margin %.0f s) and stops once its running task finishes",
                    ends, control.engine_id, self.margin)
        while self.engine.running.task is not None and time.time() < self.end:
            time.sleep(0.1)  # poll: the main thread offers no event for "task finished"
        control.stop_reason = f"its job's walltime ends at {ends} (walltime_margin {self.margin:.0f} s)"
        control.stop()
