"""`wire.Wire`'s held messages (a client's burst of requests as one batch), with real sockets
and no cluster: the order of what is held, queued and sent, and who sends what is held."""

import pytest

from ipcluster import batch, transport, wire
from ipcluster.protocol import Ids, Signer, decode, encode

SIGNER = Signer(b"k" * 32)


@pytest.fixture
def pair():
    """A Wire on a DEALER (attached as the owner does) and the ROUTER it talks to."""
    ctx = transport.Context()
    try:
        router, url = ctx.router("127.0.0.1")
        ids = Ids()
        w = wire.Wire(ctx, f"wire-{ids.session}", lambda held: batch.pack(SIGNER, ids(), held))
        inbox = w.inbox()
        w.attach(ctx.dealer(url), transport.Poller(inbox))
        yield w, router, inbox
    finally:
        ctx.close()


def request(n: int, buffers=()) -> list:
    return encode(SIGNER, {"kind": "apply", "id": f"r{n}"}, b"call", list(buffers))


def arrived(router) -> list[list[str]]:
    """Each message the ROUTER got, as the ids of the requests in it (several for a batch)."""
    out = []
    while router.poll(5000):
        msg = decode(SIGNER, transport.recv(router))
        out.append([m.header["id"] for m in batch.unbatch(msg)])
        if not router.poll(200):
            break
    return out


def test_what_is_held_goes_as_one_batch_before_anything_sent_after_it(pair):
    w, router, inbox = pair
    for n in range(3):
        w.hold(request(n))
    assert w.wakeups == 1 and len(list(transport.drain(inbox))) == 1  # once per batch
    w.send(request(3, [b"x" * 10]))  # cannot be batched: it goes alone, after them
    w.hold(request(4))
    w.flush()  # a thread about to wait
    assert arrived(router) == [["r0", "r1", "r2"], ["r3"], ["r4"]]


def test_held_messages_go_before_what_is_queued_for_the_owner_and_the_owner_sends_them(pair):
    w, router, _ = pair
    w.hold(request(0))
    w.hold(request(1))
    w.queue([b"for the owner"])  # only the owner sends it: what was held goes first
    w.hold(request(2))
    assert list(w.queued) == [[b"for the owner"]]
    with w.lock:
        outgoing = list(w.outgoing())  # the owner's turn: the queue, then what is held
    assert outgoing == [[b"for the owner"]] and not w.held
    assert arrived(router) == [["r0", "r1"], ["r2"]]


def test_the_holder_sends_them_itself_at_the_limit(pair):
    w, router, _ = pair
    for n in range(wire.HOLD):
        w.hold(request(n))
    assert not w.held and w.wakeups == 1
    assert arrived(router) == [[f"r{n}" for n in range(wire.HOLD)]]


def test_a_batch_never_grows_past_what_the_peer_takes_in_one_frame(pair):
    w, router, _ = pair
    size = len(request(0)[0])
    w.hold_bytes = 2 * size + size // 2  # as for a small max_message_size
    for n in range(5):
        w.hold(request(n))
    assert len(w.held) == 1  # two went, two went, one waits
    w.flush()
    assert arrived(router) == [["r0", "r1"], ["r2", "r3"], ["r4"]]
    assert not w.holds([b"x" * (w.hold_bytes + 1)])  # too large for any batch: sent alone
