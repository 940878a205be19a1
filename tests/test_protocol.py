"""The wire: signing, and refusing what is unsigned, forged, truncated or malformed."""

from __future__ import annotations

import msgpack
import pytest

from ipcluster import protocol
from ipcluster.protocol import DELIM, BadMessage, Signer, decode, encode

KEY = bytes(range(32))


def frames(header=None, content=b"payload", buffers=()):
    return encode(Signer(KEY), header or {"kind": "apply", "id": "m-1"}, content, list(buffers))


def test_round_trip_with_routing_ids_and_buffers():
    sent = frames(content=b"c", buffers=[b"x" * 10, bytearray(b"y" * 3)])
    msg = decode(Signer(KEY), [b"route-a", *sent])
    assert msg.route == [b"route-a"]
    assert msg.kind == "apply" and msg.header["buffers"] == [10, 3]
    assert bytes(msg.content) == b"c" and [bytes(b) for b in msg.buffers] == [b"x" * 10, b"y" * 3]


def test_wrong_key_is_refused():
    with pytest.raises(BadMessage, match="bad signature"):
        decode(Signer(b"k" * 32), frames())


@pytest.mark.parametrize("content", [b"payload", b"p" * protocol.INLINE])  # one frame, or two
@pytest.mark.parametrize("where", ["signature", "header", "content"])
def test_a_changed_byte_in_a_signed_frame_is_refused(content, where):
    sent = frames(content=content)
    index, at = {"signature": (0, len(DELIM)), "header": (0, protocol.HEAD),
                 "content": (len(sent) - 1, -1)}[where]
    tampered = bytearray(sent[index])
    tampered[at] ^= 1
    sent[index] = bytes(tampered)
    with pytest.raises(BadMessage, match="bad signature"):
        decode(Signer(KEY), sent)


def test_a_small_message_is_one_frame_and_large_content_its_own_frame_never_copied():
    small, large = frames(content=b"c" * 100), frames(content=bytearray(protocol.INLINE))
    assert len(small) == 1 and bytes(decode(Signer(KEY), small).content) == b"c" * 100
    assert len(large) == 2 and decode(Signer(KEY), large).content is large[1]


def test_added_or_dropped_buffers_are_refused():
    sent = frames(buffers=[b"a" * 5])
    with pytest.raises(BadMessage, match="buffer lengths"):
        decode(Signer(KEY), sent + [b"extra"])
    with pytest.raises(BadMessage, match="buffer lengths"):
        decode(Signer(KEY), sent[:-1])


def test_truncated_and_undelimited_messages_are_refused():
    with pytest.raises(BadMessage, match="truncated"):
        decode(Signer(KEY), frames(content=b"c" * protocol.INLINE)[:1])
    with pytest.raises(BadMessage, match="bad signature"):
        decode(Signer(KEY), [frames()[0][:-1]])
    with pytest.raises(BadMessage, match="delimiter"):
        decode(Signer(KEY), [b"a", b"b", b"c"])


def test_a_signed_header_of_an_unknown_kind_is_refused():
    with pytest.raises(BadMessage, match="unknown message kind"):
        decode(Signer(KEY), frames({"kind": "format_disk", "id": "x"}))
    signer = Signer(KEY)
    h = msgpack.packb([1, 2, 3])
    signed = len(h).to_bytes(4, "little") + h
    with pytest.raises(BadMessage, match="unknown message kind"):
        decode(signer, [DELIM + signer.sign(signed) + signed])


def test_signature_covers_the_split_between_header_and_content():
    sent = bytearray(frames()[0])  # the header's size, one less: its last byte as content's
    size = int.from_bytes(sent[protocol.HEAD - 4:protocol.HEAD], "little")
    sent[protocol.HEAD - 4:protocol.HEAD] = (size - 1).to_bytes(4, "little")
    with pytest.raises(BadMessage, match="bad signature"):
        decode(Signer(KEY), [bytes(sent)])


def test_short_keys_are_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer(b"short")


