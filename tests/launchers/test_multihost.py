"""Several hosts, made of network namespaces: a controller in one reaches SSH engines in two
others, over a bridge in a fourth; cutting one host's link is noticed by the controller.

Safety (tests/netns.py): the only addresses used are 10.200.0.x inside namespaces this test
makes, and the test talks to them only from inside the namespaces (the driver runs in `ctl`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launchers.conftest import SSH_ARGS, require
from tests.netns import can_make_hosts, fake_hosts

PREFIX = "ipct"
HOSTS = {"ctl": "10.200.0.1", "h1": "10.200.0.11", "h2": "10.200.0.12"}
SSHD_CONF = Path("/run/ipcluster-sshd/sshd_config")  # written by .ci/services/sshd.sh


@pytest.fixture(scope="module")
def hosts():
    require(can_make_hosts(), "root and iproute2 (network namespaces)")
    require(SSHD_CONF.exists() and Path("/usr/sbin/sshd").exists(), "sshd (.ci/services/sshd.sh start)")
    with fake_hosts(PREFIX, HOSTS) as made:
        pidfiles = [Path(f"/run/ipcluster-sshd/{PREFIX}-{name}.pid") for name in ("h1", "h2")]
        try:
            for name, pidfile in zip(("h1", "h2"), pidfiles):
                subprocess.run(["ip", "netns", "exec", made.ns(name), "/usr/sbin/sshd", "-f",
                                str(SSHD_CONF), "-o", "Port=22", "-o", f"ListenAddress={HOSTS[name]}",
                                "-o", f"PidFile={pidfile}"], check=True)
            yield made
        finally:
            made.remove()  # sshd too, before its pidfile goes
            for pidfile in pidfiles:
                pidfile.unlink(missing_ok=True)


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
    driver.write_text(DRIVER.format(sw=hosts.switch, h1=HOSTS["h1"], h2=HOSTS["h2"], ssh_args=SSH_ARGS,
                                    prefix=PREFIX))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           # a cut link is a silent engine: declared dead after this grace (30 s by default)
           "DASK_IPCLUSTER__CONTROLLER__ENGINE_TIMEOUT": "5"}
    proc = subprocess.run(["ip", "netns", "exec", hosts.ns("ctl"), sys.executable, str(driver)],
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
