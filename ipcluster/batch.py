"""Messages layer: several messages for one receiver as one signed ``batch`` message.

When one turn of the controller's loop has several results and output for one client, or
several tasks for one engine, it sends them as one message: one send, one wake-up of each
side's zmq thread and one signature check on receipt instead of one per message::

    [DELIM, signature | batch header, content]
                                         '- msgpack list, in order, of each message's
                                            [signature | header, content], as it was signed

Only messages without buffer frames are batched (a task's or a result's large buffers travel
in messages of their own, never copied). The batch's signature covers every byte of its
messages, so the receiver checks it once and does not check theirs again; each message keeps
its own id, and the receiver's replay window sees every one of them, as if it came alone.
"""

from __future__ import annotations

import msgpack

from ipcluster.protocol import (
    KINDS, SIGNATURE, BadMessage, Message, Replay, Signer, encode, pack as packed,
)

KIND = "batch"


def batchable(frames: list) -> bool:
    """True for a message ``[DELIM, signature | header, content]``: no buffer frames."""
    return len(frames) == 3


def _raw(frame):
    return getattr(frame, "buffer", frame)  # a zmq frame's memory, or bytes as they are


def pack(signer: Signer, msg_id: str, messages: list) -> list:
    """One signed message carrying `messages` (each ``[DELIM, signature | header, content]``)."""
    content = packed([[_raw(f[1]), _raw(f[2])] for f in messages])
    return encode(signer, {"kind": KIND, "id": msg_id, "count": len(messages)}, content)


def unbatch(msg: Message, replay: Replay | None = None, dropped=None) -> list[Message]:
    """The messages of a received (and so already checked) ``batch``, in order; any other
    message alone. Raises `BadMessage` if the batch is malformed; a message of it seen before
    is left out and reported to `dropped` (a callable taking the `BadMessage`), the others kept,
    as if each had come alone."""
    if msg.kind != KIND:
        return [msg]
    try:
        items = msgpack.unpackb(_raw(msg.content))
    except Exception as exc:
        raise BadMessage(f"batch: content is not msgpack: {exc}") from None
    if not isinstance(items, list) or len(items) != msg.header.get("count"):
        raise BadMessage(f"batch: expected a list of {msg.header.get('count')!r} messages")
    out = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(f, bytes) for f in item)
                and len(item[0]) > SIGNATURE):
            raise BadMessage("batch: each message must be [signature | header, content]")
        try:
            header = msgpack.unpackb(item[0][SIGNATURE:])
        except Exception as exc:
            raise BadMessage(f"batch: a header is not msgpack: {exc}") from None
        if not isinstance(header, dict) or header.get("kind") not in KINDS or header["kind"] == KIND:
            raise BadMessage(f"batch: a message of kind {header!r:.60} cannot be batched")
        if not isinstance(header.get("id"), str):
            raise BadMessage("batch: a message has no id")
        if any(k in header for k in ("buffers", "segments", "direct")):
            raise BadMessage("batch: a batched message has no buffers")
        out.append(Message(msg.route, header, item[1], [], item))
    if replay is None:
        return out
    fresh = []
    for m in out:  # only once the whole batch is known good
        if replay.first_sighting(m.header["id"]):
            fresh.append(m)
        elif dropped is not None:
            dropped(BadMessage(f"batch: replayed message id {m.header['id']!r}"))
    return fresh
