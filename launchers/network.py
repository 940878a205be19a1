"""Which address the controller binds so that every host running engines can reach it.

Explicit wins: an address, or an interface's name. Otherwise the address this machine uses to
reach the engines' hosts (the kernel's route choice, found by connecting a UDP socket, which
sends nothing): loopback when every host is this machine. An error names the candidates.
"""

from __future__ import annotations

import ipaddress
import socket


def interfaces() -> dict[str, list[str]]:
    """Interface name -> its IPv4 addresses."""
    import psutil  # here, not at the top: every engine imports this module, few call this

    return {name: [a.address for a in addrs if a.family == socket.AF_INET]
            for name, addrs in psutil.net_if_addrs().items()}


def candidates() -> str:
    return ", ".join(f"{name} ({', '.join(addrs)})" for name, addrs in interfaces().items() if addrs) or "none"


def local_addresses() -> set[str]:
    return {a for addrs in interfaces().values() for a in addrs}


def route_source(address: str) -> str | None:
    """The local address the kernel would use to reach `address`; None if there is no route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((address, 9))  # UDP connect picks a route; no packet is sent
        except OSError:
            return None
        return s.getsockname()[0]


def choose_ip(hosts: list[str] | None, *, ip: str | None = None, interface: str | None = None) -> str:
    """The address to bind for engines on `hosts` (None: this machine only)."""
    if ip:
        return ip
    if interface:
        addrs = interfaces().get(interface)
        if not addrs:
            raise ValueError(f"interface {interface!r} has no IPv4 address; candidates: {candidates()}")
        return addrs[0]
    if hosts is None:
        return "127.0.0.1"
    mine = local_addresses()
    sources = set()
    for host in hosts or [socket.getfqdn()]:
        try:
            address = socket.gethostbyname(host)
        except OSError:
            raise ValueError(f"cannot resolve engine host {host!r} to choose the controller's "
                             f"address; pass ip= or interface= (candidates: {candidates()})") from None
        if address in mine or ipaddress.ip_address(address).is_loopback:
            sources.add("127.0.0.1" if ipaddress.ip_address(address).is_loopback else address)
            continue
        source = route_source(address)
        if source is None:
            raise ValueError(f"no route from this machine to engine host {host} ({address}); "
                             f"pass ip= or interface= (candidates: {candidates()})")
        sources.add(source)
    if sources == {"127.0.0.1"}:
        return "127.0.0.1"
    sources.discard("127.0.0.1")  # some hosts are this one: they reach a routable address too
    if len(sources) > 1:
        raise ValueError(f"the engine hosts are reached through different addresses "
                         f"({', '.join(sorted(sources))}); pass ip= or interface= to choose one "
                         f"(candidates: {candidates()})")
    return sources.pop()
