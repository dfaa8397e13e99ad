"""aemp.mailbox: selective receive in coroutines, on one node and between nodes over TCP.

Order across interleaved tags, predicates, timeouts (on virtual time),
death while waiting, the backlog's bound and its place in flow control, a
spawned coroutine that receives, bad input, and 100,000 messages through
receive from another node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Recorder, settle, until

import aemp
from aemp import lowlevel, testing
from aemp.mailbox import Mailbox, MailboxBusy, ReceiveTimeout, receiving

SECRET = "mailbox-test"


@pytest.fixture
async def pair() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    keys: dict[str, Any] = {"secret": SECRET, "monitor_timeout": 2.0}
    async with (
        aemp.Node(nodeid="mb-a", binds=["127.0.0.1:0"], **keys) as a,
        aemp.Node(nodeid="mb-b", seeds=a.listeners, **keys) as b,
    ):
        yield a, b


# ---------------------------------------------------------------- order


async def test_interleaved_tags_keep_their_order(node: aemp.Node) -> None:
    box = Mailbox(node=node)
    for i in range(30):
        node.snd(box.port, "abc"[i % 3], i)
    # all the b's first, then the c's, then the a's: each tag in the order sent
    bs = [(await box.receive("b"))[1] for _ in range(10)]
    cs = [(await box.receive("c"))[1] for _ in range(10)]
    assert bs == list(range(1, 30, 3)) and cs == list(range(2, 30, 3))
    assert len(box) == 10
    assert [(await box.receive())[1] for _ in range(10)] == list(range(0, 30, 3))


async def test_a_receive_takes_the_first_match_of_several_tags_and_a_predicate(
    node: aemp.Node,
) -> None:
    box = Mailbox(node=node)
    for msg in (("x", 1), ("y", 5), ("z", 2), ("y", 9), ("x", 10)):
        node.snd(box.port, *msg)
    assert await box.receive("z", "y") == ("y", 5)
    assert await box.receive(where=lambda tag, n: n > 5) == ("y", 9)
    assert await box.receive("x", where=lambda tag, n: n > 5) == ("x", 10)
    assert [await box.receive() for _ in range(2)] == [("x", 1), ("z", 2)]


async def test_waiting_receive_gets_the_match_while_others_wait_their_turn(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    a, b = pair
    box = Mailbox(node=a)
    got = asyncio.ensure_future(box.receive("reply"))
    for i in range(5):
        b.snd(box.port, "noise", i)
    b.snd(box.port, "reply", "yes")
    b.snd(box.port, "noise", 5)
    assert await asyncio.wait_for(got, 5) == ("reply", "yes")
    await until(lambda: len(box) == 6, what="the noise kept")
    assert [(await box.receive("noise"))[1] for _ in range(6)] == list(range(6))


async def test_tag_callbacks_take_their_tags_before_the_mailbox(node: aemp.Node) -> None:
    box = Mailbox(node=node)
    seen = Recorder()
    node.rcv(box.port, ping=seen)
    node.snd(box.port, "ping", 1)
    node.snd(box.port, "data", 2)
    assert await box.receive() == ("data", 2)
    assert seen.calls == [(1,)]


async def test_async_iteration_ends_with_a_normal_exit(node: aemp.Node) -> None:
    box = Mailbox(node=node)
    for i in range(3):
        node.snd(box.port, "n", i)
    node.kil(box.port)
    got = [msg async for msg in box]
    assert got == []  # killed before it took them: they died with it
    box2 = Mailbox(node=node)
    for i in range(3):
        node.snd(box2.port, "n", i)
    got = []
    async for msg in box2:
        got.append(msg[1])
        if len(got) == 3:
            node.kil(box2.port)
    assert got == [0, 1, 2]


async def test_no_silent_holes_when_the_link_is_cut() -> None:
    """Guarantee 2 through a mailbox: whatever a cut link lost, the sender's
    monitor says so, and what is received stays in the order sent."""
    async with testing.pair(monitor_timeout=2) as (a, b, link):
        box = Mailbox(node=a)
        fired = Recorder()
        b.mon(box.port, fired)
        assert await b.cal(a.id, "time", timeout=5)  # linked, the monitor in place
        for i in range(50):
            b.snd(box.port, "n", i)
        link.cut("cut by the test")  # what is in flight is lost
        for i in range(50, 100):
            b.snd(box.port, "n", i)  # while the loss is reported: not delivered
        (reason,) = await fired.wait(limit=5)
        assert reason[:1] == ("transport_error",)
        link.reconnect()
        await until(lambda: a.id in b.up_nodes(), what="linked again")
        for i in range(100, 150):
            b.snd(box.port, "n", i)
        got: list[int] = []
        while not got or got[-1] != 149:
            got.append((await box.receive("n", timeout=5))[1])
        assert got == sorted(got) and got[-50:] == list(range(100, 150))


# ---------------------------------------------------------------- timeouts and cancelling


@pytest.mark.virtual_time
async def test_receive_times_out_on_the_loops_clock() -> None:
    async with aemp.Node(nodeid="vt") as node:
        box = Mailbox(node=node)
        node.snd(box.port, "other", 1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ReceiveTimeout) as e:
            await box.receive("wanted", timeout=30)
        assert loop.time() - start == pytest.approx(30)
        assert isinstance(e.value, TimeoutError) and e.value.tags == ("wanted",)
        assert "'wanted'" in str(e.value) and box.port in str(e.value)
        with pytest.raises(ReceiveTimeout):
            await box.receive("wanted", timeout=0)  # only what is kept
        node.after(5, box.port, "wanted", 2)
        assert await box.receive("wanted", timeout=10) == ("wanted", 2)
        assert await box.receive(timeout=0) == ("other", 1)


async def test_a_cancelled_receive_loses_nothing(node: aemp.Node) -> None:
    box = Mailbox(node=node)
    task = asyncio.ensure_future(box.receive("m"))
    await settle()
    node.snd(box.port, "m", 1)  # queued: delivered below, after the cancel
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await box.receive("m", timeout=1) == ("m", 1)


async def test_a_predicate_that_raises_fails_the_receive_and_keeps_the_message(
    node: aemp.Node,
) -> None:
    box = Mailbox(node=node)
    waiting = asyncio.ensure_future(box.receive(where=lambda tag, x: 1 / x))
    node.snd(box.port, "d", 0)
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(waiting, 2)
    assert lowlevel.port_alive(node, box.port)
    with pytest.raises(ZeroDivisionError):
        await box.receive(where=lambda tag, x: 1 / x)
    assert await box.receive() == ("d", 0)


# ---------------------------------------------------------------- death


async def test_death_while_waiting_raises_port_dead_with_the_reason(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    a, b = pair
    box = Mailbox(node=a)
    b.snd(box.port, "kept", 1)
    waiting = asyncio.ensure_future(box.receive("never"))
    await until(lambda: len(box) == 1, what="the message kept")
    b.kil(box.port, "stop", "from b")
    with pytest.raises(aemp.PortDead) as e:
        await asyncio.wait_for(waiting, 5)
    assert e.value.reason == ("stop", "from b") and e.value.port == box.port
    assert not box.alive and len(box) == 0
    with pytest.raises(aemp.PortDead):
        await box.receive()
    assert lowlevel.statistics(a)["held"] == 0


async def test_closing_the_node_ends_a_waiting_receive() -> None:
    node = await aemp.Node(nodeid="closing").start()
    box = Mailbox(node=node)
    waiting = asyncio.ensure_future(box.receive())
    await settle()
    await node.close()
    with pytest.raises(aemp.NodeClosed):
        await asyncio.wait_for(waiting, 2)


async def test_over_the_limit_the_port_dies_naming_it(node: aemp.Node) -> None:
    box = Mailbox(limit=100, node=node)
    died = Recorder()
    node.mon(box.port, died)
    for i in range(150):
        node.snd(box.port, "n", i)
    (reason,) = await died.wait()
    assert reason[0] == "mailbox_full" and "100 messages" in reason[1] and "limit" in reason[1]
    assert not lowlevel.port_alive(node, box.port)
    assert lowlevel.statistics(node)["held"] == 0
    with pytest.raises(aemp.PortDead) as e:
        await box.receive()
    assert e.value.reason == reason


async def test_kept_messages_count_in_flow_control() -> None:
    """Past queue_limit the node pauses reading; receiving them resumes it."""
    keys: dict[str, Any] = {"secret": SECRET, "monitor_timeout": 2.0}
    async with (
        aemp.Node(nodeid="fc-a", binds=["127.0.0.1:0"], queue_limit=200, **keys) as a,
        aemp.Node(nodeid="fc-b", seeds=a.listeners, **keys) as b,
    ):
        box = Mailbox(limit=10_000, node=a)
        for i in range(1000):
            b.snd(box.port, "n", i)
        await until(lambda: lowlevel.statistics(a)["reading_paused"], what="reading paused")
        assert 200 < len(box) < 1000
        held = lowlevel.statistics(a)["held"]  # counted in steps of 64
        assert len(box) <= held < len(box) + 128
        got = [(await box.receive("n", timeout=5))[1] for _ in range(1000)]
        assert got == list(range(1000))
        assert not lowlevel.statistics(a)["reading_paused"]
        assert lowlevel.statistics(a)["held"] == 0


# ---------------------------------------------------------------- a coroutine that owns a port


@aemp.spawnable
@receiving
async def doubler(box: Mailbox, name: str) -> None:
    """Answers ("job", n, reply) with (name, 2n); ("crash",) raises; ("stop",) returns."""
    while True:
        msg = await box.receive("job", "crash", "stop")
        if msg[0] == "stop":
            return
        if msg[0] == "crash":
            raise ValueError("asked to crash")
        _, n, reply = msg
        aemp.snd(reply, name, 2 * n, aemp.SELF.get())


async def test_a_spawned_coroutine_receives(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    worker = b.spawn(a.id, f"{__name__}:doubler", "w")
    assert aemp.node_of(worker) == a.id
    assert await b.cal(worker, "job", 21, timeout=5) == ("w", 42, worker)
    ended = Recorder()
    b.mon(worker, ended)
    b.snd(worker, "stop")
    assert (await ended.wait(limit=5)) == [()]  # returning is a normal exit


async def test_the_coroutines_exception_kills_the_port(node: aemp.Node) -> None:
    port = lowlevel.call_in(node, None, doubler, "local")  # outside a port: a new one
    died = Recorder()
    node.mon(port, died)
    node.snd(port, "crash")
    assert await died.wait() == [("die", "ValueError: asked to crash")]


async def test_killing_the_port_cancels_its_coroutine(node: aemp.Node) -> None:
    box = Mailbox(node=node)
    state: list[str] = []

    async def main() -> None:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            state.append("cancelled")
            raise

    task = box.run(main())
    await settle()
    node.kil(box.port, "enough")
    await until(task.done, what="the task ended")
    assert state == ["cancelled"]
    with pytest.raises(MailboxBusy):
        box.run(main())


async def test_the_coroutine_runs_with_self_the_port(node: aemp.Node) -> None:
    box = Mailbox(node=node)
    seen: list[Any] = []

    async def main() -> None:
        seen.append(aemp.SELF.get())

    await box.run(main())
    assert seen == [box.port]
    await until(lambda: not lowlevel.port_alive(node, box.port), what="the port ended")


# ---------------------------------------------------------------- many


async def test_100000_messages_through_receive(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    box = Mailbox(node=a)
    n = 100_000

    async def send() -> None:
        for i in range(n):
            b.snd(box.port, "odd" if i % 2 else "even", i)
            if i % 500 == 0:
                await b.drain(box.port)

    sender = asyncio.ensure_future(send())
    evens = odds = 0
    for k in range(n // 2):  # alternate tags: each receive skips at most one kept
        _, x = await box.receive("odd", timeout=10)
        assert x == 2 * k + 1
        odds += 1
        _, y = await box.receive("even", timeout=10)
        assert y == 2 * k
        evens += 1
    await sender
    assert evens == odds == n // 2 and len(box) == 0
    assert lowlevel.statistics(a)["held"] == 0


# ---------------------------------------------------------------- bad input


async def test_bad_arguments_are_clear_errors(pair: tuple[aemp.Node, aemp.Node]) -> None:
    a, b = pair
    box = Mailbox(node=a)
    with pytest.raises(aemp.InvalidArgument, match="tags must be str"):
        await box.receive(3)  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidArgument, match="timeout must be a number"):
        await box.receive(timeout="5")  # type: ignore[arg-type]
    with pytest.raises(aemp.OutOfRange, match="timeout"):
        await box.receive(timeout=-1)
    with pytest.raises(aemp.InvalidArgument, match="where must be callable"):
        await box.receive(where=5)  # type: ignore[arg-type]
    with pytest.raises(aemp.OutOfRange, match="limit"):
        Mailbox(limit=0, node=a)
    with pytest.raises(aemp.InvalidArgument, match="limit"):
        Mailbox(limit=2.5, node=a)  # type: ignore[arg-type]
    with pytest.raises(aemp.NotLocalPort):
        Mailbox(b.port(), node=a)
    with pytest.raises(aemp.InvalidArgument, match="a mailbox already"):
        Mailbox(box.port, node=a)
    dead = a.port()
    a.kil(dead)
    with pytest.raises(aemp.PortDead):
        Mailbox(dead, node=a)
    with pytest.raises(aemp.InvalidArgument, match="async def"):
        receiving(lambda box: None)  # type: ignore[arg-type,return-value]
    waiting = asyncio.ensure_future(box.receive())
    await settle()
    with pytest.raises(MailboxBusy):
        await box.receive()
    waiting.cancel()


async def test_any_message_from_a_peer_is_kept_or_received_nothing_harmed(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    a, b = pair
    box = Mailbox(node=a)
    odd = [(1, 2), (None,), ({"k": [1, 2]},), (b"\x00\xff", 1.5), ("x" * 10_000,), ([],)]
    for msg in odd:
        b.snd(box.port, *msg)
    await until(lambda: len(box) == len(odd), what="all kept")
    with pytest.raises(ReceiveTimeout):  # unhashable tags are compared, not hashed
        await box.receive("none", "of these", timeout=0)
    got = [await box.receive(timeout=5) for _ in odd]
    assert got == [tuple(m) for m in odd]


# ---------------------------------------------------------------- the lowlevel parts it uses


async def test_lowlevel_hold_counts_against_queue_limit() -> None:
    async with aemp.Node(nodeid="hold", queue_limit=100) as node:
        assert lowlevel.current_node() is not node  # the test's own code runs in no port
        assert lowlevel.call_in(node, None, lowlevel.current_node) is node
        waiter = asyncio.ensure_future(node.drain(node.id))
        await settle()
        assert waiter.done()  # nothing held: drain returns at once
        lowlevel.hold(node, 101)
        assert lowlevel.statistics(node)["held"] == 101
        waiter = asyncio.ensure_future(node.drain(node.id))
        await settle()
        assert not waiter.done()  # over half of queue_limit: drain waits
        lowlevel.hold(node, -101)
        await asyncio.wait_for(waiter, 2)
        assert not lowlevel.statistics(node)["reading_paused"]
        with pytest.raises(aemp.InvalidArgument, match="hold"):
            lowlevel.hold(node, 1.5)  # type: ignore[arg-type]


@pytest.mark.allow_error_log  # the port that misused its mailbox dies, and that is logged
async def test_a_receive_inside_the_ports_own_async_callback_raises_instead_of_waiting(
    node: aemp.Node,
) -> None:
    """The trap of a first mailbox: an async init (or callback) of the
    mailbox's own port that waits in receive. The port is busy until it
    returns, so its messages never reach the mailbox; receive says so at
    once instead of waiting for ever. What was kept before is still taken."""
    died = Recorder()
    seen: list[Any] = []

    async def init() -> None:
        box = Mailbox(aemp.SELF.get(), node=node)
        seen.append(await box.receive(timeout=0.5))

    port = lowlevel.gated_port(node)
    node.mon(port, died)
    lowlevel.release(node, port, init)
    (reason,) = await died.wait(1, limit=5)
    assert reason[0] == "die" and "MailboxBusy" in reason[1] and "wait for ever" in reason[1]
    assert seen == []

    # the same code in a coroutine of Mailbox.run receives
    box = Mailbox(node=node)
    got: list[Any] = []

    async def main() -> None:
        got.append(await box.receive(timeout=5))

    box.run(main())
    node.snd(box.port, "hello")
    await until(lambda: got == [("hello",)], what="the message received")
    assert lowlevel.port_task(node, box.port) is None  # no callback of its own runs
    assert lowlevel.port_task(node, "nobody#here") is None
