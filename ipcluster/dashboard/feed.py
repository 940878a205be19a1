"""Surfaces layer: the dashboard's line to the controller: a thread that holds a watch on it
(a signed ``control`` request, renewed before its lease ends) and feeds each event batch it
receives into the `Status`.

It owns its socket; `stop()` ends it. When the cluster's connection file is gone (its
controller stopped) or the controller is silent for `silence` seconds (it died), `gone` is set,
and the dashboard process exits: a dashboard never outlives its cluster.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from ipcluster import transport
from ipcluster.protocol import Drops, Ids, Replay, Signer, decode, encode, pack, unpack

log = logging.getLogger("ipcluster.dashboard")

RENEW = 3.0  # seconds between renewals of the watch (its lease is longer)


class Feed(threading.Thread):
    def __init__(self, info, state, silence: float = 20.0, connection_file=None) -> None:
        super().__init__(name="ipcluster-dashboard-feed", daemon=True)
        self.info, self.state, self.silence = info, state, silence
        self.connection_file = connection_file
        self.signer = Signer(info.key_bytes)
        self.ids = Ids()
        self.replay = Replay()
        self.dropped = Drops(log)
        self.gone = threading.Event()
        self.error: str | None = None  # why the thread stopped, if it failed
        self.batches = 0  # event batches received
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        context = transport.Context(self.info.key_bytes)  # proves the key when it connects
        try:
            self._run(context)
        except Exception as exc:  # surfaced: the process exits and logs it
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the dashboard's feed failed")
        finally:
            context.close()
            self.gone.set()

    def _run(self, context) -> None:
        sock = context.dealer(self.info.client_url, identity=f"dashboard-{uuid.uuid4().hex}".encode(),
                              curve_server_key=self.info.curve_public_key or None)
        poller = transport.Poller(sock)
        heard = time.monotonic()
        renew = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= renew:
                if self.connection_file and not os.path.exists(self.connection_file):
                    log.info("the connection file %s is gone: the cluster stopped; the "
                             "dashboard stops", self.connection_file)
                    return
                renew = now + RENEW
                header = {"kind": "control", "id": self.ids()}
                transport.send(sock, encode(self.signer, header, pack({"action": "watch"})))
            if now - heard > self.silence:
                log.info("the controller at %s is silent for %.0f s; the dashboard stops",
                         self.info.client_url, now - heard)
                return
            if sock not in poller.poll(0.2):
                continue
            heard = time.monotonic()
            for frames in transport.drain(sock):
                try:
                    msg = decode(self.signer, frames, self.replay)
                    if msg.kind == "event":
                        self.batches += 1
                        self.state.apply(unpack(msg.content))
                except Exception as exc:  # one bad message must not stop the feed
                    self.dropped(exc)
