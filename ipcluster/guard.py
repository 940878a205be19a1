"""Messages layer: what a receiver checks before it reads a message: its signature (HMAC-SHA256
with the cluster key, `Signer`) and its id against the ids seen last (`Replay`); and how what
fails is counted and logged (`Drops`). `protocol.decode` applies them, in that order."""

from __future__ import annotations

import hashlib
import hmac
from collections import deque


class Drops:
    """Counts messages dropped as bad; logs the first 100 one by one, then one in 1000, so a
    flood cannot fill the disk with log lines."""

    def __init__(self, log) -> None:
        self.log = log
        self.count = 0

    def __call__(self, exc: BaseException) -> None:
        self.count += 1
        if self.count <= 100 or self.count % 1000 == 0:
            self.log.warning("dropped a message (%d so far): %s: %s", self.count,
                             type(exc).__name__, exc)


class Replay:
    """Ids of the last `size` messages received; a second sighting is a replay."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._order: deque = deque()
        self._seen: set = set()

    def first_sighting(self, msg_id) -> bool:
        if msg_id in self._seen:
            return False
        self._seen.add(msg_id)
        self._order.append(msg_id)
        if len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
        return True

    def take(self) -> list:
        """The ids remembered, oldest first, forgotten here until `put` back (to copy them
        into fresh memory: controller/memory.py)."""
        ids = list(self._order)
        self._order, self._seen = deque(), set()
        return ids

    def put(self, ids: list) -> None:
        self._order.extend(ids)
        self._seen.update(ids)


class Signer:
    """Signs and checks messages with the cluster key: HMAC-SHA256 (RFC 2104)."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("the cluster key must be at least 16 bytes")
        block = (key if len(key) <= 64 else hashlib.sha256(key).digest()).ljust(64, b"\0")
        # the key's inner and outer states, hashed once: a copy of each per message costs a
        # third of `hmac.digest`, which has OpenSSL 3 look SHA-256 up again on every call
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def sign(self, *parts) -> bytes:
        """The HMAC of `parts` one after the other (bytes-like, none copied)."""
        inner, outer = self._inner.copy(), self._outer.copy()
        for part in parts:
            inner.update(part)
        outer.update(inner.digest())
        return outer.digest()

    def verify(self, signature, *parts) -> bool:
        return hmac.compare_digest(self.sign(*parts), signature)
