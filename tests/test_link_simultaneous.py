"""Two nodes that dial each other at the same moment lose nothing.

Each round, both nodes start a monitor and a numbered burst to a port on
the other in the same instant (or a fraction of a millisecond apart), so
both dial and two connections race. Every message must arrive, in order,
and no monitor may fire: between two aemp nodes, and between aemp and a
node that keeps the connection that authenticated first on its side and
closes the later one, as AnyEvent::MP does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import pytest

import aemp
from aemp import testing
from aemp.net import Conn
from aemp.wire import _connection as wire_connection

SECRET = "test-secret"
ROUNDS = 300
BURST = 20


def keep_first_authenticated(node: aemp.Node) -> None:
    """Make `node` settle twin connections as AnyEvent::MP does: refuse a
    greeting when connected (as aemp's own greeting check does), and make the
    first connection that authenticates the link at once, closing any that
    authenticates later."""
    net = testing.network(node)

    def authenticated(conn: Any) -> None:
        if node.node_is_up(conn.remote_id):
            conn.close(f"{conn.remote_id} already connected")
            return
        net.make_link(conn)

    net.authenticated = authenticated  # type: ignore[method-assign]


def without_tiebreak(nodeid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node `nodeid` does not announce tiebreak=nonce, as a Perl node."""
    make_line1 = wire_connection.make_line1

    def line1(node: str, accept: Any, framings: Any, options: Any) -> bytes:
        if node == nodeid:
            options = [(k, v) for k, v in options if k != "tiebreak"]
        return make_line1(node, accept, framings, options)

    monkeypatch.setattr(wire_connection, "make_line1", line1)


class Jitter:
    """Hold back, in order, the start of each connection and what it
    receives during its handshake, for a random fraction of a millisecond:
    as a busy node or a network would. Without it, two nodes in one process
    on one loop meet in few orders."""

    queues: dict[Any, list[tuple[Any, Any]]]

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rng: random.Random) -> None:
        cls = Conn
        made, received = cls.connection_made, cls.data_received
        eof, lost = cls.eof_received, cls.connection_lost
        self.queues = queues = {}
        scale: dict[Any, float] = {}  # per connection: some are slow, some are not

        def later(conn: Any) -> None:
            if conn not in scale:
                scale[conn] = rng.choice([0.0, 0.0005, 0.002, 0.004])
            asyncio.get_running_loop().call_later(rng.random() * scale[conn], drain, conn)

        def drain(conn: Any) -> None:
            q = queues.get(conn)
            if q:
                step, arg = q.pop(0)
                step(conn, arg)
            if q:
                later(conn)
            else:
                queues.pop(conn, None)

        def flush(conn: Any) -> None:
            # the end of the stream comes after what was held back, at once:
            # the transport is gone, so the connection must hear of it now
            for step, arg in queues.pop(conn, []):
                step(conn, arg)

        def hold(conn: Any, step: Any, arg: Any) -> None:
            q = queues.setdefault(conn, [])
            q.append((step, arg))
            if len(q) == 1:
                later(conn)

        def connection_made(conn: Any, transport: Any) -> None:
            hold(conn, made, transport)

        def data_received(conn: Any, data: bytes) -> None:
            if conn not in queues and conn.open and not conn.closed:
                received(conn, data)  # the data phase, nothing held back
            else:
                hold(conn, received, data)

        def eof_received(conn: Any) -> bool:
            flush(conn)
            return eof(conn)

        def connection_lost(conn: Any, exc: Exception | None) -> None:
            flush(conn)
            lost(conn, exc)

        monkeypatch.setattr(cls, "connection_made", connection_made)
        monkeypatch.setattr(cls, "data_received", data_received)
        monkeypatch.setattr(cls, "eof_received", eof_received)
        monkeypatch.setattr(cls, "connection_lost", connection_lost)


