"""Transport layer: the only module that imports zmq.

Sockets are made here with the options every role needs (no silent drops at the high-water
mark, mandatory routing so a vanished peer is an error, transport heartbeats), and everything
above speaks in lists of frames. Frames are sent with ``copy=False`` so large buffers are never
copied on the way out.
"""

from __future__ import annotations

import zmq

Again = zmq.Again
ZMQError = zmq.ZMQError
Frame = zmq.Frame

HEARTBEAT_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
LISTEN_BACKLOG = 4096


def curve_keypair() -> tuple[str, str]:
    """A new CurveZMQ (public, secret) key pair, as Z85 text."""
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


def uses_curve(sock) -> bool:
    """True if `sock` encrypts with CurveZMQ (as server or client)."""
    return sock.getsockopt(zmq.MECHANISM) == zmq.CURVE


class Context:
    """Owns a zmq context and every socket made from it; `close()` closes them all.

    With `curve_secret` (servers) or `curve_server_key` (clients), sockets encrypt with
    CurveZMQ; a peer without the server's public key cannot connect.
    """

    def __init__(self) -> None:
        self._ctx = zmq.Context()

    def close(self, linger_ms: int = 0) -> None:
        self._ctx.destroy(linger=linger_ms)

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        return sock

    def _bind(self, sock: zmq.Socket, ip: str, curve_secret: str | None, port: int | None) -> str:
        if curve_secret:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve_secret.encode())
        if port:  # a restarted controller takes the ports its engines and clients know
            sock.bind(f"tcp://{ip}:{port}")
        else:
            port = sock.bind_to_random_port(f"tcp://{ip}")
        return f"tcp://{ip}:{port}"

    def _connect(self, sock: zmq.Socket, url: str, curve_server_key: str | None) -> zmq.Socket:
        if curve_server_key:
            public, secret = zmq.curve_keypair()
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve_server_key.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        sock.connect(url)
        return sock

    def router(self, ip: str, curve_secret: str | None = None, max_message_size: int = -1,
               peer_queue: int = 0, port: int | None = None) -> tuple[zmq.Socket, str]:
        """A ROUTER bound to a free port on `ip`; returns it and its URL.

        A peer sending a frame over `max_message_size` bytes is disconnected before the frame
        is held in memory; `peer_queue` bounds the messages queued per peer (0: no bound), so
        a flooding peer is slowed by TCP back-pressure while others are served.
        """
        sock = self._socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # thousands of engines connect at once: libzmq's backlog of 100 drops their SYNs, and
        # each retries after 1, 3, 7 s... (the kernel caps it at net.core.somaxconn)
        sock.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
        sock.setsockopt(zmq.RCVHWM, peer_queue)
        return sock, self._bind(sock, ip, curve_secret, port)

    def publisher(self, ip: str, curve_secret: str | None = None,
                  port: int | None = None) -> tuple[zmq.Socket, str]:
        sock = self._socket(zmq.PUB)
        return sock, self._bind(sock, ip, curve_secret, port)

    def dealer(self, url: str, identity: bytes | None = None,
               curve_server_key: str | None = None) -> zmq.Socket:
        sock = self._socket(zmq.DEALER)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
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

    def poll(self, timeout_s: float | None) -> set:
        ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        return {sock for sock, _ in self._poller.poll(ms)}


def send(sock, frames: list, track: bool = False):
    """Send without copying; with `track`, returns a tracker done once zmq let go of the frames."""
    return sock.send_multipart(frames, copy=False, track=track)


def recv(sock) -> list:
    """One multipart message, frames as `zmq.Frame` (large ones are not copied)."""
    return sock.recv_multipart(copy=False)


def drain(sock, limit: int = 1000):
    """Yield messages already queued on `sock` without blocking (at most `limit`); asks the
    socket whether one is there rather than ending every batch in a `zmq.Again` exception."""
    for _ in range(limit):
        if not sock.get(zmq.EVENTS) & zmq.POLLIN:
            return
        yield sock.recv_multipart(copy=False)


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
