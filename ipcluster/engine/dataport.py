"""Processes layer: the engine's data port, where clients on other hosts send large buffers
directly (see ipcluster/direct.py) and receive those of their results.

The engine binds it, a ROUTER, on the address from which it reaches the controller, on a free
port or in the range of ``IPCLUSTER_DATA_PORTS``, encrypted with the controller's Curve keys
when the controller uses Curve. The control thread owns it: it answers ``link`` messages, keeps
``data`` until the request it belongs to arrives from the controller (or the other way round),
passes data on to the next engine of a chain (a push to engines on several hosts), and sends
the data of results.
"""

from __future__ import annotations

import logging
import time

from ipcluster import direct, transport
from ipcluster.protocol import BadMessage, decode, encode

log = logging.getLogger("ipcluster.engine")

ONWARD_TIMEOUT = 10.0  # seconds the next engine of a chain has to answer before it is skipped


class DataPort:
    def __init__(self, context, info, signer, replay) -> None:
        self.signer, self.replay, self.context = signer, replay, context
        self.curve_public = info.curve_public_key or None
        self.onward: dict[str, list] = {}  # data URL -> [DEALER, state, since]: chain links
        ip = direct.local_address(info.engine_url)
        self.sock, self.url = context.router(ip, info.curve_secret_key or None,
                                             info.max_message_size, port=direct.port_range())
        self.peers: set[bytes] = set()  # data identities of clients that opened a link
        self.pending = direct.Pending()

    def receive(self, frames, ids) -> object | None:
        """A message on the data port; returns a request now complete, if any."""
        msg = decode(self.signer, frames, self.replay)
        handler = HANDLERS.get(msg.kind)
        if handler is None:
            raise BadMessage(f"a {msg.kind!r} message is not for the data port")
        return handler(self, msg, ids)

    def on_link(self, msg, ids) -> None:  # a client opens a link: answer, and remember it
        self.peers.add(msg.route[0])
        transport.send(self.sock, [msg.route[0], *encode(
            self.signer, {"kind": "link", "id": ids(), "parent": msg.header["id"]})])

    def on_data(self, msg, ids):
        onward = direct.forward(msg.header)
        for i, url in enumerate(onward):  # passed on before it is copied here: a pipeline
            sock = self._next(url, ids)
            if sock is None:
                continue  # that engine is out of reach: the one after it gets the data
            header = {k: v for k, v in msg.header.items() if k in ("kind", "parent", "sizes", "at")}
            header.update(id=ids(), **({"forward": onward[i + 1:]} if onward[i + 1:] else {}))
            transport.send(sock, encode(self.signer, header, b"", msg.buffers))
            break
        complete = self.pending.chunk(msg.header, msg.buffers)
        return None if complete is None else self._joined(*complete)

    def _next(self, url: str, ids):
        """The link to the data port of the next engine of a chain, opened on first use; None
        if that engine did not answer its `link` within `ONWARD_TIMEOUT`."""
        link = self.onward.get(url)
        if link is None:
            sock = self.context.dealer(url, curve_server_key=self.curve_public)
            transport.send(sock, encode(self.signer, {"kind": "link", "id": ids()}))
            link = self.onward[url] = [sock, "opening", time.monotonic()]
        self._check(url, link)
        return None if link[1] == "failed" else link[0]

    def check_onward(self) -> None:
        """Give up on links to next engines that never answered (every beat)."""
        for url, link in self.onward.items():
            self._check(url, link)

    def _check(self, url: str, link: list) -> None:
        sock, state, since = link
        if state != "opening":
            return
        for frames in transport.drain(sock):
            try:
                answered = decode(self.signer, frames, self.replay).kind == "link"
            except BadMessage:
                continue
            if answered:
                link[1] = "ok"
                return
        if time.monotonic() - since > ONWARD_TIMEOUT:
            link[1] = "failed"
            sock.close(linger=0)  # with the data queued for it
            log.warning("the next engine of a chain, at data port %s, did not answer within %s "
                        "s; data is passed to the one after it from now on (open the range of "
                        "IPCLUSTER_DATA_PORTS between the engines' hosts)", url, ONWARD_TIMEOUT)

    def request(self, msg) -> object | None:
        """A request from the controller: itself if complete, else None until its data came."""
        if "direct" not in msg.header:
            return msg
        frames = self.pending.message(msg.header["id"], msg)
        return None if frames is None else self._joined(msg, frames)

    def _joined(self, msg, frames):
        msg.buffers = direct.join(msg.header, msg.buffers, frames)
        return msg

    def send(self, identity: bytes, frames: list) -> None:
        """The data message of a result, to the client's link."""
        try:
            transport.send(self.sock, [identity, *frames])
        except transport.ZMQError as exc:
            if not transport.is_unreachable(exc):
                raise
            log.warning("the client's data link is gone; the data of a result was dropped")


# The handler per kind the data port receives (tests/test_direct.py checks the table).
HANDLERS = {"link": DataPort.on_link, "data": DataPort.on_data}
