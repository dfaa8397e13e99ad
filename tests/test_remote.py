"""Two nodes in one process talking TCP on 127.0.0.1: the remote port semantics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import spawn_targets  # noqa: F401  (loaded, so that other nodes may spawn its functions)
from conftest import Recorder, settle

import aemp
from aemp import lowlevel, testing

SECRET = "test-secret"


def watchers(node: aemp.Node, port: str) -> list[str]:
    """The other nodes that monitor a live port of node."""
    info = lowlevel.port_info(node, port)
    assert info is not None, f"{port} is not a live port of {node.id}"
    return list(info["watchers"])


@pytest.fixture
async def pair() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async with aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a:  # noqa: SIM117
        async with aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET) as b:
            await wait_up(b, "a")
            yield a, b


async def wait_up(node: aemp.Node, other: str, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not node.node_is_up(other):
            await asyncio.sleep(0.005)


async def test_snd_both_ways(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    ra, rb = Recorder(), Recorder()
    pa, pb = a.port(ra), b.port(rb)
    b.snd(pa, "hello", 1, [2], {"k": b"bytes"})
    await ra.wait()
    a.snd(pb, "back", None)
    await rb.wait()
    assert ra.calls == [("hello", 1, [2], {"k": b"bytes"})]
    assert rb.calls == [("back", None)]


async def test_order_across_nodes(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    got: list[int] = []
    done = asyncio.get_running_loop().create_future()

    def cb(i: int) -> None:
        got.append(i)
        if i == 49_999:
            done.set_result(None)

    p = a.port(n=cb)
    for i in range(50_000):
        b.snd(p, "n", i)
        if i % 5000 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(done, 10)
    assert got == list(range(50_000))


class _CountingTransport:
    """A connection's transport, counting its writes."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_writes_are_batched_and_lone_packets_wait_for_nothing(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    from aemp.net._conn import CHUNK_PACKETS

    a, b = pair
    got: list[int] = []
    n = 3 * CHUNK_PACKETS + 10

    def burst(port: str) -> None:  # replies made while delivering a packet
        for i in range(n):
            a.snd(port, "n", i)

    p = a.port(n=got.append, burst=burst)
    b.snd(p, "n", -1)
    async with asyncio.timeout(5):
        while not got:
            await asyncio.sleep(0.001)
    b_link = testing.connection(b, "a")
    a_link = testing.connection(a, "b")
    b_link.transport = bt = _CountingTransport(b_link.transport)
    a_link.transport = at = _CountingTransport(a_link.transport)
    try:
        await asyncio.sleep(0.01)  # a later loop turn: nothing written lately
        b.snd(p, "n", 0)
        assert bt.writes == 1  # a lone packet leaves at once
        for i in range(1, n):  # a burst from a task waits for the turn's end
            b.snd(p, "n", i)
        assert bt.writes == 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert bt.writes == 2
        for i in range(n, n + 3):  # lone packets in later loop turns
            await asyncio.sleep(0.005)
            b.snd(p, "n", i)
            assert bt.writes == 2 + i - n + 1
        async with asyncio.timeout(5):
            while len(got) < n + 4:
                await asyncio.sleep(0.001)
        # a burst of replies goes out in parts while it is made
        replies = Recorder()
        b.snd(p, "burst", b.port(replies))
        await replies.wait(n, limit=5)
        assert at.writes == 2 + (n - 1) // CHUNK_PACKETS
    finally:
        b_link.transport = bt.real
        a_link.transport = at.real
    assert got == list(range(-1, n + 3))
    assert [r[1] for r in replies.calls] == list(range(n))


