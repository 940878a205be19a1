"""Messages layer: large buffers sent directly between a client and an engine on another host.

The request or result itself still goes through the controller, which records it and routes
it exactly once; only its large buffers take the direct link, as ``data`` messages to the
engine's data port (a ROUTER the engine binds on the address it reaches the controller from)::

    client ── apply (header, content; "direct": [[index, size], ...]) ──▶ controller ──▶ engine
       └──── data × n (parent = the apply's id; 1 MiB each) ───────────────────────────▶ engine
    engine ── result ("direct": ...) ──▶ controller ──▶ client
       └──── data × n (parent = the result's id) ──────────────────────────────────────▶ client

- To engines on other hosts, the data leaves the client once: the client sends it to the first
  engine of a chain (ordered by host, so engines of one host are neighbours), and each engine
  passes every chunk on to the next one's data port as it arrives (``forward``: the data ports
  still to come), before copying it into place, so the copies are pipelined::

      client ── data (forward: [B, C]) ──▶ engine A ── data (forward: [C]) ──▶ engine B ──▶ C

  An engine whose next one never answers its ``link`` skips it (engine/dataport.py).

- The receiver copies each 1 MiB chunk into place as it arrives (so the copy overlaps the
  network, and memory grows by the buffer and one chunk), then joins the message and its data
  by the message id, whichever arrives first.
- A ``link`` message opens the link and is answered: a client uses the direct path to an
  engine only once it had that answer, and the controller path otherwise (a firewall, another
  network), saying so once.
- The data port is signed like every socket (the header, with the frame lengths, is signed;
  the message id is checked for replays) and, off loopback, encrypted with the controller's
  Curve key pair, which engines already hold. Messages of 1 MiB let encryption, the network
  and the copy overlap instead of running one after the other.
"""

from __future__ import annotations

import mmap
import os
import re
import socket
import time

CHUNK = 1 << 20  # bytes per frame on the data link
PORTS_VARIABLE = "IPCLUSTER_DATA_PORTS"  # "40000-40999": where engines bind their data port
WAIT = 60.0  # seconds a request or result waits for its data before it fails
MAX_CHAIN = 4096  # engines one data message may be passed along
_URL = re.compile(r"tcp://[0-9A-Za-z.:\[\]-]+:[0-9]+\Z")


def port_range() -> tuple[int, int] | None:
    """The data-port range from the environment, or None (any free port)."""
    text = os.environ.get(PORTS_VARIABLE, "").strip()
    if not text:
        return None
    try:
        low, high = (int(p) for p in text.split("-"))
        if not 0 < low <= high < 65536:
            raise ValueError
    except ValueError:
        raise ValueError(f"{PORTS_VARIABLE} must be a port range like 40000-40999, not {text!r}") from None
    return low, high + 1


def local_address(url: str) -> str:
    """The address of this host from which `url` (tcp://host:port) is reached."""
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, int(port)))  # no packet is sent: only a route is chosen
        return probe.getsockname()[0]


def split(header: dict, buffers, threshold: int) -> tuple[list, list]:
    """The frames a message keeps (an empty one for each large buffer, listed in
    `header["direct"]`) and the large buffers, which go as data messages (`chunks`)."""
    kept, large, listed = list(buffers), [], []
    for i, buffer in enumerate(buffers):
        view = memoryview(buffer).cast("B")
        if view.nbytes >= threshold:
            kept[i] = b""
            listed.append([i, view.nbytes])
            large.append(view)
    if listed:
        header["direct"] = listed
    return kept, large


def chain(urls: list[str]) -> list[str]:
    """The order in which data is passed along the engines at data ports `urls`: by host, so
    that each host's link is crossed once on the way in."""
    return sorted(urls, key=lambda url: url.rsplit("//", 1)[-1].rsplit(":", 1)[0])


def forward(header: dict) -> list[str]:
    """The data ports a data message is still to be passed to; ValueError if malformed."""
    urls = header.get("forward", [])
    if not (isinstance(urls, list) and len(urls) <= MAX_CHAIN
            and all(isinstance(u, str) and _URL.match(u) for u in urls)):
        raise ValueError(f"malformed forward list in a data message: {str(urls)[:200]}")
    return urls


def chunks(large: list) -> list[tuple[dict, memoryview]]:
    """(header fields, frame) of each data message carrying `large`: one per 1 MiB, so the
    receiver copies each into place as it arrives, while the rest is still on the network."""
    sizes = [view.nbytes for view in large]
    return [({"sizes": sizes, "at": [b, offset]}, view[offset:offset + CHUNK])
            for b, view in enumerate(large) for offset in range(0, view.nbytes, CHUNK)]


