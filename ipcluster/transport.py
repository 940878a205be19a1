"""Transport layer: the only module that imports zmq.

Sockets are made here with the options every role needs (no silent drops at the high-water
mark, mandatory routing so a vanished peer is an error, transport heartbeats), and everything
above speaks in lists of frames. Frames are sent with ``copy=False`` so large buffers are never
copied on the way out.

Peers authenticate when they connect (ZAP), with credentials derived from the cluster key: a
PLAIN password on loopback, a CurveZMQ client key pair when encrypted. A server's context runs
the ZAP handler; a peer without the key is refused during the handshake, so it receives no
event and libzmq never buffers a frame of its.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

import zmq
from zmq.utils import z85

Again = zmq.Again
ZMQError = zmq.ZMQError
Frame = zmq.Frame

_NOBLOCK, _MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
_send = zmq.backend.Socket.send  # pyzmq's own: its Python wrapper only adds draft-socket options
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
COPY_BELOW = 1 << 16  # bytes frames smaller than this are copied into the message (cheaper)
HEARTBEAT_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
# engines' connections: thousands of them, whose liveness the controller judges by their own
# beats; libzmq's pings each way every second would keep an I/O thread busy (40,000 a second
# at 10,000 engines) and, when it falls behind, cut connections that are fine. An engine pings
# its one connection every 10 s; the controller's end pings none (see `router`)
ENGINE_HEARTBEAT = (10_000, 60_000)
LISTEN_BACKLOG = 4096


def curve_keypair() -> tuple[str, str]:
    """A new CurveZMQ (public, secret) key pair, as Z85 text."""
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


def uses_curve(sock) -> bool:
    """True if `sock` encrypts with CurveZMQ (as server or client)."""
    return sock.getsockopt(zmq.MECHANISM) == zmq.CURVE


def _derived(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, b"ipcluster " + purpose, hashlib.sha256).digest()


def peer_password(key: bytes) -> bytes:
    """The PLAIN password of every peer of the cluster with this key (never the key itself)."""
    return _derived(key, b"zap password").hex().encode()


def peer_curve_keys(key: bytes) -> tuple[bytes, bytes]:
    """The CurveZMQ (public, secret) client key pair of every peer of the cluster, Z85."""
    secret = z85.encode(_derived(key, b"curve client"))
    return zmq.curve_public(secret), secret


class _Gatekeeper(threading.Thread):
    """The ZAP handler of a context: admits a PLAIN peer with the password, a CURVE peer with
    the client key, both derived from the cluster key; refuses everyone else."""

    def __init__(self, ctx: zmq.Context, key: bytes) -> None:
        super().__init__(name="ipcluster-zap", daemon=True)
        self.password, self.curve_public = peer_password(key), z85.decode(peer_curve_keys(key)[0])
        self.refused = 0
        self._stopping = threading.Event()
        self._sock = ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind("inproc://zeromq.zap.01")
        self.start()

    def run(self) -> None:
        sock = self._sock
        while not self._stopping.is_set():
            if not sock.poll(100):
                continue
            # only libzmq writes here: [route, "", version, request id, domain, address,
            # identity, mechanism, credentials...]
            route, _, _, request_id, _, _, _, mechanism, *credentials = sock.recv_multipart()
            if mechanism == b"PLAIN" and len(credentials) == 2:
                ok = hmac.compare_digest(credentials[1], self.password)
            elif mechanism == b"CURVE" and len(credentials) == 1:
                ok = hmac.compare_digest(credentials[0], self.curve_public)
            else:
                ok = False
            self.refused += not ok
            status = (b"200", b"OK") if ok else (b"400", b"not a peer of this cluster")
            sock.send_multipart([route, b"", b"1.0", request_id, *status, b"", b""])
        sock.close()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


class Context:
    """Owns a zmq context and every socket made from it; `close()` closes them all.

    With `curve_secret` (servers) or `curve_server_key` (clients), sockets encrypt with
    CurveZMQ; a peer without the server's public key cannot connect. With the cluster `key`,
    servers admit only peers that prove it and clients prove it (see the module's docstring).
    """

    def __init__(self, key: bytes | None = None, io_threads: int = 1) -> None:
        self._ctx = zmq.Context(io_threads)
        self._key = key
        self._gatekeeper: _Gatekeeper | None = None

    def close(self, linger_ms: int = 0) -> None:
        if self._gatekeeper is not None:
            self._gatekeeper.stop()
        self._ctx.destroy(linger=linger_ms)

    @property
    def refused(self) -> int:
        """Peers refused at connect so far (servers)."""
        return 0 if self._gatekeeper is None else self._gatekeeper.refused

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        return sock

    def _bind(self, sock: zmq.Socket, ip: str, curve_secret: str | None, port: int | None) -> str:
        if self._key is not None:
            if self._gatekeeper is None:
                self._gatekeeper = _Gatekeeper(self._ctx, self._key)
            sock.setsockopt(zmq.ZAP_DOMAIN, b"ipcluster")
            if not curve_secret:
                sock.setsockopt(zmq.PLAIN_SERVER, 1)
        if curve_secret:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve_secret.encode())
        if isinstance(port, tuple):  # a range [low, high) a site opened
            port = sock.bind_to_random_port(f"tcp://{ip}", *port)
        elif port:  # a restarted controller takes the ports its engines and clients know
            sock.bind(f"tcp://{ip}:{port}")
        else:
            port = sock.bind_to_random_port(f"tcp://{ip}")
        return f"tcp://{ip}:{port}"

    def _connect(self, sock: zmq.Socket, url: str, curve_server_key: str | None) -> zmq.Socket:
        if curve_server_key:
            public, secret = peer_curve_keys(self._key) if self._key else zmq.curve_keypair()
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve_server_key.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        elif self._key is not None:
            sock.setsockopt(zmq.PLAIN_USERNAME, b"peer")
            sock.setsockopt(zmq.PLAIN_PASSWORD, peer_password(self._key))
        sock.connect(url)
        return sock

    def router(self, ip: str, curve_secret: str | None = None, max_message_size: int = -1,
               port: int | None = None, io_thread: int = 0,
               heartbeat: tuple[int, int] | None = (HEARTBEAT_MS, HEARTBEAT_TIMEOUT_MS)
               ) -> tuple[zmq.Socket, str]:
        """A ROUTER bound to a free port on `ip`; returns it and its URL.

        A peer sending a frame over `max_message_size` bytes is disconnected before the frame
        is held in memory. The messages queued per peer are not bounded (RCVHWM 0): at a bound
        libzmq stops reading the connection, and if it then breaks (the peer died, or gave up
        waiting for a heartbeat's answer) reading the rest answers a PING on the broken
        connection and libzmq 4.3.5 aborts the process ("Assertion failed: !_io_error",
        stream_engine_base.cpp). Peers are admitted by key; each peer's messages are read in turn.
        Its connections are served by the context's I/O thread `io_thread`, and pinged every
        `heartbeat[0]` ms (dropped after `heartbeat[1]` ms without an answer).

        With `heartbeat=None` a connection has no libzmq timer at all: no pings and no handshake
        deadline (the kernel's TCP keepalive finds a vanished peer). For thousands of peers:
        libzmq cancels a timer by walking every timer of its I/O thread (O(timers),
        `poller_base_t::cancel_timer`), once per connection at the end of its handshake and at
        the first message after each ping, so at 10,000 connections each of those costs a walk
        of 10,000-30,000 timers (registration O(connections²)).
        """
        sock = self._socket(zmq.ROUTER)
        sock.setsockopt(zmq.AFFINITY, 1 << io_thread)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # thousands of engines connect at once: libzmq's backlog of 100 drops their SYNs, and
        # each retries after 1, 3, 7 s... (the kernel caps it at net.core.somaxconn)
        sock.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
        if heartbeat is None:
            sock.setsockopt(zmq.HANDSHAKE_IVL, 0)
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
        else:
            sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat[0])
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat[1])
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
        return sock, self._bind(sock, ip, curve_secret, port)

    def publisher(self, ip: str, curve_secret: str | None = None,
                  port: int | None = None) -> tuple[zmq.Socket, str]:
        sock = self._socket(zmq.PUB)
        return sock, self._bind(sock, ip, curve_secret, port)

    def dealer(self, url: str, identity: bytes | None = None, curve_server_key: str | None = None,
               heartbeat: tuple[int, int] = (HEARTBEAT_MS, HEARTBEAT_TIMEOUT_MS)) -> zmq.Socket:
        sock = self._socket(zmq.DEALER)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        sock.setsockopt(zmq.HEARTBEAT_IVL, heartbeat[0])
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, heartbeat[1])
        return self._connect(sock, url, curve_server_key)

    def subscriber(self, url: str, topic: bytes = b"", curve_server_key: str | None = None) -> zmq.Socket:
        sock = self._socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, topic)
        return self._connect(sock, url, curve_server_key)

    def inbox(self, name: str) -> zmq.Socket:
        """The receiving end of an in-process channel (other threads `outbox` into it)."""
        sock = self._socket(zmq.PULL)
        sock.bind(f"inproc://{name}")
        return sock

    def outbox(self, name: str) -> zmq.Socket:
        sock = self._socket(zmq.PUSH)
        sock.connect(f"inproc://{name}")
        return sock


class Poller:
    """Wait until any of several sockets can be read."""

    def __init__(self, *sockets) -> None:
        self._poller = zmq.Poller()
        for sock in sockets:
            self._poller.register(sock, zmq.POLLIN)

    def add(self, sock) -> None:
        """A socket, or the file descriptor of `notifier` (polled without touching its socket)."""
        self._poller.register(sock, zmq.POLLIN)

    def remove(self, sock) -> None:
        self._poller.unregister(sock)

    def poll(self, timeout_s: float | None) -> set:
        ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        return {sock for sock, _ in self._poller.poll(ms)}


class Refused(ConnectionError):
    """The other end refused this socket's connection at its handshake: nothing can be sent."""


def send(sock, frames: list, track: bool = False):
    """Send without copying large frames; with `track`, returns a tracker done once zmq let go
    of the frames. Never blocks: queues are unbounded, so the only wait would be for a peer that
    refused the handshake (libzmq drops the connection's queue then, and a blocking send waits
    forever).

    Frame by frame with plain int flags: ``send_multipart`` costs two to three times as much per
    message (a ``zmq.Frame`` per part with ``copy=False``, enum flags per part), and small
    frames are copied by pyzmq whatever ``copy`` says.
    """
    try:
        if track:
            return sock.send_multipart(frames, copy=False, track=True, flags=zmq.NOBLOCK)
        if len(frames) == 1:  # most messages
            frame = frames[0]
            _send(sock, frame, _NOBLOCK, type(frame) is bytes and len(frame) < COPY_BELOW)
            return None
        if len(frames) == 2:  # a ROUTER's: the peer's routing id, then one frame
            frame = frames[1]
            _send(sock, frames[0], _MORE, True)
            _send(sock, frame, _NOBLOCK, type(frame) is bytes and len(frame) < COPY_BELOW)
            return None
        put, last = sock.send, len(frames) - 1
        for i, frame in enumerate(frames):
            put(frame, _MORE if i < last else _NOBLOCK,
                copy=type(frame) is bytes and len(frame) < COPY_BELOW)
        return None
    except zmq.Again:
        raise Refused("the other end refused this connection when it was made: the cluster "
                      "key does not match (is the connection file from an earlier run of the "
                      "cluster?)") from None


def tracked(frames: list) -> tuple[list, "zmq.MessageTracker"]:
    """`frames` as zmq frames with one tracker, done once zmq let go of all of them (whichever
    thread sends them)."""
    wrapped = [f if isinstance(f, zmq.Frame) else zmq.Frame(f, track=True) for f in frames]
    return wrapped, zmq.MessageTracker(*wrapped)


def recv(sock, flags: int = 0) -> list:
    """One multipart message, frames as `zmq.Frame` (large ones are not copied)."""
    get = sock.recv
    frame = get(flags, copy=False)
    frames = [frame]
    while frame.more:  # rather than ``recv_multipart``'s getsockopt per frame, an enum each
        frame = get(0, copy=False)
        frames.append(frame)
    return frames


def take(sock, limit: int = 1000, expected: bool = False) -> list:
    """The messages already queued on `sock` (at most `limit`), without blocking, as a list
    (`drain` without a generator). `expected`: its notifier said one came, so the first is
    received without asking (no message after all costs a `zmq.Again`)."""
    taken: list = []
    ask = sock.getsockopt
    if expected:
        try:
            taken.append(recv(sock, _NOBLOCK))
        except zmq.Again:
            return taken
    while len(taken) < limit and ask(_EVENTS) & _POLLIN:
        taken.append(recv(sock))
    return taken


def drain(sock, limit: int = 1000):
    """Yield messages already queued on `sock` without blocking (at most `limit`); asks the
    socket whether one is there rather than ending every batch in a `zmq.Again` exception."""
    for _ in range(limit):
        if not sock.getsockopt(_EVENTS) & _POLLIN:  # ints: enum flags cost a microsecond
            return
        yield recv(sock)


def notifier(sock) -> int:
    """A file descriptor that turns readable when `sock` may have something to read: polling it
    never touches the socket, so one thread can wait on it while another, holding the lock that
    guards `sock`, sends. It only signals a change: whoever uses `sock` checks `readable` after.
    """
    return sock.getsockopt(zmq.FD)


def readable(sock) -> bool:
    """True if a message is waiting on `sock` (never blocks)."""
    return bool(sock.getsockopt(_EVENTS) & _POLLIN)


def watch_connections(sock) -> zmq.Socket:
    """A socket on which `connections(monitor)` counts each connection of `sock` that
    completed its handshake (the first, and every reconnection after a peer restarts)."""
    return sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)


def connections(monitor) -> int:
    """Handshakes reported on `monitor` since the last call (never blocks)."""
    count = 0
    for _ in drain(monitor):
        count += 1
    return count


def is_unreachable(exc: BaseException) -> bool:
    """True when a ROUTER send failed because the peer is gone."""
    return isinstance(exc, zmq.ZMQError) and exc.errno == zmq.EHOSTUNREACH
