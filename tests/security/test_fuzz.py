"""Random, truncated, oversized, forged, replayed and malformed messages thrown at the
controller's two sockets and at an engine: afterwards both still serve a normal client
correctly, their memory is bounded, and nothing was executed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import psutil
import ipcluster
from ipcluster import connection, protocol, serialize, transport
from ipcluster.protocol import DELIM, Signer, encode
from tests.conftest import wait_until

N = 100_000
SEED = 20261125


def mark(path):
    with open(path, "a") as f:
        f.write("x")


def messages(rng: random.Random, key: bytes, side_effect: str, n: int):
    """`n` hostile messages of every sort, deterministic for a seed."""
    good = Signer(key)
    forger = Signer(bytes(rng.getrandbits(8) for _ in range(32)))
    content, _ = serialize.dumps_call(mark, (side_effect,), {})
    valid = encode(good, {"kind": "query", "id": "fuzz-valid"}, protocol.pack({}))
    kinds = list(protocol.KINDS)
    for i in range(n):
        sort = i % 8
        if sort == 0:  # random frames
            yield [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 6))]
        elif sort == 1:  # random frames after a delimiter
            yield [DELIM] + [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(0, 6))]
        elif sort == 2:  # a forged apply that would run code
            yield encode(forger, {"kind": "apply", "id": f"f{i}", "tasks": [f"t{i}"],
                                  "targets": None, "balanced": True}, content)
        elif sort == 3:  # truncated valid messages
            yield valid[: rng.randrange(1, len(valid))]
        elif sort == 4:  # replays of one valid message
            yield valid
        elif sort == 5:  # a flipped byte in a valid signed message
            frames = list(valid)
            j = rng.randrange(1, len(frames))
            b = bytearray(frames[j]) or bytearray(b"\0")
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            frames[j] = bytes(b)
            yield frames
        elif sort == 6:  # signed, of any kind, with fields of the wrong type (key holder bugs)
            header = {"kind": rng.choice(kinds), "id": f"s{i}",
                      rng.choice(["tasks", "targets", "parent", "engine", "balanced"]):
                      rng.choice([None, 7, "x", [1, "a"], {"k": 1}, -1, 2**40])}
            yield encode(good, header, rng.randbytes(rng.randrange(0, 32)))
        else:  # oversized header frame, or a signed result for a task nobody asked for
            if rng.random() < 0.5:
                yield [DELIM, rng.randbytes(protocol.SIGNATURE + protocol.MAX_HEADER + 1), b""]
            else:
                yield encode(good, {"kind": "result", "id": f"r{i}", "parent": f"nobody-{i}",
                                    "status": "ok"}, b"")


def throw(sock, msgs, deadline: float) -> int:
    sent = 0
    for frames in msgs:
        try:
            transport.send(sock, frames)
        except transport.ZMQError:
            pass
        sent += 1
        if time.monotonic() > deadline:
            break
    return sent


def test_fuzz_the_controller_sockets(cluster, tmp_path):
    info = connection.read(cluster.connection_file)
    # a patient client: on a loaded machine the flood can keep the controller busy for a while
    rc = ipcluster.Client(cluster.connection_file, timeout=60)
    side_effect = str(tmp_path / "executed")
    controller = psutil.Process(cluster.controller.pid)
    rss_before = controller.memory_info().rss
    ctx = transport.Context(info.key_bytes)  # admitted at connect: the fuzz tests the messages
    try:
        rng = random.Random(SEED)
        t0 = time.monotonic()
        for url in (info.client_url, info.engine_url):
            sock = ctx.dealer(url)
            sent = throw(sock, messages(rng, info.key_bytes, side_effect, N // 2), t0 + 50)
            assert sent == N // 2
        # a normal client is served correctly once the controller has read them all
        assert rc.load_balanced_view().map_sync(lambda x: x + 1, range(100)) == list(range(1, 101))
        assert rc[:].apply_sync(os.getpid) == rc[:].apply_sync(os.getpid)
        elapsed = time.monotonic() - t0
    finally:
        ctx.close()
        rc.close()
    assert elapsed < 60, f"{N} messages took {elapsed:.1f} s"
    assert not os.path.exists(side_effect)
    # within 50 MiB of where it started, once what the flood freed is given back (trimmed)
    wait_until(lambda: controller.memory_info().rss - rss_before < 50 << 20, timeout=30)
    assert controller.is_running()


def test_fuzz_an_engine(tmp_path):
    """A fake controller accepts an engine, throws the fuzz at it, then asks for real work."""
    key = connection.new_key()
    signer = Signer(bytes.fromhex(key))
    ctx = transport.Context(bytes.fromhex(key))
    router, url = ctx.router("127.0.0.1")
    path = tmp_path / "fake" / "connection.json"
    connection.write(path, connection.ConnectionInfo("fake", url, url, url, key))
    engine = subprocess.Popen([sys.executable, "-m", "ipcluster", "engine", "--connection-file", str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    side_effect = str(tmp_path / "executed")
    try:
        frames = transport.recv(router) if router in transport.Poller(router).poll(30) else None
        assert frames is not None, "the engine did not try to register"
        registration = protocol.decode(signer, frames)
        identity = registration.route[0]
        transport.send(router, [identity, *encode(signer, {"kind": "register_reply", "id": "rr",
                                                           "parent": registration.header["id"]},
                                                  protocol.pack({"id": 0}))])
        proc = psutil.Process(engine.pid)
        rss_before = proc.memory_info().rss
        rng = random.Random(SEED + 1)
        sent = 0
        for msg in messages(rng, bytes.fromhex(key), side_effect, N // 4):
            try:
                transport.send(router, [identity, *msg])
            except transport.ZMQError:
                engine.terminate()
                raise AssertionError(f"the engine went away after {sent} messages: "
                                     f"{engine.stderr.read().decode()[-3000:]}") from None
            sent += 1
        content, buffers = serialize.dumps_call(pow, (2, 10), {})
        transport.send(router, [identity, *encode(signer, {"kind": "apply", "id": "real", "tasks": ["real-t"],
                                                           "targets": None, "balanced": True},
                                                  content, buffers)])
        deadline = time.monotonic() + 60
        result = None
        while result is None and time.monotonic() < deadline:
            if router in transport.Poller(router).poll(1):
                msg = protocol.decode(signer, transport.recv(router))
                if msg.kind == "result" and msg.header["parent"] == "real-t":
                    result = serialize.loads(msg.content, msg.buffers)
        assert result == 1024
        assert engine.poll() is None and not os.path.exists(side_effect)
        assert proc.memory_info().rss - rss_before < 64 << 20
    finally:
        engine.terminate()
        try:
            engine.wait(10)
        except subprocess.TimeoutExpired:
            engine.kill()
            engine.wait()
        ctx.close()
