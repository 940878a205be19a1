"""Across hosts, one hop: a client, a controller and an engine on three fake hosts (network
namespaces, each with its own host name, mount namespace and private /dev/shm), every link
limited to 1 Gbit/s in both directions with tc tbf. A 100 MB push goes client -> engine
directly: nothing of it crosses the controller's link, and it takes about the link's transfer
time (printed; through the controller it crosses two links one after the other), and the
client's and the engine's private memory (USS, sampled at 100 Hz) rise by at most 1.25 x its
size. With the engine's data port cut off, it goes through the controller instead. A push to
engines on two hosts leaves the client's link once: the first engine forwards it to the next.

Safety (tests/netns.py): only 10.200.1.x addresses inside namespaces this test makes, and
nothing here talks to those addresses from the root namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.launchers.conftest import require
from tests import netns

PREFIX = "ipcd"
HOSTS = {"ctl": "10.200.1.1", "cli": "10.200.1.2", "eng": "10.200.1.3", "eng2": "10.200.1.4"}
RATE = 1e9  # bits per second on every link
SIZE = 100_000_000  # bytes pushed
# the engine's data port, cut off in the fallback test: exactly the ports a u32 match of 40992
# with mask 0xfff0 drops (41000-41009 let 41008 and 41009 through: the link opened 2 runs in 10)
DATA_PORTS = "40992-41007"
TBF = ("tbf", "rate", "1gbit", "burst", "1mb", "latency", "100ms")


@contextlib.contextmanager
def fake_hosts():
    """The hosts and their switch, removed on exit (also by benchmarks/link.py)."""
    with netns.fake_hosts(PREFIX, HOSTS, qdisc=TBF) as made:
        yield made


@pytest.fixture(scope="module")
def hosts():
    require(can_make_hosts(), "root, iproute2 (namespaces, tc) and unshare")
    with fake_hosts() as made:
        yield made


def can_make_hosts() -> bool:
    return netns.can_make_hosts(shaped=True)


def on_host(hosts, name: str, argv: list[str], env: dict, **kwargs) -> subprocess.Popen:
    """Run `argv` on fake host `name`: its network, its host name, its own /dev/shm."""
    shell = (f"hostname {name} && mount -t tmpfs -o size=64m tmpfs /dev/shm && "
             'exec "$0" "$@"')
    return hosts.popen(name, ["unshare", "--uts", "--mount", "--propagation", "private", "sh",
                              "-c", shell, *argv], env, **kwargs)


CLIENT = """
import json, os, sys, threading, time, logging
import numpy as np, psutil, ipcluster
logging.basicConfig(level=logging.WARNING)
rc = ipcluster.Client(sys.argv[1])
rc.wait_for_engines(1, timeout=60)
array = np.ones({size}, np.uint8)
rc[0].push({{"warm": array[:1 << 20]}}, block=True)
processes = [psutil.Process(), psutil.Process(rc[0].apply_sync(os.getpid))]  # one pid namespace
base = [p.memory_full_info().uss for p in processes]
peak, stop = list(base), threading.Event()

def sample():  # private memory (USS) of the client and the engine, at 100 Hz
    while not stop.is_set():
        for i, p in enumerate(processes):
            peak[i] = max(peak[i], p.memory_full_info().uss)
        stop.wait(0.01)

sampler = threading.Thread(target=sample)
sampler.start()
times = []
for i in range({pushes}):
    t = time.perf_counter()
    rc[0].push({{f"a{{i}}": array}}, block=True)
    times.append(time.perf_counter() - t)
    if i == 0:
        stop.set()
        sampler.join()
total = rc[0].apply_sync(lambda a: int(a.sum()), ipcluster.Reference("a1"))
print("RESULT " + json.dumps({{"seconds": min(times), "times": times, "sum": total,
                              "rise": [p - b for p, b in zip(peak, base)],
                              "links": rc._session.links.state,
                              "hosts": rc[:].apply_sync(__import__("socket").gethostname)}}))
rc.close()
"""


BROADCAST = """
import json, sys, time
import numpy as np, ipcluster
rc = ipcluster.Client(sys.argv[1])
rc.wait_for_engines({engines}, timeout=60)
array = np.ones({size}, np.uint8)
rc[:].push({{"warm": array[:1 << 20]}}, block=True)
times = []
for i in range({pushes}):
    t = time.perf_counter()
    rc[:].push({{"a": array}}, block=True)
    times.append(time.perf_counter() - t)
sums = rc[:].apply_sync(lambda a: int(a.sum()), ipcluster.Reference("a"))
print("RESULT " + json.dumps({{"seconds": min(times), "times": times, "sums": sums,
                              "links": rc._session.links.state,
                              "hosts": rc[:].apply_sync(__import__("socket").gethostname)}}))
