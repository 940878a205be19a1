"""Client API layer: a client's direct links to the data ports of engines on other hosts.

User threads ask whether an engine's link is usable (opening it the first time, and waiting up
to `OPEN_TIMEOUT` for the engine's answer) and hand data messages to the IO thread, which owns
the sockets like every other socket of the session. The IO thread also receives the data of
results and completes a result once both its message (through the controller) and its data
(direct) are here. A link that does not answer is not used: the buffers go through the
controller, and the client says so once.
"""

from __future__ import annotations

import logging
import threading

from ipcluster import direct, transport
from ipcluster.errors import RemoteError
from ipcluster.protocol import BadMessage, decode, encode

log = logging.getLogger("ipcluster.client")

OPEN_TIMEOUT = 3.0  # seconds an engine's data port has to answer before the controller path is used
OPEN, DATA = b"\0link-open", b"\0link-data"  # IO-thread requests on the session's inbox


class Links:
    def __init__(self, session) -> None:
        self.session = session
        self.identity = f"data-{session.ids.session}".encode()
        self.state: dict[str, str] = {}  # data URL -> "opening", "ok" or "failed"
        self._changed = threading.Condition()
        self._socks: dict[str, object] = {}  # data URL -> DEALER (IO thread only)
        self._urls: dict[object, str] = {}
        self.pending = direct.Pending()  # results waiting for their data (IO thread only)
        self._warned = False

    @property
    def any_open(self) -> bool:
        return "ok" in self.state.values()

    # -- user threads -----------------------------------------------------------------------

    def usable(self, url: str) -> bool:
        """True if the engine at data port `url` answered this client's link."""
        with self._changed:
            if url not in self.state:
                self.state[url] = "opening"
                self.session.sender.to_io([OPEN, url.encode()])
            self._changed.wait_for(lambda: self.state[url] != "opening", OPEN_TIMEOUT)
            if self.state[url] == "opening":
                self.state[url] = "failed"
            ok = self.state[url] == "ok"
        if not ok and not self._warned:
            self._warned = True
            log.warning("no answer from the engine's data port %s within %s s; large buffers "
                        "go through the controller instead (a firewall between this host and the "
                        "engines? open the range of IPCLUSTER_DATA_PORTS)", url, OPEN_TIMEOUT)
        return ok

    def messages(self, parent: str, urls: list[str], large: list) -> list[list]:
        """The IO-thread requests that send `large` buffers as the data of message `parent` to
        the engines at data ports `urls`: once, to the first of their chain, which forwards it."""
        signer, ids = self.session.signer, self.session.ids
        first, *rest = direct.chain(urls)
        route = {"forward": rest} if rest else {}
        return [[DATA, first.encode(), *encode(signer, {"kind": "data", "id": ids(), "parent": parent,
                                                        **fields, **route}, b"", [chunk])]
                for fields, chunk in direct.chunks(large)]

    # -- the IO thread ----------------------------------------------------------------------

    def on_request(self, frames, poller) -> bool:
        """Act on an inbox message meant for the links; False if it is not one."""
        tag = _bytes(frames[0])
        if tag == OPEN:
            url = _bytes(frames[1]).decode()
            sock = self.session.context.dealer(url, identity=self.identity,
                                               curve_server_key=self.session.info.curve_public_key or None)
            self._socks[url], self._urls[sock] = sock, url
            poller.add(sock)
            transport.send(sock, encode(self.session.signer, {"kind": "link", "id": self.session.ids()}))
            return True
        if tag == DATA:
            transport.send(self._socks[_bytes(frames[1]).decode()], frames[2:])
            return True
        return False

    def readable(self, ready: set) -> list:
        return [s for s in ready if s in self._urls]

    def on_message(self, sock, frames) -> None:
        msg = decode(self.session.signer, frames, self.session.replay)
        handler = HANDLERS.get(msg.kind)
        if handler is None:
            raise BadMessage(f"a {msg.kind!r} message on a direct link")
        handler(self, sock, msg)

    def on_link(self, sock, msg) -> None:  # the engine answered: the link works
        with self._changed:
            self.state[self._urls[sock]] = "ok"
            self._changed.notify_all()

    def on_data(self, sock, msg) -> None:
        complete = self.pending.chunk(msg.header, msg.buffers)
        if complete is not None:
            (task, result, message), large = complete
            message.buffers = direct.join(message.header, message.buffers, large)
            self.session.complete(task, result, message)

    def expire(self) -> None:
        for task, *_ in self.pending.expired():
            task.set_exception(RemoteError(
                "DataLost", f"the result's large buffers did not arrive on this client's direct "
                f"link within {direct.WAIT} s of the result (the link broke); run the task again"))


# The handler per kind a client's link receives (tests/test_direct.py checks the table).
HANDLERS = {"link": Links.on_link, "data": Links.on_data}


def _bytes(frame) -> bytes:
    return frame.bytes if isinstance(frame, transport.Frame) else bytes(frame)
