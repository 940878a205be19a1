"""Processes layer: what the controller sends to its peers, at once or held for a batch.

Within one turn of the controller's loop (`batching`), the buffer-less results and output for
one client, and the buffer-less tasks for one engine, are held (`post`) and sent as one
``batch`` message (`ipcluster.batch`) when the turn's messages are handled (`flush`); anything
else sent to that peer (`send`) sends what is held for it first, so each peer gets everything
in the order it was sent. A peer that is gone is the caller's to handle: `send` and `post`
return False, and `flush` hands what it could not deliver to `lost`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from ipcluster import batch, transport
from ipcluster.protocol import Ids, Signer

log = logging.getLogger("ipcluster.controller")


class Outbox:
    def __init__(self, signer: Signer, ids: Ids, traffic: Counter,
                 lost: Callable[[object, bytes, list], None]) -> None:
        self.signer = signer
        self.ids = ids
        self.traffic = traffic  # messages and frames out (the controller counts those in)
        self.lost = lost  # (socket, identity, messages) a held batch could not deliver
        self.batching = False  # in a turn of the loop: hold messages to send in batches
        self.held: dict[tuple, list] = {}  # (socket, identity) -> messages for its next batch

    def send(self, sock, identity: bytes, frames: list) -> bool:
        """Send `frames` to `identity` now, after the messages held for it (False: it is gone)."""
        if self.held and (sock, identity) in self.held:
            self._release(sock, identity, self.held.pop((sock, identity)))
        return self.transmit(sock, identity, frames)

    def post(self, sock, identity: bytes, frames: list) -> bool:
        """`send`, but while `batching` a message without buffers is held for a batch (`flush`,
        which also does what a failed send would have made the caller do)."""
        if self.batching and batch.batchable(frames):
            self.held.setdefault((sock, identity), []).append(frames)
            return True
        return self.send(sock, identity, frames)

    def flush(self) -> None:
        """Send what is held, a batch per peer (or the message alone if it is one)."""
        held = self.held  # each left held until its turn: a `send` meanwhile sends it first
        while held:
            sock, identity = key = next(iter(held))
            self._release(sock, identity, held.pop(key))

    def _release(self, sock, identity: bytes, messages: list) -> None:
        if len(messages) == 1:
            frames = messages[0]
        else:
            self.traffic["batched"] += len(messages)
            frames = batch.pack(self.signer, self.ids(), messages)
        if not self.transmit(sock, identity, frames):
            self.lost(sock, identity, messages)

    def transmit(self, sock, identity: bytes, frames: list) -> bool:
        """Put `frames` on the wire to `identity` (False: it is gone)."""
        self.traffic["messages_out"] += 1
        self.traffic["frames_out"] += len(frames) + 1
        try:
            transport.send(sock, [identity, *frames])
            return True
        except transport.ZMQError as exc:
            if not transport.is_unreachable(exc):
                raise
            log.info("peer %r is gone; message not delivered", identity)
            return False
