"""The controller's memory after a surge: 50 clients submit as fast as they can until the
controller has received `--tasks` requests, then are killed mid-submit; once their tasks are
done and purged, the controller's RSS should come back within 50 MiB of where it started.

    python -m benchmarks.flood_memory                  # 32,000 tasks: about a minute here
    python -m benchmarks.flood_memory --rounds 3       # three surges in one controller
    python -m benchmarks.flood_memory --peer 10        # one key holder floods for 10 s instead

Opt-in: not part of ``python -m benchmarks``. Prints one JSON line: RSS at start, at the
peak and after each round (MiB), and where the memory left after the last round lies in the
controller's address space (the glibc heap, other anonymous memory). With ``--peer``, one
process holding the key sends `--size`-byte messages (unsigned: admitted at connect, dropped
at the signature check) as fast as it can while a client keeps the controller busy with
tasks; the RSS peak says what libzmq buffers for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil

import ipcluster
from ipcluster import connection

MiB = 1 << 20

CLIENTS = """
import sys, threading, ipcluster
def submit(rc):
    view = rc.load_balanced_view()
    while True:
        view.apply_async(sum, list(range(2000)))
clients = [ipcluster.Client(sys.argv[1], timeout=120) for _ in range(50)]
for rc in clients:
    threading.Thread(target=submit, args=(rc,), daemon=True).start()
print("submitting", flush=True)
threading.Event().wait()
"""


class Peak:
    """The highest RSS of `process`, sampled every `every` seconds from now until `stop`."""

    def __init__(self, process: psutil.Process, every: float) -> None:
        self.process, self.every = process, every
        self.highest = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.highest = max(self.highest, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.highest


def lowest_rss(process: psutil.Process, seconds: float) -> tuple[int, float]:
    """The lowest RSS of `process` seen over `seconds`, and how many seconds in it was seen."""
    t0 = time.monotonic()
    lowest, when = process.memory_info().rss, 0.0
    while time.monotonic() < t0 + seconds:
        rss = process.memory_info().rss
        if rss < lowest:
            lowest, when = rss, time.monotonic() - t0
        time.sleep(0.25)
    return lowest, round(when, 1)


def wait_for(condition, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def received(rc) -> int:
    return rc._session.request("query", {})["received"].get("apply", 0)


def idle(rc) -> bool:
    status = rc.queue_status()
    return status.pop("unassigned") == 0 and all(s["queue"] == 0 for s in status.values())


PEER = """
import sys, time
from ipcluster import connection, transport
info = connection.read(sys.argv[1])
seconds, size = float(sys.argv[2]), int(sys.argv[3])
ctx = transport.Context(info.key_bytes)
sock = ctx.dealer(info.client_url)
junk, sent = [b"IPC1", b"x" * size], 0
time.sleep(0.5)  # admitted
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for _ in range(100):
        transport.send(sock, junk)
    sent += 100
print(sent, flush=True)
ctx.close(linger_ms=0)
"""


def peer_flood(rc, connection_file, controller, seconds: float, size: int) -> dict:
    """One key holder floods while a client keeps the controller busy with tasks."""
    peak = Peak(controller, every=0.05)
    busy = rc.load_balanced_view().map_async(abs, range(200_000), chunksize=1)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", PEER, str(connection_file), str(seconds),
                          str(size)], capture_output=True, text=True, timeout=seconds + 120)
    sent = int(out.stdout.strip() or 0)
    read_by = time.monotonic() - t0
    busy.abort()
    assert wait_for(lambda: idle(rc), timeout=300, every=0.5), "the tasks did not finish"
    highest = peak.stop()
    rc.purge_results("all")
    lowest, when = lowest_rss(controller, 60)  # it may still be reading what libzmq queued
    return {"peer_sent": sent, "size": size, "seconds": seconds, "peak": highest,
            "after": lowest, "after_s": when, "sent_per_s": round(sent / read_by)}


def where(pid: int) -> dict:
    """Resident MiB of the process by kind of mapping (from /proc/<pid>/smaps)."""
    kinds: dict[str, int] = {}
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
                name = fields[5] if len(fields) > 5 else ""
                kind = ("heap" if name == "[heap]" else "anonymous" if not name
                        else "stack" if name.startswith("[stack") else "files")
            elif fields[0] == "Rss:":
                kinds[kind] = kinds.get(kind, 0) + int(fields[1]) * 1024
    return {k: round(v / MiB, 1) for k, v in kinds.items()}


def surge(rc, connection_file, controller, tasks: int) -> dict:
    before = received(rc)
    peak = Peak(controller, every=0.1)
    with tempfile.NamedTemporaryFile("w", suffix=".py") as script:
        script.write(CLIENTS)
        script.flush()
        proc = subprocess.Popen([sys.executable, script.name, str(connection_file)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "submitting"
            t0 = time.monotonic()
            wait_for(lambda: received(rc) - before >= tasks, timeout=300, every=0.05)
            seconds = time.monotonic() - t0
        finally:
            proc.kill()  # all 50, mid-submit
            proc.wait()
    got = received(rc) - before
    assert wait_for(lambda: idle(rc), timeout=300, every=0.5), "the tasks did not finish"
    rc.purge_results("all")
    highest = peak.stop()
    # what is given back comes within seconds (every 5 s: a copy of what the surge left
    # scattered, malloc_trim; dead clients' backlogs are dropped after 2 s): the lowest RSS
    # seen over 30 s, the time the tests wait, and when it was seen
    lowest, when = lowest_rss(controller, 30)
    return {"received": got, "submit_s": round(seconds, 1), "peak": highest, "after": lowest,
            "after_s": when}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flood_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=32_000, help="requests per surge")
    parser.add_argument("--rounds", type=int, default=1, help="surges in one controller")
    parser.add_argument("--peer", type=float, default=0, help="seconds one key holder floods")
    parser.add_argument("--size", type=int, default=100, help="bytes of each flooding message")
    args = parser.parse_args(argv)
    os.environ["DASK_IPCLUSTER__CONTROLLER__FORGET_CLIENTS_AFTER"] = "2"
    with ipcluster.Cluster(n=2) as rc0:
        rc = ipcluster.Client(rc0.connection_file, timeout=120)
        controller = psutil.Process(connection.read(rc0.connection_file).controller_pid)
        rc.load_balanced_view().map_sync(abs, range(100))  # warm
        start = controller.memory_info().rss
        if args.peer:
            rounds = [peer_flood(rc, rc0.connection_file, controller, args.peer, args.size)]
        else:
            rounds = [surge(rc, rc0.connection_file, controller, args.tasks)
                      for _ in range(args.rounds)]
        out = {"tasks": args.tasks, "start_MiB": round(start / MiB),
               "rounds": [{**r, "peak": round(r["peak"] / MiB), "after": round(r["after"] / MiB),
                           "above_start": round((r["after"] - start) / MiB)} for r in rounds],
               "left_in": where(controller.pid), "load": os.getloadavg()[0],
               "env": {k: v for k, v in os.environ.items()
                       if k.startswith(("MALLOC_", "GLIBC_TUNABLES", "PYTHONMALLOC"))}}
        hold = os.environ.get("FLOOD_MEMORY_HOLD")  # a file: the controller stays up (to be
        if hold:  # looked at) until it is removed
            open(hold, "w").close()
            print(json.dumps({"pid": controller.pid}), flush=True)
            wait_for(lambda: not os.path.exists(hold), timeout=3600, every=0.5)
        rc.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