async def test_order_across_nodes_behind_a_busy_run_queue(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    # packets that arrive while the run queue holds local messages wait
    # behind them; those that find it empty are delivered at once; a port
    # whose async callback runs keeps the rest in its backlog: one order
    a, b = pair
    n = 20_000
    got: list[int] = []
    got_async: list[int] = []
    done = asyncio.get_running_loop().create_future()
    sink = a.port(lambda *_: None)

    def cb(i: int) -> None:
        got.append(i)
        for _ in range(3):
            a.snd(sink, "busy", i)

    async def slow(i: int) -> None:
        got_async.append(i)
        if i % 1000 == 0:
            await asyncio.sleep(0.001)
        if i == n - 1:
            done.set_result(None)

    p, q = a.port(n=cb), a.port(n=slow)
    for i in range(n):
        b.snd(p, "n", i)
        b.snd(q, "n", i)
        if i % 2000 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(done, 10)
    assert got == list(range(n))
    assert got_async == list(range(n))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (object(), "object"),
        (2**64, str(2**64)),
        ({1: "x"}, "dict key"),
        ([1, {2, 3}], "set"),
        ("\ud800", "surrogate"),
    ],
)
async def test_bad_messages_to_remote_ports_raise_at_snd(
    pair: tuple[aemp.Node, aemp.Node], bad: object, match: str
) -> None:
    a, b = pair
    rec = Recorder()
    pa = a.port(rec)
    cold = a.port(rec)  # never sent to before: no cached route
    with pytest.raises(aemp.MessageError, match=match):
        b.snd(cold, "tag", bad)
    with pytest.raises(aemp.MessageError):
        b.snd(a.id, "snd", pa, bad)  # the node port
    b.snd(pa, "ok")  # the route to pa is cached from here on
    with pytest.raises(aemp.MessageError, match=match):
        b.snd(pa, "tag", bad)
    token = aemp.CURRENT.set(b)
    try:
        with pytest.raises(aemp.MessageError, match=match):
            aemp.snd(pa, "tag", bad)
        with pytest.raises(aemp.MessageError, match="at least one element"):
            aemp.snd(pa)
    finally:
        aemp.CURRENT.reset(token)
    with pytest.raises(aemp.MessageError, match="at least one element"):
        b.snd(pa)
    # a node that is not connected yet queues, but checks first
    with pytest.raises(aemp.MessageError, match=match):
        b.snd("elsewhere#p", "tag", bad)
    b.snd(pa, "last")
    await rec.wait(2)
    assert rec.calls == [("ok",), ("last",)]


