"""Several hosts, made of network namespaces: a controller in one reaches SSH engines in two
others, over a bridge in a fourth; cutting one host's link is noticed by the controller.

Safety: the only addresses used are 10.200.0.x inside namespaces this test makes. The route
`unreachable 10.200.0.0/16` goes into the root namespace first and leaves it last, so nothing
for those addresses can ever leave the machine; the test itself talks to them only from inside
the namespaces (the driver runs in `ctl`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launchers.conftest import SSH_ARGS, require

PREFIX = "ipct"
HOSTS = {"ctl": "10.200.0.1", "h1": "10.200.0.11", "h2": "10.200.0.12"}
SSHD_CONF = Path("/run/ipcluster-sshd/sshd_config")  # written by .ci/services/sshd.sh


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def ns(name: str) -> str:
    return f"{PREFIX}-{name}"


def teardown_namespaces(pidfiles) -> None:
    for name in [*HOSTS, "sw"]:
        out = ip("netns", "pids", ns(name), check=False).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        ip("netns", "del", ns(name), check=False)
    for path in pidfiles:
        Path(path).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def hosts():
    require(os.geteuid() == 0 and shutil.which("ip") is not None, "root and iproute2 (network namespaces)")
    require(SSHD_CONF.exists() and Path("/usr/sbin/sshd").exists(), "sshd (.ci/services/sshd.sh start)")
    ip("route", "replace", "unreachable", "10.200.0.0/16")  # FIRST: nothing for 10.200/16 leaves
    pidfiles = []
    try:
        teardown_namespaces([])  # what a killed earlier run may have left
        ip("netns", "add", ns("sw"))
        ip("-n", ns("sw"), "link", "add", "br0", "type", "bridge")
        ip("-n", ns("sw"), "link", "set", "br0", "up")
        for name, address in HOSTS.items():
            ip("netns", "add", ns(name))
            ip("link", "add", "eth0", "netns", ns(name), "type", "veth", "peer", "name",
               f"{name}-br", "netns", ns("sw"))
            ip("-n", ns("sw"), "link", "set", f"{name}-br", "master", "br0")
            ip("-n", ns("sw"), "link", "set", f"{name}-br", "up")
            ip("-n", ns(name), "link", "set", "lo", "up")
            ip("-n", ns(name), "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns(name), "link", "set", "eth0", "up")
        for name in ("h1", "h2"):
            pidfile = f"/run/ipcluster-sshd/{PREFIX}-{name}.pid"
            pidfiles.append(pidfile)
            subprocess.run(["ip", "netns", "exec", ns(name), "/usr/sbin/sshd", "-f", str(SSHD_CONF),
                            "-o", "Port=22", "-o", f"ListenAddress={HOSTS[name]}",
                            "-o", f"PidFile={pidfile}"], check=True)
        yield
    finally:
        teardown_namespaces(pidfiles)
        ip("route", "del", "unreachable", "10.200.0.0/16", check=False)  # LAST


DRIVER = """
import json, os, subprocess, sys, time
import ipcluster

def link(host, state):
    subprocess.run(["ip", "-n", "{sw}", "link", "set", host + "-br", state], check=True)

result = {{}}
cluster = ipcluster.Cluster(n=2, engines="ssh", hosts={{"{h1}": 1, "{h2}": 1}}, port=22,
                            ssh_args={ssh_args!r}, start_timeout=60)
with cluster as rc:
    result["controller"] = cluster.connection_file.read_text()
    result["servers"] = sorted(rc[:].apply_sync(lambda: __import__("os").environ["SSH_CONNECTION"].split()[2]))
    link("h1", "down")  # cut h1 off
    t0 = time.monotonic()
    while len(rc.ids) > 1 and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    result["after_cut"] = rc.ids
    result["noticed_after"] = time.monotonic() - t0
    result["h2_still_works"] = rc[rc.ids].apply_sync(lambda: 1) if rc.ids else None
    link("h1", "up")
    for name in ("ctl", "h1"):
        subprocess.run(["ip", "-n", "{prefix}-" + name, "neigh", "flush", "all"])
print("RESULT " + json.dumps(result))
"""


def test_engines_on_other_hosts_reach_the_controller_and_a_cut_link_is_noticed(hosts, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(sw=ns("sw"), h1=HOSTS["h1"], h2=HOSTS["h2"], ssh_args=SSH_ARGS,
                                    prefix=PREFIX))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           # a cut link is a silent engine: declared dead after this grace (30 s by default)
           "DASK_IPCLUSTER__CONTROLLER__ENGINE_TIMEOUT": "5"}
    proc = subprocess.run(["ip", "netns", "exec", ns("ctl"), sys.executable, str(driver)],
                          capture_output=True, text=True, timeout=100, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    info = json.loads(result["controller"])
    # the controller chose the address that routes to the engines' hosts
    assert info["engine_url"].startswith(f"tcp://{HOSTS['ctl']}:")
    assert result["servers"] == [HOSTS["h1"], HOSTS["h2"]]  # one engine on each host
    assert len(result["after_cut"]) == 1, result
    assert result["h2_still_works"] == [1]
    print(f"cut link noticed after {result['noticed_after']:.1f} s")