rc.close()
"""


def run_cluster(hosts, tmp_path: Path, engine_env: dict | None = None, cut: str | None = None,
                engines: tuple[str, ...] = ("eng",), script: str = CLIENT, pushes: int = 2) -> dict:
    env = {**os.environ, "IPCLUSTER_DIR": str(tmp_path / "state"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    conn = tmp_path / "state" / "link" / "connection.json"
    procs = []
    try:
        procs.append(on_host(hosts, "ctl", [sys.executable, "-m", "ipcluster", "controller",
                                     "--cluster-id", "link", "--ip", HOSTS["ctl"]], env))
        wait_until(conn.exists, timeout=30)
        if cut:  # packets to the engine's data ports wait a minute each, or are dropped: a firewall
            sw = ("-n", hosts.switch)
            netns.tc(*sw, "qdisc", "replace", "dev", "eng-br", "root", "handle", "1:", "htb", "default", "20")
            netns.tc(*sw, "class", "add", "dev", "eng-br", "parent", "1:", "classid", "1:10", "htb",
               "rate", "8bit", "ceil", "8bit", "burst", "1", "cburst", "1")
            # limit 0: every packet of the class is dropped (the first ones are not let through
            # by the class's initial burst, as a one-packet queue did)
            netns.tc(*sw, "qdisc", "add", "dev", "eng-br", "parent", "1:10", "pfifo", "limit", "0")
            netns.tc(*sw, "class", "add", "dev", "eng-br", "parent", "1:", "classid", "1:20", "htb",
               "rate", "1gbit", "ceil", "1gbit", "burst", "1mb")
            netns.tc(*sw, "filter", "add", "dev", "eng-br", "parent", "1:", "protocol", "ip", "u32",
               "match", "ip", "dport", cut, "0xfff0", "flowid", "1:10")
        for name in engines:
            procs.append(on_host(hosts, name, [sys.executable, "-m", "ipcluster", "engine",
                                               "--connection-file", str(conn)],
                                 {**env, **(engine_env or {})}))
        path = tmp_path / "client.py"
        path.write_text(script.format(size=SIZE, engines=len(engines), pushes=pushes))
        before = {name: hosts.counters(name) for name in HOSTS}
        client = on_host(hosts, "cli", [sys.executable, str(path), str(conn)], env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = client.communicate(timeout=100)
        assert client.returncode == 0, out + err
        moved = {name: {way: n - before[name][way] for way, n in hosts.counters(name).items()}
                 for name in HOSTS}
        return {**json.loads(out.split("RESULT ", 1)[1]), "log": err, "bytes": moved,
                "controller_received": moved["ctl"]["rx"]}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if cut:
            netns.tc("-n", hosts.switch, "qdisc", "replace", "dev", "eng-br", "root", *TBF)


def test_a_push_to_an_engine_on_another_host_crosses_the_link_once(hosts, tmp_path):
    result = run_cluster(hosts, tmp_path)
    link_time = SIZE * 8 / RATE
    assert result["hosts"] == ["eng"] and result["sum"] == SIZE
    assert list(result["links"].values()) == ["ok"]  # the data port answered: the direct path
    # the three pushes (1 MiB, then 2 x 100 MB) never crossed the controller's link
    assert result["controller_received"] < 4 << 20, result["controller_received"]
    client, engine = result["rise"]  # private memory (USS) during the first push
    assert client <= 1.25 * SIZE and engine <= 1.25 * SIZE, result["rise"]
    assert engine >= 0.75 * SIZE  # the sampler saw the engine's copy arrive
    print(f"100 MB push over 1 Gbit/s: {result['seconds']:.3f} s = "
          f"{result['seconds'] / link_time:.2f} x the link's transfer time")


def test_a_data_port_that_does_not_answer_leaves_the_controller_path(hosts, tmp_path):
    result = run_cluster(hosts, tmp_path, {"IPCLUSTER_DATA_PORTS": DATA_PORTS}, cut="40992")
    assert result["sum"] == SIZE  # the push arrived, through the controller
    assert list(result["links"].values()) == ["failed"]
    assert result["log"].count("large buffers go through the controller instead") == 1
    assert result["controller_received"] > 2 * SIZE  # both pushes crossed the controller's link
    print(f"100 MB push through the controller: {result['seconds']:.3f} s = "
          f"{result['seconds'] / (SIZE * 8 / RATE):.2f} x one link's transfer time")


def test_a_push_to_engines_on_two_hosts_leaves_the_client_once_and_is_forwarded(hosts, tmp_path):
    """Broadcast across hosts: the client sends the buffer to the first engine's data port,
    which passes each chunk on to the next engine's as it arrives (a pipeline): the client's
    link carries the data once, not once per engine."""
    result = run_cluster(hosts, tmp_path, engines=("eng", "eng2"), script=BROADCAST, pushes=1)
    assert sorted(result["hosts"]) == ["eng", "eng2"] and result["sums"] == [SIZE, SIZE]
    assert list(result["links"].values()) == ["ok", "ok"]
    moved = result["bytes"]
    assert SIZE < moved["cli"]["tx"] < 1.3 * SIZE, moved  # once (two engines: it was 2 x)
    assert moved["ctl"]["rx"] < 4 << 20, moved  # nothing of it through the controller
    first, second = sorted(("eng", "eng2"), key=lambda h: moved[h]["tx"], reverse=True)
    assert moved[first]["tx"] > SIZE and moved[second]["rx"] > SIZE, moved  # forwarded
    print(f"100 MB to engines on two hosts over 1 Gbit/s: {result['seconds']:.3f} s = "
          f"{result['seconds'] / (SIZE * 8 / RATE):.2f} x one link's transfer time")