async def test_bytearray_arrives_as_bytes(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    rec = Recorder()
    pa = a.port(rec)
    b.snd(pa, bytearray(b"raw"), [bytearray(b"in a list")])
    await rec.wait()
    assert rec.calls == [(b"raw", [b"in a list"])]
    assert type(rec.calls[0][0]) is bytes


async def test_route_cache_stays_small_and_sends_stay_right(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    from aemp.kernel._kernel import MAX_ROUTES

    a, b = pair
    got: list[tuple[int, int]] = []
    ports = [a.port(lambda i, k=k: got.append((k, i))) for k in range(3 * MAX_ROUTES)]
    for i, p in enumerate(ports):
        b.snd(p, i)
        b.snd(ports[0], -i)  # a hot port, re-cached after each clear
        assert lowlevel.statistics(b)["routes"] <= MAX_ROUTES
    async with asyncio.timeout(5):
        while len(got) < 2 * len(ports):
            await asyncio.sleep(0.005)
    assert sorted(i for k, i in got if k and i >= 0) == list(range(1, len(ports)))
    assert [i for k, i in got if k == 0] == [0, *(-i for i in range(len(ports)))]


async def test_wildcard_bind_publishes_the_host_addresses() -> None:
    """A node bound to "*" is reached from other hosts through the host's
    own addresses; loopback comes last. (Only loopback is dialled here.)"""
    import ipaddress
    import socket

    async with aemp.Node(nodeid="wild", binds=["*:0"], secret=SECRET) as w:
        listeners = w.listeners
        loop_v4 = [a for a in listeners if a.startswith("127.0.0.1:")]
        assert len(loop_v4) == 1
        hosts = [a.rpartition(":")[0].strip("[]") for a in listeners]
        flags = [ipaddress.ip_address(h).is_loopback for h in hosts]
        assert flags == sorted(flags)  # every loopback address after the others
        for h in hosts:
            if not ipaddress.ip_address(h).is_loopback and ":" not in h:
                with socket.socket() as s:
                    s.bind((h, 0))  # an address of this host: binding sends nothing
        async with aemp.Node(nodeid="tame", seeds=loop_v4, secret=SECRET) as t:
            await wait_up(t, "wild")
            assert await t.lookup("wild") == listeners


async def test_cal_across_nodes(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    srv = a.port(add=lambda x, y, reply: a.snd(reply, x + y))
    assert await b.cal(srv, "add", 20, 22) == (42,)


async def test_remote_monitor_on_a_reply_port_hears_its_end(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    a, b = pair
    ended = Recorder()

    def ask(reply: str) -> None:
        a.mon(reply, ended)  # mon1 goes out before the reply: b knows it is watched
        a.snd(reply, "answer")

    assert await b.cal(a.port(ask=ask), "ask") == ("answer",)
    await ended.wait()
    assert ended.calls == [()]


async def test_mon_remote_port_death(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    p = a.port()
    rec = Recorder()
    b.mon(p, rec)
    await settle(20)
    a.kil(p, "bye", 1)
    await rec.wait()
    assert rec.calls == [("bye", 1)]


async def test_kil_remote_port(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    p = a.port()
    rec = Recorder()
    a.mon(p, rec)
    b.kil(p, "remote", "kill")
    await rec.wait()
    assert rec.calls == [("remote", "kill")]


async def test_mon_missing_remote_port(pair: tuple[aemp.Node, aemp.Node]) -> None:
    _a, b = pair
    rec = Recorder()
    b.mon("a#nosuchport", rec)
    await rec.wait()
    assert rec.calls == [("no_such_port", "cannot monitor nonexistent port", "a#nosuchport")]


async def test_cancelled_remote_monitor_stays_quiet(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    p = a.port()
    quiet, loud = Recorder(), Recorder()
    b.mon(p, quiet).cancel()
    b.mon(p, loud)  # reuses the subscription the first monitor made
    await settle(20)
    assert watchers(a, p) == ["b"]
    a.kil(p, "x")
    await loud.wait()
    assert quiet.calls == [] and loud.calls == [("x",)]


async def test_idle_remote_subscriptions_are_bounded(
    pair: tuple[aemp.Node, aemp.Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aemp.kernel import _remote

    monkeypatch.setattr(_remote, "MAX_IDLE_SUBSCRIPTIONS", 10)
    a, b = pair
    ports = [a.port() for _ in range(11)]
    for p in ports:
        b.mon(p, print).cancel()
    async with asyncio.timeout(2):
        while any(watchers(a, p) for p in ports):
            await asyncio.sleep(0.005)
    info = lowlevel.node_info(b, "a")
    assert info is not None and 0 not in info["monitors"].values()  # no idle subscription


async def test_spawn_on_remote_node(pair: tuple[aemp.Node, aemp.Node]) -> None:
    _a, b = pair
    pid = b.spawn("a", "spawn_targets:echo_init", "remote")
    assert aemp.node_of(pid) == "a"
    assert await b.cal(pid, "echo", 7) == ("remote", 7)


async def test_spawn_failure_on_remote_node(pair: tuple[aemp.Node, aemp.Node]) -> None:
    _a, b = pair
    pid = b.spawn("a", "spawn_targets:failing_init")
    rec = Recorder()
    b.mon(pid, rec)
    await rec.wait()
    assert rec.calls == [("die", "ValueError: init failed")]  # the real reason, never no_such_port


async def test_node_requests(pair: tuple[aemp.Node, aemp.Node]) -> None:
    _a, b = pair
    rec = Recorder()
    r = b.port(rec)
    b.snd("a", "can", "mon1", r, "c1")
    b.snd("a", "can", "no_such_request", r, "c2")
    b.snd("a", "can", "eval", r, "c3")  # refused, so not offered
    b.snd("a", "time", r, "t")
    b.snd("a", "snd", r, "relayed", 1)
    b.snd("a", "eval", "1+1", r)
    b.snd("a", "some::perl::function", 1)
    await rec.wait(5)
    calls = sorted(rec.calls, key=repr)
    assert ("c1", True) in calls and ("c2", False) in calls and ("c3", False) in calls
    assert ("relayed", 1) in calls
    t = next(c for c in calls if c[0] == "t")
    assert isinstance(t[1], float)


async def test_up_nodes_and_mon_nodes() -> None:
    async with aemp.Node(nodeid="x", binds=["127.0.0.1:0"], secret=SECRET) as x:
        events: list[Any] = []
        x.mon_nodes(lambda *e: events.append(e))
        y = aemp.Node(nodeid="y", seeds=x.listeners, secret=SECRET)
        await y.start()
        await wait_up(x, "y")
        await wait_up(y, "x")  # each side learns of the link on its own
        assert x.up_nodes() == ["y"] and y.up_nodes() == ["x"]
        await y.close()
        async with asyncio.timeout(2):
            while len(events) < 2:
                await asyncio.sleep(0.005)
        assert events[0] == ("y", True)
        assert events[1][:3] == ("y", False, "transport_error")


async def test_node_loss_fires_monitors() -> None:
    async with aemp.Node(nodeid="s", binds=["127.0.0.1:0"], secret=SECRET) as s:
        c = aemp.Node(nodeid="c", seeds=s.listeners, secret=SECRET)
        await c.start()
        await wait_up(s, "c")
        cp = c.port()
        rec = Recorder()
        s.mon(cp, rec)
        await settle(20)
        await c.close()
        await rec.wait()
        assert rec.calls[0][:2] == ("transport_error", "c")


async def test_wrong_secret_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        aemp.Node(nodeid="s", binds=["127.0.0.1:0"], secret="one") as s,
        aemp.Node(nodeid="c", seeds=s.listeners, secret="two") as c,
    ):
        await asyncio.sleep(0.2)
        assert not c.node_is_up("s") and not s.node_is_up("c")
    assert "shared secret mismatch" in caplog.text or "authentication" in caplog.text


async def test_tls_between_nodes() -> None:
    from aemp.tls import make_certificate

    pem = make_certificate()
    async with (
        aemp.Node(nodeid="s", binds=["127.0.0.1:0"], cert=pem) as s,
        aemp.Node(nodeid="c", seeds=s.listeners, cert=pem) as c,
    ):
        await wait_up(c, "s")
        srv = s.port(ping=lambda reply: s.snd(reply, "pong"))
        assert await c.cal(srv, "ping") == ("pong",)


@pytest.mark.parametrize("with_tls", [False, True])
async def test_messages_queued_while_connecting_arrive(with_tls: bool) -> None:
    from aemp.tls import make_certificate

    keys: dict[str, Any] = {"cert": make_certificate()} if with_tls else {"secret": SECRET}
    async with aemp.Node(nodeid="s", binds=["127.0.0.1:0"], **keys) as s:
        rec = Recorder()
        srv = s.port(rec)
        async with aemp.Node(nodeid="c", seeds=s.listeners, **keys) as c:
            assert not c.node_is_up("s")
            for i in range(300):  # queued until the link is up, then sent at once
                c.snd(srv, "n", i)
            await rec.wait(300, limit=5)
            assert rec.calls == [("n", i) for i in range(300)]
            assert await c.cal(s.port(ask=lambda r: s.snd(r, "ok")), "ask") == ("ok",)


@pytest.mark.parametrize(
    ("fa", "fb"),
    [(["json"], ["msgpack", "json"]), (["json", "msgpack"], ["msgpack", "json"])],
    ids=["json", "mixed"],
)
async def test_json_and_mixed_framing(fa: list[str], fb: list[str]) -> None:
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET, framing_format=fa) as a,
        aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET, framing_format=fb) as b,
    ):
        await wait_up(b, "a")
        srv = a.port(echo=lambda *m: a.snd(m[-1], *m[:-1]))
        msg = (1, "two", [3.5, None, True], {"k": {"n": -4}})
        assert await b.cal(srv, "echo", *msg) == msg
        bsrv = b.port(echo=lambda *m: b.snd(m[-1], *m[:-1]))
        assert await a.cal(bsrv, "echo", "back") == ("back",)
        if fa == ["json"]:
            with pytest.raises(aemp.MessageError, match="bytes"):
                b.snd(srv, "echo", b"raw bytes cannot travel as json")


async def test_module_level_membership_functions() -> None:
    node = await aemp.configure(nodeid="m", binds=["127.0.0.1:0"], secret=SECRET)
    try:
        events: list[Any] = []
        with aemp.mon_nodes(lambda *e: events.append(e)) as watch:
            async with aemp.Node(nodeid="n", seeds=node.listeners, secret=SECRET) as n:
                await wait_up(n, "m")
                await wait_up(node, "n")
                assert aemp.up_nodes() == ["n"] and aemp.node_is_up("n")
                assert aemp.node_is_up("m") and not aemp.node_is_up("elsewhere")
            async with asyncio.timeout(2):
                while len(events) < 2:
                    await asyncio.sleep(0.005)
        assert not watch.active
        assert events[0] == ("n", True)
        assert events[1][:4] == ("n", False, "transport_error", "n")
        assert len(events) == 2
    finally:
        await node.close()


async def test_second_handshake_finishing_late_is_closed(
    pair: tuple[aemp.Node, aemp.Node],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If a duplicate gets past the greeting check, the first connection stays in use."""
    a, b = pair
    first = testing.connection(b, "a")
    lost = Recorder()
    p = a.port(echo=lambda reply: a.snd(reply, "ok"))
    b.mon(p, lost)
    assert await b.cal(p, "echo", timeout=5) == ("ok",)
    # let a duplicate through the greeting on both sides, as a race would
    for n in (a, b):
        monkeypatch.setattr(testing.network(n), "greeted", lambda conn, nodeid: None)
    with pytest.raises(ConnectionError):
        await testing.network(b).dial(a.listeners[0], expect="a")
    assert testing.connection(b, "a") is first
    assert await b.cal(p, "echo", timeout=5) == ("ok",)
    assert lost.calls == []
    assert "second connection to a closed" in caplog.text


async def test_mon1_and_message_to_a_port_not_there_yet() -> None:
    """[mon1 X] [X msg] arrive, then X is spawned: the message cannot be delivered,
    so the mon1 before it must answer no_such_port (as the Perl node does, which
    handles both in arrival order). Seen in eg/supervisor.py: a cal to a worker
    that a supervisor had just spawned on a third node hung until its timeout
    instead of failing at once."""
    from conftest import free_port

    addr = f"127.0.0.1:{free_port()}"
    async with (
        aemp.Node(nodeid="b", binds=[addr], secret="s") as b,
        aemp.Node(nodeid="a", seeds=[addr], secret="s") as a,
    ):
        assert await a.cal("b", "time", timeout=5)  # connected both ways
        name = testing.take_names(a)["spawn"].partition("#")[2]  # a name nobody has used
        port = f"b#{name}"
        died = Recorder()
        a.mon(port, died)
        replies = Recorder()
        reply = a.port(replies)
        # what b receives, in one batch: a's mon1 and message for port X, and
        # (from a third node, say) the spawn that creates X
        batch = [
            ["", "mon1", name],
            [name, "echo", "hello", reply],
            ["", "AnyEvent::MP::_spawn", name, "spawn_targets:echo_init", "T"],
        ]
        b.inbox("a").receive(batch)
        async with asyncio.timeout(2):
            while not died.calls and not replies.calls:
                await asyncio.sleep(0.01)


class FakeLink:
    """A link that records what is sent over it."""

    def __init__(self, remote_id: str) -> None:
        self.remote_id = remote_id
        self.sent: list[list[Any]] = []
        self.closed: str | None = None

    def send(self, packet: list[Any]) -> None:
        self.sent.append(packet)

    def send_message(self, portname: str, msg: tuple[Any, ...]) -> None:
        self.sent.append([portname, *msg])

    def close(self, reason: str) -> None:
        self.closed = reason

    def fail(self, reason: str) -> None:
        self.closed = reason


async def test_link_back_up_before_the_loss_is_reported() -> None:
    """The peer dials back while the monitors of the lost link still wait
    on the run queue: they fire before anything takes the new link, and a
    second loss is reported like the first."""
    async with aemp.Node(nodeid="n", secret=SECRET) as n:
        first, second = FakeLink("p"), FakeLink("p")
        n.link_up("p", first)
        rec1 = Recorder()
        n.mon("p#w1", rec1)
        assert ["", "mon1", "w1"] in first.sent

        n.link_lost("p", first, "reset by peer")
        n.snd("p#w1", "after the loss")  # waits: the loss is not reported yet
        n.link_up("p", second)  # before the run queue reached the loss
        assert rec1.calls == [("transport_error", "p", "reset by peer")]
        assert ["w1", "after the loss"] in second.sent

        rec2 = Recorder()
        n.mon("p#w2", rec2)
        await settle(10)
        assert rec1.calls == [("transport_error", "p", "reset by peer")]
        assert n.node_is_up("p") and testing.connection(n, "p") is second

        n.link_lost("p", second, "gone again")
        await rec2.wait()
        assert rec2.calls == [("transport_error", "p", "gone again")]
        assert not n.node_is_up("p")
