"""A controller bound beyond loopback encrypts with CurveZMQ: tested between two network
namespaces, with a packet sniffer on the controller's link.

Safety (tests/netns.py): the only addresses are 10.200.9.1 and 10.200.9.2, inside namespaces
this test makes, and all traffic runs between the two namespaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipcluster import connection
from tests.launchers.conftest import require
from tests.netns import can_make_hosts, fake_hosts

PREFIX = "ipsc"
CONTROLLER, CLIENT = "10.200.9.1", "10.200.9.2"
MARKER = "plaintext-marker-6f1d2c"

SNIFFER = """
import os, socket, sys
out, ready, stop = sys.argv[1:4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # every protocol
s.bind(("eth0", 0))
s.settimeout(0.1)
open(ready, "w").close()
with open(out, "wb") as f:
    while not os.path.exists(stop):
        try:
            f.write(s.recv(65535))
        except socket.timeout:
            pass
"""

CLIENT_SCRIPT = """
import sys, ipcluster
from ipcluster import connection, protocol, transport
info = connection.read(sys.argv[1])
with ipcluster.Client(sys.argv[1], timeout=20) as rc:
    rc.wait_for_engines(1, timeout=60)
    rc[:].push({"secret": sys.argv[2]}, block=True)
    print("PULLED", rc[0].pull("secret", block=True))
if info.curve_public_key:
    ctx = transport.Context(info.key_bytes)
    encrypted = ctx.dealer(info.client_url, curve_server_key=info.curve_public_key)
    print("CURVE", transport.uses_curve(encrypted))
    plain = ctx.dealer(info.client_url)  # no server key
    signer = protocol.Signer(info.key_bytes)
    transport.send(plain, protocol.encode(signer, {"kind": "hello", "id": "plain-1"}))
    answered = plain in transport.Poller(plain).poll(3)
    print("PLAIN_ANSWERED", answered)
    ctx.close()
"""


@pytest.fixture
def namespaces():
    require(can_make_hosts(), "root and iproute2 (network namespaces)")
    with fake_hosts(PREFIX, {"a": CONTROLLER, "b": CLIENT}) as hosts:
        yield hosts


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run_through_the_link(hosts, tmp_path: Path, *curve_flag: str):
    env = {**os.environ, "IPCLUSTER_DIR": str(tmp_path / "state"),
           "DASK_IPCLUSTER__CONTROLLER__LOCATION": CONTROLLER}
    conn = tmp_path / "state" / "c" / "connection.json"
    capture, ready, stop = tmp_path / "capture", tmp_path / "ready", tmp_path / "stop"
    procs = []
    try:
        procs.append(hosts.popen("a", [sys.executable, "-c", SNIFFER, str(capture), str(ready), str(stop)], env))
        wait_for(ready.exists, "the sniffer")
        procs.append(hosts.popen("a", [sys.executable, "-m", "ipcluster", "controller", "--cluster-id", "c",
                                 "--ip", "0.0.0.0", *curve_flag], env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(conn.exists, "the connection file")
        info = connection.read(conn)
        procs.append(hosts.popen("b", [sys.executable, "-m", "ipcluster", "engine", "--connection-file",
                                 str(conn)], env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = hosts.popen("b", [sys.executable, "-c", CLIENT_SCRIPT, str(conn), MARKER], env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = out.communicate(timeout=120)
        assert out.returncode == 0, stderr
        stop.touch()
        procs[0].wait(10)
        return info, stdout, capture.read_bytes()
    finally:
        stop.touch()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_off_loopback_traffic_is_encrypted_and_needs_the_server_key(namespaces, tmp_path):
    info, stdout, captured = run_through_the_link(namespaces, tmp_path)  # on by default off loopback
    assert info.client_url.startswith(f"tcp://{CONTROLLER}:") and info.curve_public_key
    assert f"PULLED {MARKER}" in stdout  # the work was done, through the link
    assert "CURVE True" in stdout
    assert "PLAIN_ANSWERED False" in stdout  # a client without the server key gets nothing
    assert len(captured) > 10_000 and MARKER.encode() not in captured


def test_the_sniffer_sees_plaintext_without_curve(namespaces, tmp_path):
    """The control experiment: with --no-curve the same marker crosses the link in clear."""
    info, stdout, captured = run_through_the_link(namespaces, tmp_path, "--no-curve")
    assert not info.curve_public_key and f"PULLED {MARKER}" in stdout
    assert MARKER.encode() in captured
