"""Only the key holder gets in: a wrong key cannot run code, register an engine or read
results; replayed, stale and oversized messages are refused; connection files stay private."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time

import psutil
import pytest

import ipcluster
from ipcluster import connection, protocol, serialize, transport
from ipcluster.protocol import Signer, encode
from tests.conftest import wait_until


def mark(path):
    with open(path, "a") as f:
        f.write("x")
    return "marked"


def apply_frames(signer, path, msg_id="m-1", task="t-1", **header):
    content, buffers = serialize.dumps_call(mark, (str(path),), {})
    head = {"kind": "apply", "id": msg_id, "tasks": [task], "targets": None, "balanced": True, **header}
    return encode(signer, head, content, buffers)


def recv_within(sock, seconds: float):
    if sock in transport.Poller(sock).poll(seconds):
        return transport.recv(sock)
    return None


@pytest.fixture
def raw(cluster):
    """A bare DEALER on the controller's client socket (admitted: its context proves the key),
    and the cluster's connection info."""
    info = connection.read(cluster.connection_file)
    ctx = transport.Context(info.key_bytes)
    yield ctx.dealer(info.client_url), info
    ctx.close()


def wrong_key_file(cluster, tmp_path):
    info = dataclasses.replace(connection.read(cluster.connection_file), key=connection.new_key())
    path = tmp_path / "wrong.json"
    connection.write(path, info)
    return path


def test_a_wrong_key_cannot_connect_run_code_or_read_results(cluster, rc, raw, tmp_path):
    sock, info = raw
    with pytest.raises(ipcluster.ControllerLost, match="no answer|key does not match"):
        ipcluster.Client(wrong_key_file(cluster, tmp_path), timeout=1)
    side_effect = tmp_path / "ran"
    transport.send(sock, apply_frames(Signer(connection.new_key().encode()), side_effect))
    done = rc.load_balanced_view().apply_async(lambda: "after")  # the controller has moved on
    assert done.get(timeout=10) == "after" and not side_effect.exists()
    assert recv_within(sock, 0.5) is None  # and said nothing to the forger
    stolen = encode(Signer(b"w" * 32), {"kind": "control", "id": "x"},
                    protocol.pack({"action": "fetch", "tasks": done.msg_ids}))
    transport.send(sock, stolen)
    assert recv_within(sock, 1.0) is None


def test_peers_without_the_key_hear_no_event_and_cannot_make_the_controller_hold_frames(
        cluster, rc):
    info = connection.read(cluster.connection_file)
    controller = psutil.Process(cluster.controller.pid)
    refused = rc._session.request("query", {})["refused"]
    insider = transport.Context(info.key_bytes)
    outsiders = [transport.Context(bytes.fromhex(connection.new_key())), transport.Context()]
    try:
        heard = insider.subscriber(info.pub_url)
        listeners = [ctx.subscriber(info.pub_url) for ctx in outsiders]
        rss = controller.memory_info().rss
        for ctx in outsiders:  # 2 x 100 MB, under max_message_size: libzmq would buffer them
            with contextlib.suppress(transport.Refused):  # if refused before it was sent
                transport.send(ctx.dealer(info.client_url), [bytes(100 << 20)])
        beats = []
        wait_until(lambda: beats.extend(transport.drain(heard)) or len(beats) >= 2)
        wait_until(lambda: rc._session.request("query", {})["refused"] >= refused + 2)
        assert all(not transport.Poller(sock).poll(0) for sock in listeners)
        growth = controller.memory_info().rss - rss
        assert growth < 50 << 20, f"the controller holds {growth / 2**20:.0f} MiB more"
    finally:
        for ctx in (insider, *outsiders):
            ctx.close()