class Counter:
    """How many connections each round made: more than one per side is a race."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made = 0
        made = Conn.connection_made
        self.reasons: dict[str, int] = {}

        def ended(finished: asyncio.Future[str]) -> None:  # with the reason it closed
            reason = finished.result()
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

        def counting(conn: Any, transport: Any) -> None:
            self.made += 1
            conn.finished.add_done_callback(ended)
            made(conn, transport)

        monkeypatch.setattr(Conn, "connection_made", counting)


async def until(cond: Any, what: str, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.001)


async def one_round(a: aemp.Node, b: aemp.Node, r: int, delay: float) -> None:
    """Both nodes, not connected yet, monitor a port on the other and send
    it a numbered burst, `delay` seconds apart."""
    testing.network(a).addresses["b"] = list(b.listeners)
    testing.network(b).addresses["a"] = list(a.listeners)
    got: dict[str, list[int]] = {"a": [], "b": []}
    pa = a.port(m=lambda i: got["a"].append(i))
    pb = b.port(m=lambda i: got["b"].append(i))
    fired: list[Any] = []

    def start(src: aemp.Node, dst: str) -> None:
        src.mon(dst, lambda *why: fired.append((src.id, why)))
        for i in range(BURST):
            src.snd(dst, "m", i)

    start(a, pb)
    if delay:
        asyncio.get_running_loop().call_later(delay, start, b, pa)
    else:
        start(b, pa)
    want = list(range(BURST))
    try:
        await until(lambda: (got["a"] == want and got["b"] == want) or fired, f"round {r}")
    except TimeoutError:
        raise AssertionError(f"round {r}: got {got}") from None
    assert not fired, (r, fired)
    assert got["a"] == want and got["b"] == want, (r, got)


async def simultaneous_rounds(counter: Counter, jitter: Jitter, peer: Any = None) -> int:
    """Run the rounds, each with a fresh pair of nodes; return how many
    of them raced two connections."""
    races = 0
    rng = random.Random(11)
    t0 = time.monotonic()
    for r in range(ROUNDS):
        assert time.monotonic() - t0 < 60, f"only {r} rounds in 60 s"
        async with (
            aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a,
            aemp.Node(nodeid="b", binds=["127.0.0.1:0"], secret=SECRET) as b,
        ):
            if peer is not None:
                peer(b)
            before = counter.made
            await one_round(a, b, r, rng.choice([0.0, 0.0, 0.0002, 0.0005, 0.001, 0.002]))
            races += counter.made - before > 2
            await until(lambda: not jitter.queues, "what was held back")
    return races


async def test_simultaneous_connects_between_aemp_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counter(monkeypatch)
    jitter = Jitter(monkeypatch, random.Random(5))
    races = await simultaneous_rounds(counter, jitter)
    assert races >= ROUNDS // 2, f"only {races} of {ROUNDS} rounds raced"
    # rounds where both connections authenticated on both sides, settled by the nonce
    settled = counter.reasons.get("b: simultaneous connect, the other connection won", 0)
    assert settled >= 10, counter.reasons


async def test_simultaneous_connects_with_a_first_authenticated_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = Counter(monkeypatch)
    jitter = Jitter(monkeypatch, random.Random(7))
    without_tiebreak("b", monkeypatch)
    races = await simultaneous_rounds(counter, jitter, keep_first_authenticated)
    assert races >= ROUNDS // 2, f"only {races} of {ROUNDS} rounds raced"
    # rounds where the peer closed the connection that authenticated second on its side
    assert counter.reasons.get("a already connected", 0) >= 10, counter.reasons


async def test_a_second_connection_to_a_linked_node_ends_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Discovery or a seed may dial a node whose link is up on its side
    and still under way on ours; the peer then refuses ("already connected")
    and closes in the handshake. The link stands, and nobody is warned."""
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a,
        aemp.Node(nodeid="b", binds=["127.0.0.1:0"], seeds=a.listeners, secret=SECRET) as b,
    ):
        await b.wait_joined(timeout=10)
        await until(lambda: a.node_is_up("b"), "a's side of the link")
        # b as it is when its side of the link is not through yet: the
        # greeting of a node it has a link with goes on (a refuses it)
        net = testing.network(b)
        greeted = net.greeted

        def late(conn: Any, nodeid: str) -> str | None:
            refusal = greeted(conn, nodeid)
            return None if refusal and "already connected" in refusal else refusal

        net.greeted = late  # type: ignore[method-assign]
        with caplog.at_level("INFO", logger="aemp.transport"):
            for _ in range(3):
                with contextlib.suppress(ConnectionError):
                    await net.dial(a.listeners[0], expect="a")
            await asyncio.sleep(0.1)  # a's end of each
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert not warned, warned
        assert "a second connection with a ended in its handshake" in caplog.text
        assert a.node_is_up("b") and b.node_is_up("a")
        assert await b.cal(a.id, "time", timeout=5)  # the link still carries