def test_every_kind_names_a_known_sender_and_content():
    for kind in protocol.KINDS.values():
        assert kind.sender in {"client", "controller", "engine", protocol.ANY}
        assert kind.content in {"pickle", "msgpack", "none"}


def test_ids_are_unique_across_instances():
    a, b = protocol.Ids(), protocol.Ids()
    ids = {a() for _ in range(100)} | {b() for _ in range(100)}
    assert len(ids) == 200


# -- every kind defined once: records and handler tables ------------------------------------

def test_each_receiver_has_one_handler_per_kind_addressed_to_it():
    from ipcluster import session
    from ipcluster.controller import server
    from ipcluster.engine import control

    # the controller's loop unwraps a batch into the messages it carries (`Controller._handle`)
    assert set(server.HANDLERS) | {"batch"} == protocol.kinds_for("controller")
    assert set(control.HANDLERS) == protocol.kinds_for("engine")
    assert set(session.HANDLERS) == protocol.kinds_for("client")
    assert server.CLIENT_KINDS == {"hello", "query", "apply", "control", "batch"}


def test_an_apply_record_round_trips_and_names_the_task_of_each_engine():
    direct = protocol.Apply(["t1", "t2"], [3, 5], label="sweep", timeout=2.5)
    header = direct.header("m-1")
    assert header["kind"] == "apply" and "retries" not in header  # defaults stay off the wire
    wire = msgpack.unpackb(msgpack.packb(header))
    assert protocol.Apply.from_header(wire) == direct and protocol.Apply.task_for(wire, 5) == "t2"
    with pytest.raises(BadMessage, match="engine 4 is not among the targets"):
        protocol.Apply.task_for(wire, 4)
    balanced = protocol.Apply(["t9"], None, True, retries=2, priority=1.5)
    assert protocol.Apply.task_for(balanced.header("m-2"), 0) == "t9"
    # an engine checks what picks its task: whatever else a header says, it raises BadMessage
    for bad in ({**wire, "tasks": "t1"}, {**wire, "tasks": [1, 2]}, {**wire, "targets": None},
                {**wire, "targets": [3]}, {**wire, "targets": "35"}, {"kind": "apply"}):
        with pytest.raises(BadMessage):
            protocol.Apply.task_for(bad, 5)


@pytest.mark.parametrize("change, error", [
    ({"tasks": []}, "'tasks' must be a list of task ids"),
    ({"targets": [1, "2"]}, "'targets' must be a list of engine ids"),
    ({"balanced": True}, "exactly one task id"),
    ({"targets": [1]}, "one task id per target"),
    ({"priority": True}, "'priority' must be a number"),
    ({"retries": -1}, "'retries' must be an int >= 0"),
    ({"label": 3}, "'label' must be a string"),
])
def test_a_malformed_apply_is_refused_saying_what_was_expected(change, error):
    header = {**protocol.Apply(["a", "b"], [0, 1]).header("m"), **change}
    with pytest.raises(BadMessage, match=error):
        protocol.Apply.from_header(header)


def test_a_result_record_round_trips_and_refuses_a_bad_status():
    result = protocol.Result("t1", 0, "ok", started=1.0, completed=1.5)
    assert protocol.Result.from_header(result.header("m")) == result and result.duration == 0.5
    with pytest.raises(BadMessage, match="'status' must be"):
        protocol.Result.from_header({**result.header("m"), "status": "fine"})


@pytest.mark.parametrize("size", [16, 32, 64, 65, 200])  # keys longer than a block are hashed
def test_the_signature_is_hmac_sha256_of_what_it_signs(size):
    import hashlib
    import hmac

    key = bytes(i * 7 % 256 for i in range(size))
    for parts in [(b"",), (b"ab", b"c"), (b"h" * 300, memoryview(b"c" * 70_000))]:
        expected = hmac.digest(key, b"".join(parts), hashlib.sha256)
        assert Signer(key).sign(*parts) == expected
