"""Messages layer: the frames of one message, how they are signed, and every kind of message.

One message is a list of frames; a small one (no buffers, content under 64 KiB) is one frame::

    [routing id, ..., DELIM | signature | size | header | content, buffer 0, buffer 1, ...]
     '- added by ROUTER -'      |          |      |        |         '- out-of-band pickle
                                |          |      |        |            buffers, each its own
                                |          |      |        |            frame, never copied (empty
                                |          |      |        |            if it went through shared
                                |          |      |        |            memory: "segments", shm.py)
                                |          |      |        '- pickle (apply/result) or msgpack;
                                |          |      |           64 KiB or more: the next frame, not
                                |          |      |           copied (then the size's top bit is set)
                                |          |      '- msgpack map: id, kind, targets, parent,
                                |          |         timestamps, buffer lengths, ... (`Apply`...)
                                |          '- 4 bytes: the header's length (and the top bit)
                                '- HMAC-SHA256(key, size | header | content): 32 bytes

The signature covers the header (which holds the buffer lengths) and the content, and is checked
in constant time before the header is parsed or anything is unpickled. The controller routes by
header alone: it forwards the very frames it received, so a request to N engines is serialized
once in the client. One frame rather than three or four for most messages: each frame costs a
call into libzmq to send and another (and a zmq frame object) to receive, on every hop.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass

import msgpack

from ipcluster import direct, shm
from ipcluster.guard import Drops, Replay, Signer  # defined there, used through this module

DELIM = b"IPC2"  # and the version of this layout


class BadMessage(ValueError):
    """A message that is unsigned, forged, truncated or malformed; it is dropped unparsed."""


@dataclass(frozen=True)
class Kind:
    name: str
    sender: str  # who sends it: client, controller, engine (ANY: each of them)
    receivers: tuple  # who acts on it (a result goes to the controller, which forwards it on)
    content: str  # "pickle", "msgpack" or "none"
    doc: str


C, E, K = "client", "engine", "controller"
ANY = "any"  # a kind every peer sends
DATA_PORT, LINKS = "data port", "links"  # the two ends of a direct link (engine, client)

# Every kind of message, once. Each receiver has one table kind -> handler for exactly the kinds
# addressed to it (tests/test_protocol.py checks it); headers with more than an id: `Apply`, `Result`.
KINDS = {k.name: k for k in [
    Kind("hello", C, (K,), "none", "client introduces itself; answered by hello_reply"),
    Kind("hello_reply", K, (C,), "msgpack", "engine ids and controller facts"),
    Kind("query", C, (K,), "msgpack", "ask the controller for state (engine ids, queue)"),
    Kind("query_reply", K, (C,), "msgpack", "the answer to a query"),
    Kind("apply", C, (K, E), "pickle", "run (f, args, kwargs) on targets, or load-balanced: `Apply`"),
    Kind("result", E, (K, C), "pickle", "one task's value (a msgpack error if it failed): `Result`"),
    Kind("output", E, (K, C), "msgpack", "stdout/stderr text produced by a running task"),
    Kind("register", E, (K,), "msgpack", "an engine asks to join; answered by register_reply"),
    Kind("register_reply", K, (E,), "msgpack", "the engine's id, and its beat interval"),
    Kind("reregister", K, (E,), "none", "a restarted controller asks an engine to register"),
    Kind("unregister", E, (K,), "msgpack", "an engine leaves cleanly, saying why"),
    Kind("withdrawn", E, (K,), "msgpack", "answers withdraw: tasks given back, those started"),
    Kind("watchdog", E, (K,), "msgpack",
         "an engine's watchdog process: the engine is busy or stopped, or a task ran past its "
         "timeout and the engine was ended"),
    Kind("beat", E, (K, E), "none", "an engine is alive; the controller answers now and then, "
         "with the interval it should beat at (msgpack)"),
    Kind("event", K, (C,), "msgpack", "published: engine_up, engine_down (one id each and the "
         "registry's version), beat (the registry's version)"),
    Kind("control", C, (K, E), "msgpack", "abort, signal, shutdown, fetch, purge; the controller "
         "passes abort/signal/shutdown on and asks engines to withdraw queued tasks"),
    Kind("control_reply", K, (C,), "msgpack", "the outcome of a control request"),
    Kind("error", K, (C,), "msgpack", "a signed request the controller could not accept"),
    Kind("batch", ANY, (C, E, K), "msgpack", "several buffer-less messages from one peer to "
         "another (requests from a client, results from an engine, results and output to a "
         "client, tasks to an engine), signed once: `batch.py`; the receiver handles each as "
         "if it came alone"),
    # on direct links between a client and an engine's data port (direct.py), not the controller
    Kind("link", C, (DATA_PORT, LINKS), "none",
         "a client opens a link to an engine's data port; the engine answers with a link"),
    Kind("data", C, (DATA_PORT, LINKS), "none",
         "1 MiB of the large buffers of an apply (to the engine) or a result (to the client)"),
]}


def kinds_for(receiver: str, sender: str | None = None) -> set[str]:
    """The kinds `receiver` acts on (from `sender` only, if given)."""
    return {k.name for k in KINDS.values()
            if receiver in k.receivers and (sender is None or k.sender in (sender, ANY))}


def _bad(kind: str, field: str, expected: str, value) -> BadMessage:
    return BadMessage(f"{kind}: {field!r} must be {expected}, not {value!r}")


_TYPED = {**dict.fromkeys(("label", "key", "fn"), (str,)),  # an apply's optional fields
          **dict.fromkeys(("timeout", "priority", "submitted", "time_limit"), (int, float))}


@dataclass
class Apply:
    """The header of an ``apply``: its tasks, where they run, and the flags the controller and
    engine act on. The client builds it (`header`); the controller checks it (`from_header`:
    `BadMessage` for anything malformed), an engine what picks its task (`task_for`)."""

    tasks: list  # one task id (balanced), or one per target (direct)
    targets: list | None = None  # engine ids: where (direct) or where allowed (balanced)
    balanced: bool = False
    label: str | None = None
    key: str | None = None  # a digest of the call, for labelled sweeps run again
    fn: str | None = None  # the function's name, for the dashboard
    timeout: float | None = None  # seconds a balanced task may wait to start (ipyparallel's)
    retries: int = 0
    priority: float = 0
    after: object = None  # dependencies as plain data (`Dependency.to_wire`)
    follow: object = None
    submitted: float | None = None
    time_limit: float | None = None  # seconds it may run: then it is stopped with TaskTimeout

    def header(self, msg_id: str) -> dict:
        h = {"kind": "apply", "id": msg_id, "tasks": self.tasks, "targets": self.targets,
             "balanced": self.balanced}
        for name in ("label", "key", "fn", "timeout", "after", "follow", "submitted", "time_limit"):
            if (value := getattr(self, name)) is not None:
                h[name] = value
        if self.retries:
            h["retries"] = self.retries
        if self.priority:
            h["priority"] = self.priority
        return h

    @classmethod
    def from_header(cls, h: dict) -> "Apply":
        get = h.get  # each check a plain test: this runs on every hop of every task
        tasks, targets, balanced = get("tasks"), get("targets"), get("balanced", False)
        if not (isinstance(tasks, list) and tasks and all([isinstance(t, str) for t in tasks])):
            raise _bad("apply", "tasks", "a list of task ids", tasks)
        if targets is not None and not (isinstance(targets, list) and all(
                [type(t) is int or isinstance(t, int) and not isinstance(t, bool) for t in targets])):
            raise _bad("apply", "targets", "a list of engine ids or null", targets)
        if not isinstance(balanced, bool):
            raise _bad("apply", "balanced", "true or false", balanced)
        if balanced and len(tasks) != 1:
            raise BadMessage("apply: a load-balanced request carries exactly one task id")
        if not balanced and (targets is None or len(targets) != len(tasks)):
            raise BadMessage("apply: a direct request needs one task id per target")
        for name in h.keys() & _TYPED:  # the optional fields it has (most have two)
            value = h[name]
            if value is not None and type(value) not in _TYPED[name]:  # as msgpack makes them
                raise _bad("apply", name, "a string" if str in _TYPED[name] else "a number", value)
        retries = get("retries", 0)
        if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
            raise _bad("apply", "retries", "an int >= 0", retries)
        return cls(tasks, targets, balanced, get("label"), get("key"), get("fn"), get("timeout"),
                   retries, get("priority") or 0, get("after"), get("follow"), get("submitted"),
                   get("time_limit"))

    @staticmethod
    def task_for(h: dict, engine_id: int) -> str:
        """The task `engine_id` runs of the apply with header `h`, checking what picks it: an engine's
        check (its controller checked the whole header, `from_header`, before it forwarded it)."""
        tasks, targets = h.get("tasks"), h.get("targets")
        if not (isinstance(tasks, list) and tasks and all([isinstance(t, str) for t in tasks])):
            raise _bad("apply", "tasks", "a list of task ids", tasks)
        if h.get("balanced") is True:
            return tasks[0]
        if not isinstance(targets, list) or len(targets) != len(tasks) or engine_id not in targets:
            raise BadMessage(f"apply: engine {engine_id} is not among the targets {targets}")
        return tasks[targets.index(engine_id)]


@dataclass
class Result:
    """The header of a ``result``: which task, from which engine, how it ended and when.
    Content: the pickled value if `status` is "ok", else the error as msgpack (never pickle)."""

    parent: str  # the task id
    engine: int | None
    status: str  # "ok" or "error"
    started: float | None = None
    completed: float | None = None
    unmet: bool = False  # an UnmetDependency: the task may run on another engine
    prov: dict | None = None  # provenance: function, hashes of code, call and result
    engine_uuid: str | None = None  # the engine process's own id (a restarted engine has a new one)

    def header(self, msg_id: str) -> dict:
        h = {"kind": "result", "id": msg_id, "parent": self.parent, "engine": self.engine,
             "status": self.status, "started": self.started, "completed": self.completed}
        if self.unmet:
            h["unmet"] = True
        if self.prov is not None:
            h["prov"] = self.prov
        if self.engine_uuid is not None:
            h["uuid"] = self.engine_uuid
        return h

    @classmethod
    def from_header(cls, h: dict) -> "Result":
        get = h.get
        parent, status, engine, uuid = get("parent"), get("status"), get("engine"), get("uuid")
        started, completed, prov = get("started"), get("completed"), get("prov")
        if not isinstance(parent, str):
            raise _bad("result", "parent", "a task id", parent)
        if status != "ok" and status != "error":
            raise _bad("result", "status", '"ok" or "error"', status)
        if started is not None and type(started) not in (int, float):
            raise _bad("result", "started", "a time", started)
        if completed is not None and type(completed) not in (int, float):
            raise _bad("result", "completed", "a time", completed)
        if engine is not None and not isinstance(engine, int):
            raise _bad("result", "engine", "an engine id", engine)
        if uuid is not None and not isinstance(uuid, str):
            raise _bad("result", "uuid", "an engine uuid", uuid)
        return cls(parent, engine, status, started, completed, bool(get("unmet")),
                   prov if isinstance(prov, dict) else None, uuid)

    @property
    def duration(self) -> float | None:
        timed = self.started is not None and self.completed is not None
        return self.completed - self.started if timed else None

MAX_HEADER = 16 * 1024  # bytes; headers are small maps, a larger one is malformed
SIGNATURE = 32  # bytes of HMAC-SHA256, after the delimiter
HEAD = len(DELIM) + SIGNATURE + 4  # where the header starts in the first frame
APART = 1 << 31  # in the size word: the content is the next frame
INLINE = 1 << 16  # content shorter than this travels in the first frame
_LONGEST, _SIGNATURE = HEAD + MAX_HEADER + INLINE, slice(len(DELIM), HEAD - 4)  # for `decode`
_SIZE, _MASK = slice(HEAD - 4, HEAD), APART - 1  # for `head`


class Message:
    """A received message: its route, parsed header, content and buffers, and the raw frames."""

    __slots__ = ("route", "header", "kind", "content", "buffers", "frames")

    def __init__(self, route, header, content, buffers, frames):
        self.route = route  # routing ids (bytes) before the delimiter
        self.header = header
        self.kind: str = header["kind"]  # checked by `parse_header`
        self.content = content  # bytes, or a zmq Frame (64 KiB or more)
        self.buffers = buffers
        self.frames = frames  # from the delimiter on, as received: what the controller forwards


def _bytes(frame) -> bytes:
    return frame if isinstance(frame, bytes) else frame.bytes


def _buffer(frame):
    return frame if isinstance(frame, (bytes, bytearray, memoryview)) else frame.buffer


def encode(signer: Signer, header: dict, content=b"", buffers=(), shared=None) -> list:
    """Frames for a new message (without routing ids); `header` gains the buffer lengths and
    the time it was sent. With `shared` (a `shm.Host` and the reader tokens of every receiver,
    all on this host), large buffers travel as shared-memory segments named in the header."""
    if buffers and shared is not None:
        buffers = shared[0].place(header, buffers, shared[1])
    if buffers:
        header["buffers"] = [memoryview(b).nbytes for b in buffers]
    header.setdefault("t", time.time())
    return _frames(signer, pack(header), content, buffers)


def _frames(signer: Signer, h: bytes, content, buffers) -> list:
    size = content.nbytes if type(content) is memoryview else len(content)
    if size < INLINE:
        signed = b"".join((len(h).to_bytes(4, "little"), h, content))
        return [b"".join((DELIM, signer.sign(signed), signed)), *buffers]
    signed = (len(h) | APART).to_bytes(4, "little") + h
    return [b"".join((DELIM, signer.sign(signed, _buffer(content)), signed)), content, *buffers]


def head(first: bytes) -> tuple[int, bool]:
    """The header's length in a message's first frame, and whether its content is the next
    frame; raises `BadMessage` if the frame cannot be one. Reads no signed data."""
    length = len(first)
    if length <= HEAD or not first.startswith(DELIM):
        raise BadMessage("malformed first frame")
    word = int.from_bytes(first[_SIZE], "little")
    size, apart = word & _MASK, word >= APART
    if not 0 < size <= MAX_HEADER or HEAD + size > length or apart and HEAD + size != length:
        raise BadMessage("malformed first frame: its header size does not fit")
    return size, apart


def resign(signer: Signer, frames: list, msg_id: str) -> list:
    """Received frames (from the delimiter on) as a new message: a new id and time, so
    receivers do not take a deliberate resend for a replay. Content and buffers are reused."""
    first = _bytes(frames[0])
    size, apart = head(first)
    header = msgpack.unpackb(first[HEAD:HEAD + size])
    header.update(id=msg_id, t=time.time())
    if apart:
        return _frames(signer, pack(header), frames[1], frames[2:])
    return _frames(signer, pack(header), first[HEAD + size:], frames[1:])


def parse_header(raw: bytes) -> dict:
    """A signed header's bytes as a dict of a known kind; raises `BadMessage` otherwise."""
    try:
        header = msgpack.unpackb(raw)
    except Exception as exc:
        raise BadMessage(f"header is not msgpack: {exc}") from None
    if not isinstance(header, dict) or header.get("kind") not in KINDS:
        raise BadMessage(f"unknown message kind {header.get('kind') if isinstance(header, dict) else header!r}")
    return header


