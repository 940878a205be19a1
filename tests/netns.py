"""Fake hosts for tests: network namespaces joined by a bridge in a namespace of their own
(tests/test_link.py, tests/launchers/test_multihost.py, tests/security/test_curve.py).

    with fake_hosts("ipct", {"ctl": "10.200.0.1", "h1": "10.200.0.11"}) as hosts:
        hosts.popen("ctl", [sys.executable, ...], env)

Each host `NAME` is the namespace `PREFIX-NAME` with `lo` and an `eth0` at its address (/24),
whose other end is `NAME-br` on the bridge `br0` of namespace `PREFIX-sw`. With `qdisc` (tc
arguments, e.g. a tbf), both ends of every link get it, so each link is shaped both ways.

Safety: use only 10.200.x.y addresses. The route `unreachable 10.200.0.0/16` enters the root
namespace first and leaves it last, so nothing for those addresses can leave the machine, and
tests talk to them only from inside the namespaces. Whatever a killed earlier run left (its
namespaces and the processes in them) is removed first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

ROUTE = "10.200.0.0/16"


def ip(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def tc(*args) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True, text=True)


def can_make_hosts(shaped: bool = False) -> bool:
    """Root and iproute2 (and tc and unshare, for shaped links and private /dev/shm)."""
    tools = ["ip", "tc", "unshare"] if shaped else ["ip"]
    return os.geteuid() == 0 and all(shutil.which(t) for t in tools)


class Hosts:
    def __init__(self, prefix: str, addresses: dict[str, str]) -> None:
        self.prefix, self.addresses = prefix, addresses

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    @property
    def switch(self) -> str:
        return self.ns("sw")

    def popen(self, name: str, argv: list[str], env: dict, **kwargs) -> subprocess.Popen:
        """Run `argv` in host `name`'s network namespace, in a session of its own."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns(name), *argv], env=env,
                                start_new_session=True, **kwargs)

    def counters(self, name: str) -> dict:
        """Bytes host `name` has received ("rx") and sent ("tx") on its link."""
        stats = json.loads(ip("-n", self.ns(name), "-s", "-j", "link", "show", "eth0").stdout)
        return {way: stats[0]["stats64"][way]["bytes"] for way in ("rx", "tx")}

    def remove(self) -> None:
        """Every namespace of these hosts, and every process in them."""
        for name in [*self.addresses, "sw"]:
            for pid in ip("netns", "pids", self.ns(name), check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            ip("netns", "del", self.ns(name), check=False)


@contextlib.contextmanager
def fake_hosts(prefix: str, addresses: dict[str, str], qdisc: tuple[str, ...] = ()):
    """The hosts and their switch, removed on exit (with every process in them)."""
    hosts = Hosts(prefix, addresses)
    ip("route", "replace", "unreachable", ROUTE)  # FIRST: nothing for 10.200/16 leaves
    try:
        hosts.remove()  # what a killed earlier run may have left
        sw = hosts.switch
        ip("netns", "add", sw)
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "link", "set", "br0", "up")
        for name, address in addresses.items():
            ip("netns", "add", hosts.ns(name))
            ip("link", "add", "eth0", "netns", hosts.ns(name), "type", "veth", "peer", "name",
               f"{name}-br", "netns", sw)
            ip("-n", sw, "link", "set", f"{name}-br", "master", "br0")
            ip("-n", sw, "link", "set", f"{name}-br", "up")
            ip("-n", hosts.ns(name), "link", "set", "lo", "up")
            ip("-n", hosts.ns(name), "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", hosts.ns(name), "link", "set", "eth0", "up")
            if qdisc:
                for where, dev in ((hosts.ns(name), "eth0"), (sw, f"{name}-br")):
                    tc("-n", where, "qdisc", "add", "dev", dev, "root", *qdisc)
        yield hosts
    finally:
        hosts.remove()
        ip("route", "del", "unreachable", ROUTE, check=False)  # LAST
