"""The direct path's wire (ipcluster/direct.py): large buffers split into 1 MiB data messages,
put back in place as they arrive (in any order), joined to their message by id."""

from __future__ import annotations

import numpy as np
import pytest

from ipcluster import direct, protocol, serialize

KEY = bytes(range(32))


def test_large_buffers_leave_the_message_and_come_back_in_place_in_any_order():
    array, small = np.arange(3 * direct.CHUNK // 8 + 5, dtype=np.float64), np.zeros(10, np.uint8)
    content, buffers = serialize.dumps((array, small, array[::-1].copy()))
    header = {"kind": "apply", "id": "m1"}
    kept, large = direct.split(header, buffers, 256 * 1024)
    assert [len(memoryview(k).cast("B")) for k in kept] == [0, 0]  # the small one stayed in band
    frames = protocol.encode(protocol.Signer(KEY), header, content, kept)
    msg = protocol.decode(protocol.Signer(KEY), frames)

    pending = direct.Pending()
    chunks = direct.chunks(large)
    assert len(chunks) == 2 * 4 and all(len(c) <= direct.CHUNK for _, c in chunks)
    assert pending.message("m1", msg) is None  # the message first: it waits for its data
    for fields, chunk in reversed(chunks[1:]):
        assert pending.chunk({"parent": "m1", **fields}, [bytes(chunk)]) is None
    (item, got) = pending.chunk({"parent": "m1", **chunks[0][0]}, [bytes(chunks[0][1])])
    assert item is msg
    out = serialize.loads(msg.content, direct.join(msg.header, msg.buffers, got))
    assert np.array_equal(out[0], array) and np.array_equal(out[2], array[::-1])
    assert out[0].flags.writeable


def test_data_before_its_message_waits_and_stale_halves_are_dropped():
    pending = direct.Pending()
    large = [memoryview(bytes(range(256)) * 8192)]  # 2 MiB
    (fields, chunk), rest = direct.chunks(large)[0], direct.chunks(large)[1:]
    pending.chunk({"parent": "m2", **fields}, [chunk])
    for f, c in rest:
        assert pending.chunk({"parent": "m2", **f}, [c]) is None  # complete, no message yet
    assert pending.message("m2", "the message") is not None
    pending.chunk({"parent": "m3", **fields}, [chunk])  # half of m3, then its sender died
    pending.message("m4", "waits forever")
    assert pending.expired(0) == ["waits forever"]
    assert not pending.assembly._parts


def test_malformed_direct_entries_and_chunks_are_refused():
    signer = protocol.Signer(KEY)
    for direct_entry in ([[0, 10]], [[5, 10]], [["x", 1]], "all"):  # frame 0 is not empty, ...
        frames = protocol.encode(signer, {"kind": "result", "id": "r", "direct": direct_entry},
                                 b"", [b"abc"])
        with pytest.raises(protocol.BadMessage, match="bad direct buffers"):
            protocol.decode(signer, frames)
    assembly = direct.Assembly()
    with pytest.raises(ValueError, match="out of place"):
        assembly.add({"parent": "p", "sizes": [4], "at": [0, 2]}, [b"abcd"])
    with pytest.raises(ValueError, match="malformed"):
        assembly.add({"parent": "p", "sizes": [-1], "at": [0, 0]}, [b"a"])


def test_the_data_port_range_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv(direct.PORTS_VARIABLE, "40000-40009")
    assert direct.port_range() == (40000, 40010)
    monkeypatch.setenv(direct.PORTS_VARIABLE, "40009-40000")
    with pytest.raises(ValueError, match="must be a port range like 40000-40999"):
        direct.port_range()


def test_each_end_of_a_link_has_a_handler_for_exactly_the_kinds_sent_to_it():
    from ipcluster import links
    from ipcluster.engine import dataport

    assert set(dataport.HANDLERS) == protocol.kinds_for(protocol.DATA_PORT) == {"link", "data"}
    assert set(links.HANDLERS) == protocol.kinds_for(protocol.LINKS) == {"link", "data"}


def test_a_chain_visits_each_host_once_and_a_forward_list_is_checked():
    urls = ["tcp://10.0.0.2:5", "tcp://10.0.0.1:7", "tcp://10.0.0.2:6", "tcp://10.0.0.1:8"]
    assert direct.chain(urls) == ["tcp://10.0.0.1:7", "tcp://10.0.0.1:8", "tcp://10.0.0.2:5",
                                  "tcp://10.0.0.2:6"]  # engines of one host are neighbours
    assert direct.forward({}) == [] and direct.forward({"forward": urls}) == urls
    for bad in ("tcp://a:1", ["ipc:///tmp/x"], ["tcp://a:1/../x"], [1], ["tcp://a:1"] * 5000):
        with pytest.raises(ValueError, match="malformed forward list"):
            direct.forward({"forward": bad})


def test_an_engine_passes_data_on_and_skips_a_next_engine_that_never_answers(monkeypatch, caplog):
    """A chain [unreachable, b]: the first engine gives up on the unreachable one after
    ONWARD_TIMEOUT (dropping what it queued for it) and passes the data to b instead."""
    import socket
    import types

    from ipcluster import transport
    from ipcluster.engine import dataport
    from tests.conftest import wait_until

    monkeypatch.setattr(dataport, "ONWARD_TIMEOUT", 0.5)
    signer, ids = protocol.Signer(KEY), protocol.Ids()
    info = types.SimpleNamespace(engine_url="tcp://127.0.0.1:9", curve_secret_key="",
                                 curve_public_key="", max_message_size=-1)
    context = transport.Context(KEY)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        nobody = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    try:
        a, b = (dataport.DataPort(context, info, signer, protocol.Replay()) for _ in range(2))
        large = [memoryview(bytes(range(256)) * 8192)]  # 2 MiB: two chunks

        def chunk(n: int) -> list:
            fields, data = direct.chunks(large)[n]
            header = {"kind": "data", "id": ids(), "parent": "m9", **fields, "forward": [nobody, b.url]}
            return [b"client", *protocol.encode(signer, header, b"", [data])]

        a.receive(chunk(0), ids)  # queued for the engine that never answers
        assert a.onward[nobody][1] == "opening"
        wait_until(lambda: a.check_onward() or a.onward[nobody][1] == "failed", timeout=10)
        assert caplog.text.count("did not answer within") == 1
        a.receive(chunk(1), ids)  # now straight to b

        def arrived():
            for frames in transport.drain(b.sock):
                b.receive(frames, ids)  # a's link, answered, then the chunk
            return "m9" in b.pending.assembly._parts

        wait_until(arrived, timeout=10)
        assert b.pending.assembly._parts["m9"][1] == direct.CHUNK  # the second chunk of two
        wait_until(lambda: a.check_onward() or a.onward[b.url][1] == "ok", timeout=10)
    finally:
        context.close()