def check(header: dict, buffers: list) -> None:
    """Raise ValueError unless `header["direct"]` names empty frames of `buffers`."""
    direct = header.get("direct")
    if not isinstance(direct, list) or not direct:
        raise ValueError("'direct' must be a non-empty list")
    for entry in direct:
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, int) for v in entry)
                and 0 <= entry[0] < len(buffers) and entry[1] > 0
                and len(getattr(buffers[entry[0]], "buffer", buffers[entry[0]])) == 0):
            raise ValueError(f"malformed direct entry {entry!r}")


def join(header: dict, buffers: list, large: list) -> list:
    """`buffers` of a message with its large ones put back in their places."""
    if [size for _, size in header["direct"]] != [len(b) for b in large]:
        raise ValueError("the data that came does not match the buffers the message names")
    buffers = list(buffers)
    for (index, _), buffer in zip(header["direct"], large):
        buffers[index] = buffer
    return buffers


class Assembly:
    """Data messages put together: each chunk copied into place as it arrives."""

    def __init__(self) -> None:
        self._parts: dict[str, list] = {}  # parent -> [buffers, bytes still to come, since]

    def add(self, header: dict, frames: list) -> list | None:
        """One data message; returns the buffers of its parent once all have come."""
        parent, sizes, at = header.get("parent"), header.get("sizes"), header.get("at")
        if not (isinstance(parent, str) and isinstance(sizes, list) and sizes
                and all(isinstance(n, int) and n > 0 for n in sizes) and isinstance(at, list)
                and len(at) == 2 and all(isinstance(n, int) for n in at) and len(frames) == 1):
            raise ValueError("malformed data message")
        part = self._parts.get(parent)
        if part is None:
            # anonymous mappings: zero pages the kernel gives only as chunks fill them
            part = self._parts[parent] = [[memoryview(mmap.mmap(-1, n)) for n in sizes],
                                          sum(sizes), time.monotonic()]
        buffers = part[0]
        chunk = getattr(frames[0], "buffer", None) or memoryview(frames[0])
        b, offset = at
        if [len(x) for x in buffers] != sizes or not 0 <= b < len(buffers) or not (
                0 <= offset and offset + len(chunk) <= sizes[b]):
            raise ValueError(f"a data chunk out of place: buffer {b}, bytes {offset}+{len(chunk)}")
        buffers[b][offset:offset + len(chunk)] = chunk
        part[1] -= len(chunk)
        if part[1] > 0:
            return None
        del self._parts[parent]
        return buffers

    def expire(self, deadline: float) -> None:
        """Drop data whose sender stopped sending before `deadline` (a monotonic time)."""
        for parent in [p for p, part in self._parts.items() if part[2] < deadline]:
            del self._parts[parent]


class Pending:
    """Messages waiting for their data and data waiting for its message, by message id."""

    def __init__(self) -> None:
        self.messages: dict[str, tuple[float, object]] = {}
        self.data: dict[str, tuple[float, list]] = {}
        self.assembly = Assembly()

    def chunk(self, header: dict, frames: list) -> tuple | None:
        """A data message arrived; (the item waiting for it, its large buffers) once both are
        here."""
        large = self.assembly.add(header, frames)
        item = None if large is None else self.arrived(header["parent"], large)
        return None if item is None else (item, large)

    def message(self, msg_id: str, item) -> list | None:
        """`item` arrived (a message naming direct buffers); its data frames if they are here."""
        found = self.data.pop(msg_id, None)
        if found is None:
            self.messages[msg_id] = (time.monotonic(), item)
            return None
        return found[1]

    def arrived(self, parent: str, frames: list):
        """Data for `parent` arrived; the waiting item if there is one."""
        found = self.messages.pop(parent, None)
        if found is None:
            self.data[parent] = (time.monotonic(), frames)
            return None
        return found[1]

    def expired(self, wait: float = WAIT) -> list:
        """Items that waited for their data longer than `wait`, removed; stale data dropped."""
        deadline = time.monotonic() - wait
        late = [k for k, (t, _) in self.messages.items() if t < deadline]
        for key in [k for k, (t, _) in self.data.items() if t < deadline]:
            del self.data[key]
        self.assembly.expire(deadline)
        return [self.messages.pop(k)[1] for k in late]