def test_a_wrong_key_cannot_register_an_engine(cluster, tmp_path, rc):
    path = wrong_key_file(cluster, tmp_path)
    code = ("import sys; from ipcluster import connection; from ipcluster.engine.main import "
            "EngineOptions, run; sys.exit(run(connection.read(sys.argv[1]), "
            "EngineOptions(register_timeout=1)))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=60)
    # refused at its handshake: it says so if that came before its registration was sent
    assert out.returncode == 1 and ("no reply from the controller" in out.stderr
                                    or "the cluster key does not match" in out.stderr)
    assert rc._refresh_ids() == [0, 1, 2, 3]


def test_a_replayed_request_runs_once(raw, tmp_path, rc):
    sock, info = raw
    side_effect = tmp_path / "ran"
    frames = apply_frames(Signer(info.key_bytes), side_effect, msg_id="replay-1", task="replay-t")
    transport.send(sock, frames)
    reply = recv_within(sock, 10)
    assert reply is not None
    assert protocol.decode(Signer(info.key_bytes), reply).header["status"] == "ok"
    transport.send(sock, frames)  # the very same frames again
    same_id = apply_frames(Signer(info.key_bytes), side_effect, msg_id="replay-1", task="replay-t2")
    transport.send(sock, same_id)
    assert recv_within(sock, 1.0) is None
    assert side_effect.read_text() == "x"


def test_a_stale_message_is_refused(raw, tmp_path):
    sock, info = raw
    side_effect = tmp_path / "ran"
    old = apply_frames(Signer(info.key_bytes), side_effect, msg_id="old-1", task="old-t",
                       t=time.time() - 3600)
    transport.send(sock, old)
    assert recv_within(sock, 1.0) is None and not side_effect.exists()


def test_a_signed_but_malformed_request_is_answered_with_an_error(raw):
    sock, info = raw
    signer = Signer(info.key_bytes)
    bad = encode(signer, {"kind": "apply", "id": "bad-1", "tasks": "not a list", "targets": None})
    transport.send(sock, bad)
    reply = protocol.decode(signer, recv_within(sock, 10))
    assert reply.kind == "error" and "'tasks' must be a list" in protocol.unpack(reply.content)["evalue"]
    nobody = encode(signer, {"kind": "control", "id": "bad-2"}, protocol.pack({"action": "format"}))
    transport.send(sock, nobody)
    reply = protocol.decode(signer, recv_within(sock, 10))
    assert reply.kind == "error" and "unknown control action" in protocol.unpack(reply.content)["evalue"]


def test_an_oversized_call_is_refused_before_it_is_sent_and_says_what_to_do():
    import numpy as np

    cluster = ipcluster.Cluster(n=1, max_message_size=1 << 20)
    with cluster as rc:
        assert connection.read(cluster.connection_file).max_message_size == 1 << 20
        with pytest.raises(ipcluster.SerializationError, match="max_message_size of 1,048,576") as sent:
            rc[0].push({"big": np.zeros(1 << 18)})  # 2 MiB
        assert "send it in pieces (view.scatter" in str(sent.value)
        assert "Cluster(..., max_message_size=4194304) or `ipcluster start --max-message-size 4194304`" in str(sent.value)
        with pytest.raises(ipcluster.RemoteError, match="cannot send the result") as result:
            rc[0].apply_sync(lambda: bytearray(2 << 20))
        assert "return less" in str(result.value) and "pull it in pieces" in str(result.value)
        assert rc[0].apply_sync(lambda: "fine") == "fine"


def test_connection_files_and_directories_are_private(cluster):
    assert os.stat(cluster.connection_file).st_mode & 0o777 == 0o600
    assert os.stat(cluster.cluster_dir).st_mode & 0o777 == 0o700
    assert len(connection.read(cluster.connection_file).key_bytes) == 32


def test_a_refused_handshake_before_the_first_send_is_a_controller_lost(cluster, monkeypatch):
    """The controller may refuse a wrong key before the client's first message goes out: the
    send then finds no connection (libzmq dropped it). The user sees ControllerLost saying
    why, not the transport layer's exception."""
    def refused(sock, frames, track=False):
        raise transport.Refused("the other end refused this connection when it was made: the "
                                "cluster key does not match")
    monkeypatch.setattr(transport, "send", refused)
    with pytest.raises(ipcluster.ControllerLost, match="key does not match.*connection file"):
        ipcluster.Client(cluster.connection_file, timeout=1)
