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
