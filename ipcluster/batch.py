"""Messages layer: several messages for one receiver as one signed ``batch`` message.

When one turn of the controller's loop has several results and output for one client, or
several tasks for one engine, it sends them as one message (and a client its requests, an
engine its results, when they queue up): one send, one wake-up of each side's zmq thread and
one signature check on receipt instead of one per message::

    [DELIM | signature | size | batch header | content]
                                                 '- msgpack list, in order, of each
                                                    message's one frame, as it was signed

Only messages of one frame are batched (no buffers, content under 64 KiB: a task's or a
result's large buffers and content travel in messages of their own, never copied). The batch's signature covers every byte of its
messages, so the receiver checks it once and does not check theirs again; each message keeps
its own id, and the receiver's replay window sees every one of them, as if it came alone.
"""

from __future__ import annotations

import msgpack

from ipcluster.protocol import (
    HEAD, BadMessage, Message, Replay, Signer, encode, head, pack as packed, parse_header,
)

KIND = "batch"


def batchable(frames: list) -> bool:
    """True for a message of one frame."""
    return len(frames) == 1


def _raw(frame):
    return getattr(frame, "buffer", frame)  # a zmq frame's memory, or bytes as they are


def pack(signer: Signer, msg_id: str, messages: list) -> list:
    """One signed message carrying `messages` (each of one frame)."""
    content = packed([_raw(f[0]) for f in messages])
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
        if not isinstance(item, bytes):
            raise BadMessage("batch: each message must be one frame")
        size, apart = head(item)
        if apart:
            raise BadMessage("batch: a batched message has its content in its one frame")
        try:
            header = parse_header(item[HEAD:HEAD + size])
        except BadMessage as exc:
            raise BadMessage(f"batch: a message that cannot be batched: {exc}") from None
        if header["kind"] == KIND:
            raise BadMessage("batch: a batch cannot be batched in another")
        if not isinstance(header.get("id"), str):
            raise BadMessage("batch: a message has no id")
        if "buffers" in header or "segments" in header or "direct" in header:
            raise BadMessage("batch: a batched message has no buffers")
        out.append(Message(msg.route, header, item[HEAD + size:], [], [item]))
    if replay is None:
        return out
    fresh = []
    for m in out:  # only once the whole batch is known good
        if replay.first_sighting(m.header["id"]):
            fresh.append(m)
        elif dropped is not None:
            dropped(BadMessage(f"batch: replayed message id {m.header['id']!r}"))
    return fresh
