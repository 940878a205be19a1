"""Exactly-once delivery: what the controller cannot send a client while it is away, it keeps,
and sends (in order, once) when the client's next message shows it is back."""

from __future__ import annotations

import subprocess
import sys

import ipcluster as ipp
from ipcluster import connection, transport
from ipcluster.batch import unbatch
from ipcluster.protocol import Ids, Signer, decode, encode, pack
from tests.conftest import wait_until


def wait_for_flag(path):
    import os
    import time
    print("started", flush=True)
    while not os.path.exists(path):
        time.sleep(0.02)
    print("done", flush=True)
    return 42


def test_a_result_finished_while_its_client_is_away_arrives_once_when_it_is_back(served, tmp_path):
    engine = subprocess.Popen([sys.executable, "-m", "ipcluster", "engine", "--connection-file",
                               str(served.path)], stderr=subprocess.DEVNULL)
    try:
        rc = ipp.Client(served.path)
        rc.wait_for_engines(1, timeout=30)
        flag = tmp_path / "flag"
        ar = rc[0].apply_async(wait_for_flag, str(flag))
        wait_until(lambda: "started" in ar.stdout)
        identity = f"client-{rc._session.ids.session}".encode()
        rc.close()  # the client goes away with its task running
        ctl = served.ctl
        probe = encode(ctl.signer, {"kind": "event", "id": ctl.ids()}, pack({}))
        wait_until(lambda: not served.call(lambda: ctl.outbox.send(ctl.clients, identity, probe)))
        flag.touch()  # the task finishes while nobody can receive its result
        wait_until(lambda: served.call(lambda: len(ctl.undelivered.by_client.get(identity, ()))) == 2)

        info = connection.read(served.path)
        signer, ids, context = Signer(info.key_bytes), Ids(), transport.Context(info.key_bytes)
        try:
            back = context.dealer(info.client_url, identity=identity)  # the same client, back
            transport.send(back, encode(signer, {"kind": "hello", "id": ids()}))
            kinds = []
            while "hello_reply" not in kinds:  # output and result may come in one batch
                for msg in unbatch(decode(signer, transport.recv(back))):
                    kinds.append(msg.kind)
                    if msg.kind != "hello_reply":
                        assert msg.header["parent"] == ar.msg_ids[0]
            assert kinds == ["output", "result", "hello_reply"]  # in order, once, before the reply
            assert served.call(lambda: ctl.undelivered.by_client) == {}
        finally:
            context.close()
    finally:
        engine.terminate()
        engine.wait(timeout=10)
