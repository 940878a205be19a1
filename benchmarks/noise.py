"""How busy the rest of the machine was while a peer ran: the measure of a run's noise.

A thread samples every process's CPU time each second; what processes outside the suite's own
tree used is the noise (another user's tests, say). The load average would count the suite's
own engines and cannot tell the two apart.
"""

from __future__ import annotations

import os
import threading
import time

import psutil


class NoiseMeter(threading.Thread):
    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(name="noise-meter", daemon=True)
        self.interval = interval
        self.others_cpu = 0.0  # CPU seconds used by processes outside our tree
        self._last: dict[int, float] = {}
        self._done = threading.Event()
        self._t0 = time.monotonic()
        self.seconds = 0.0

    def run(self) -> None:
        self._last = self._sample()
        while not self._done.wait(self.interval):
            now = self._sample()
            self.others_cpu += sum(max(0.0, t - self._last.get(pid, t)) for pid, t in now.items())
            self._last = now

    def stop(self) -> dict:
        self._done.set()
        self.join()
        self.seconds = time.monotonic() - self._t0
        share = self.others_cpu / (self.seconds * (os.cpu_count() or 1)) if self.seconds else 0
        return {"other_processes_cpu_s": round(self.others_cpu, 1),
                "other_processes_share_of_machine": round(share, 3)}

    @staticmethod
    def _sample() -> dict[int, float]:
        me = psutil.Process()
        ours = {me.pid, *(p.pid for p in me.children(recursive=True))}
        times = {}
        for p in psutil.process_iter(["cpu_times"]):
            if p.pid in ours or p.info["cpu_times"] is None:
                continue
            ct = p.info["cpu_times"]
            times[p.pid] = ct.user + ct.system
        return times
