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

from ipcluster import direct, transport
from ipcluster.protocol import BadMessage, decode, encode

log = logging.getLogger("ipcluster.engine")


class DataPort:
    def __init__(self, context, info, signer, replay) -> None:
        self.signer, self.replay, self.context = signer, replay, context
        self.curve_public = info.curve_public_key or None
        self.onward: dict[str, object] = {}  # data URL -> DEALER, to pass data along a chain
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
        if onward:  # passed on before it is copied into place here: a pipeline
            header = {k: v for k, v in msg.header.items() if k in ("kind", "parent", "sizes", "at")}
            header.update(id=ids(), **({"forward": onward[1:]} if onward[1:] else {}))
            transport.send(self._next(onward[0]), encode(self.signer, header, b"", msg.buffers))
        complete = self.pending.chunk(msg.header, msg.buffers)
        return None if complete is None else self._joined(*complete)

    def _next(self, url: str):
        """A link to the data port of the next engine of a chain (made on first use)."""
        sock = self.onward.get(url)
        if sock is None:
            sock = self.onward[url] = self.context.dealer(url, curve_server_key=self.curve_public)
        return sock

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