def decode(signer: Signer, frames: list, replay: Replay | None = None,
           max_age: float | None = None) -> Message:
    """Check and parse a received message; raises `BadMessage` before parsing anything unsigned.

    With `replay`, a message whose id was seen before is refused; with `max_age`, so is one
    sent more than `max_age` seconds ago (or as far in the future).
    """
    for i, frame in enumerate(frames):  # len() of a zmq frame makes no memoryview: cheaper
        if HEAD < len(frame) <= _LONGEST:
            first = frame if isinstance(frame, bytes) else frame.bytes
            if first.startswith(DELIM):
                break
    else:
        raise BadMessage("no protocol delimiter")
    route = [_bytes(f) for f in frames[:i]] if i else []
    body = frames[i:]
    size, apart = head(first)
    if apart:
        if len(body) < 2:
            raise BadMessage("truncated message: its content frame is missing")
        content, buffers = body[1], body[2:]
        signed = signer.verify(first[_SIGNATURE], first[HEAD - 4:], _buffer(content))
    else:
        content, buffers = first[HEAD + size:], body[1:]
        signed = signer.verify(first[_SIGNATURE], memoryview(first)[HEAD - 4:])
    if not signed:
        raise BadMessage("bad signature")
    header = parse_header(first[HEAD:HEAD + size])
    if (buffers or "buffers" in header) and [len(_buffer(b)) for b in buffers] != header.get("buffers"):
        raise BadMessage("buffer lengths differ from those signed in the header")
    what = "direct buffers"  # large buffers that came on a direct link or in shared memory
    try:
        if "direct" in header:
            direct.check(header, buffers)
        what = "shared-memory segments"
        if "segments" in header:
            buffers = shm.segments(header, buffers)
    except ValueError as exc:
        raise BadMessage(f"bad {what}: {exc}") from None
    if max_age is not None:
        sent = header.get("t")
        if not isinstance(sent, (int, float)) or abs(time.time() - sent) > max_age:
            raise BadMessage(f"stale message: sent at {sent!r}, more than {max_age} s from now")
    if not isinstance(msg_id := header.get("id"), str):
        raise BadMessage("header has no message id")
    if replay is not None and not replay.first_sighting(msg_id):
        raise BadMessage(f"replayed message id {msg_id!r}")
    return Message(route, header, content, buffers, body)


_local = threading.local()  # a msgpack Packer per thread: ``packb`` makes one, buffer and all, per call


def pack(obj) -> bytes:
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer()
    out = packer.pack(obj)
    if len(out) > 1 << 16:  # its buffer grew as large: let it go
        del _local.packer
    return out


def unpack(content):
    return msgpack.unpackb(_buffer(content), strict_map_key=False) if len(_buffer(content)) else None


class Ids:
    """Message ids unique across processes: a random session prefix and a counter."""

    def __init__(self) -> None:
        self.session = os.urandom(6).hex()
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self.session}-{next(self._count)}"


now = time.time  # seconds since the epoch, as every header's times
