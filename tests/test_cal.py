"""cal: awaitable and callback forms, timeout, death of the target, cleanup."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Recorder, settle

import aemp
from aemp import lowlevel
from aemp.testing import wait_until


def monitors(node: aemp.Node, port: str) -> int:
    """The local monitors on a live port of node."""
    info = lowlevel.port_info(node, port)
    assert info is not None, f"{port} is not a live port of {node.id}"
    return int(info["monitors"])


def watchers(node: aemp.Node, port: str) -> list[str]:
    """The other nodes that monitor a live port of node."""
    info = lowlevel.port_info(node, port)
    assert info is not None, f"{port} is not a live port of {node.id}"
    return list(info["watchers"])


def subscriptions(node: aemp.Node, nodeid: str) -> dict[str, int]:
    """{port name: local monitors} for the ports of nodeid that node subscribed to."""
    info = lowlevel.node_info(node, nodeid)
    assert info is not None, f"{node.id} keeps nothing about {nodeid}"
    return dict(info["monitors"])


def adder(node: aemp.Node) -> str:
    return node.port(add=lambda a, b, reply: node.snd(reply, a + b))


async def test_cal_returns_reply_tuple(node: aemp.Node) -> None:
    assert await node.cal(adder(node), "add", 2, 3) == (5,)


async def test_cal_multi_element_and_async_server(node: aemp.Node) -> None:
    async def work(x: int, reply: str) -> None:
        await asyncio.sleep(0.001)
        node.snd(reply, "ok", x * 2, [x])

    srv = node.port(work=work)
    results = await asyncio.gather(*(node.cal(srv, "work", i) for i in range(20)))
    assert results == [("ok", i * 2, [i]) for i in range(20)]


async def test_cal_timeout(node: aemp.Node) -> None:
    silent = node.port(ask=lambda reply: None)
    with pytest.raises(aemp.CallTimeout, match=r"within 0\.05 s") as ei:
        await node.cal(silent, "ask", timeout=0.05)
    assert isinstance(ei.value, TimeoutError)
    assert ei.value.port == silent


async def test_cal_to_port_that_dies(node: aemp.Node) -> None:
    def crash(reply: str) -> None:
        raise ValueError("no")

    srv = node.port(ask=crash)
    with pytest.raises(aemp.PortDead) as ei:
        await node.cal(srv, "ask")
    assert ei.value.reason == ("die", "ValueError: no")
    assert ei.value.port == srv


async def test_cal_to_port_killed_normally(node: aemp.Node) -> None:
    srv = node.port(ask=lambda reply: node.kil(aemp.SELF.get() or ""))
    with pytest.raises(aemp.PortDead, match="normal exit") as ei:
        await node.cal(srv, "ask")
    assert ei.value.reason == ()


async def test_cal_to_missing_port(node: aemp.Node) -> None:
    p = node.port()
    node.kil(p)
    with pytest.raises(aemp.PortDead) as ei:
        await node.cal(p, "ask")
    assert ei.value.reason[0] == "no_such_port"


async def test_cal_leaves_no_port_or_monitor_behind(node: aemp.Node) -> None:
    srv = adder(node)
    before = set(lowlevel.ports(node))
    for _ in range(10):
        await node.cal(srv, "add", 1, 1)
    silent = node.port(ask=lambda reply: None)
    with pytest.raises(aemp.CallTimeout):
        await node.cal(silent, "ask", timeout=0.01)
    assert set(lowlevel.ports(node)) == before | {silent}
    assert monitors(node, srv) == 0
    assert monitors(node, silent) == 0
    assert lowlevel.statistics(node)["calls"] == 0


async def test_reply_after_timeout_is_dropped(node: aemp.Node) -> None:
    replies: list[str] = []
    srv = node.port(ask=replies.append)
    with pytest.raises(aemp.CallTimeout):
        await node.cal(srv, "ask", timeout=0.01)
    node.snd(replies[0], "late")  # the reply port is dead: silently dropped
    await settle()


async def test_callback_form(node: aemp.Node) -> None:
    rec = Recorder()
    call = node.cal(adder(node), "add", 4, 5, cb=rec)
    await rec.wait()
    assert rec.calls == [(9,)]
    assert call.done()


async def test_callback_form_runs_in_caller_context(node: aemp.Node) -> None:
    seen: list[Any] = []
    srv = adder(node)

    def start() -> None:
        node.cal(srv, "add", 1, 2, cb=lambda r: seen.append((r, aemp.SELF.get())))

    caller = node.port(start=start)
    node.snd(caller, "start")
    await settle(10)
    assert seen == [(3, caller)]


async def test_callback_form_error_callback(node: aemp.Node) -> None:
    err = Recorder()
    silent = node.port(ask=lambda reply: None)
    node.cal(silent, "ask", timeout=0.01, cb=lambda *r: None, err=err)
    await err.wait()
    assert isinstance(err.calls[0][0], aemp.CallTimeout)


async def test_callback_form_without_err_kills_the_caller(node: aemp.Node) -> None:
    silent = node.port(ask=lambda reply: None)
    died = Recorder()
    caller = node.port(start=lambda: node.cal(silent, "ask", timeout=0.01, cb=print))
    node.mon(caller, died)
    node.snd(caller, "start")
    await died.wait()
    assert died.calls[0][0] == "die"
    assert died.calls[0][1].startswith("CallTimeout: no reply from")


async def test_reply_callback_that_raises_kills_the_caller(node: aemp.Node) -> None:
    died = Recorder()

    def boom(total: int) -> None:
        raise ValueError(f"cannot take {total}")

    srv = adder(node)
    caller = node.port(start=lambda: node.cal(srv, "add", 1, 1, cb=boom))
    node.mon(caller, died)
    node.snd(caller, "start")
    await died.wait()
    assert died.calls == [("die", "ValueError: cannot take 2")]


@pytest.mark.allow_error_log
async def test_reply_callback_that_raises_outside_a_port_is_logged(
    node: aemp.Node, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()

    def boom(total: int) -> None:
        raise ValueError("no port to kill")

    node.cal(adder(node), "add", 1, 1, cb=boom)
    node.cal(adder(node), "add", 2, 2, cb=rec)  # the next reply is still delivered
    await rec.wait()
    assert rec.calls == [(4,)]
    assert "raised outside any port" in caplog.text


async def test_async_reply_callback_runs_as_the_caller(node: aemp.Node) -> None:
    seen: list[Any] = []

    async def later(total: int) -> None:
        await asyncio.sleep(0)
        seen.append((total, aemp.SELF.get()))

    srv = adder(node)
    caller = node.port(start=lambda: node.cal(srv, "add", 3, 4, cb=later))
    node.snd(caller, "start")
    async with asyncio.timeout(2):
        while not seen:
            await asyncio.sleep(0.001)
    assert seen == [(7, caller)]


async def test_a_monitored_reply_port_reports_its_end(node: aemp.Node) -> None:
    ended = Recorder()

    def ask(reply: str) -> None:
        node.mon(reply, ended)
        node.snd(reply, "answer")

    assert await node.cal(node.port(ask=ask), "ask") == ("answer",)
    await ended.wait()
    assert ended.calls == [()]


async def test_cancel_call(node: aemp.Node) -> None:
    silent = node.port(ask=lambda reply: None)
    call = node.cal(silent, "ask")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert lowlevel.statistics(node)["calls"] == 0


async def test_cancelling_the_awaiting_task_cancels_the_call(node: aemp.Node) -> None:
    silent = node.port(ask=lambda reply: None)
    task = asyncio.ensure_future(node.cal(silent, "ask"))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lowlevel.statistics(node)["calls"] == 0


async def test_await_twice_and_late(node: aemp.Node) -> None:
    call = node.cal(adder(node), "add", 1, 1)
    await settle()
    assert call.done()
    assert await call == (2,)
    assert await call == (2,)


async def test_cal_from_async_handler(node: aemp.Node) -> None:
    srv = adder(node)

    async def relay(x: int, reply: str) -> None:
        (r,) = await aemp.cal(srv, "add", x, 100)
        aemp.snd(reply, r)

    front = node.port(relay=relay)
    assert await node.cal(front, "relay", 1) == (101,)


async def test_cal_bad_arguments(node: aemp.Node) -> None:
    with pytest.raises(aemp.OutOfRange, match="timeout must be a positive number"):
        node.cal(node.port(), "x", timeout=0)
    with pytest.raises(aemp.MessageError):
        node.cal(node.port(), object())
    with pytest.raises(aemp.InvalidID):
        node.cal("", "x")
    for bad in (True, "5"):  # not a number: a TypeError
        with pytest.raises(aemp.InvalidArgument, match="timeout must be a positive number"):
            node.cal(node.port(), "x", timeout=bad)
    for bad in (-1, float("nan")):  # a number out of range: a ValueError
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            node.cal(node.port(), "x", timeout=bad)
    assert lowlevel.statistics(node)["calls"] == 0


async def test_pending_calls_to_one_port_share_one_monitor(node: aemp.Node) -> None:
    held: list[str] = []
    srv = node.port(ask=held.append)
    calls = [node.cal(srv, "ask") for _ in range(100)]
    other = node.port(ask=lambda reply: None)
    calls.append(node.cal(other, "ask", timeout=5))
    await settle()
    assert len(held) == 100
    assert monitors(node, srv) == 1
    assert monitors(node, other) == 1
    for reply in held[:50]:
        node.snd(reply, "ok")
    await settle()
    assert [c.done() for c in calls] == [True] * 50 + [False] * 51
    assert monitors(node, srv) == 1
    node.kil(srv, "gone", 1)
    await settle()
    assert all(c.done() for c in calls[:100]) and not calls[100].done()
    for call in calls[50:100]:
        with pytest.raises(aemp.PortDead) as ei:
            await call
        assert ei.value.reason == ("gone", 1)
    calls[100].cancel()
    assert lowlevel.statistics(node)["calls"] == 0 and monitors(node, other) == 0


async def test_calls_to_a_remote_port_share_one_subscription() -> None:
    secret = "s"
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=secret) as a,
        aemp.Node(nodeid="b", seeds=a.listeners, secret=secret) as b,
    ):
        held: list[str] = []
        srv = a.port(ask=held.append)
        calls = [b.cal(srv, "ask", timeout=5) for _ in range(200)]
        await wait_until(lambda: len(held) == 200)
        name = srv.partition("#")[2]
        assert subscriptions(b, "a")[name] == 1
        assert watchers(a, srv) == ["b"]
        for reply in held:
            a.snd(reply, "ok")
        assert [await c for c in calls] == [("ok",)] * 200
        assert lowlevel.statistics(b)["calls"] == 0
        # the monitor stays for the next call to this port, unseen by users
        assert subscriptions(b, "a")[name] == 1
        # a death reaches every pending call at once
        held.clear()
        calls = [b.cal(srv, "ask", timeout=5) for _ in range(20)]
        await wait_until(lambda: len(held) == 20)
        assert subscriptions(b, "a")[name] == 1
        a.kil(srv, "bye")
        for call in calls:
            with pytest.raises(aemp.PortDead, match="bye"):
                await call
        assert lowlevel.statistics(b)["calls"] == 0 and name not in subscriptions(b, "a")


async def test_idle_remote_targets_are_bounded() -> None:
    from aemp._call import MAX_IDLE_TARGETS

    secret = "s"
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=secret) as a,
        aemp.Node(nodeid="b", seeds=a.listeners, secret=secret) as b,
    ):
        servers = [a.port(ask=lambda reply: a.snd(reply, 1)) for _ in range(MAX_IDLE_TARGETS + 20)]
        for srv in servers:
            assert await b.cal(srv, "ask", timeout=5) == (1,)
        subscribed = subscriptions(b, "a")
        kept = [s for s in servers if subscribed.get(s.partition("#")[2])]
        assert kept == servers[-MAX_IDLE_TARGETS:]  # the oldest were dropped
        assert lowlevel.statistics(b)["call_targets"] == MAX_IDLE_TARGETS
        a.kil(servers[-1])  # an idle target's port dies: it is forgotten
        await wait_until(lambda: lowlevel.statistics(b)["call_targets"] == MAX_IDLE_TARGETS - 1)
        subscribed = subscriptions(b, "a")
        assert servers[-1].partition("#")[2] not in subscribed
        assert [s for s in servers if subscribed.get(s.partition("#")[2])] == kept[:-1]
        assert lowlevel.statistics(b)["calls"] == 0


async def test_timeouts_are_never_early_and_barely_late(node: aemp.Node) -> None:
    silent = node.port(ask=lambda reply: None)
    loop = asyncio.get_running_loop()
    long = node.cal(silent, "ask", timeout=60)  # arms the shared timer for later
    ended: dict[float, float] = {}

    async def timed(limit: float) -> None:
        t0 = loop.time()
        with pytest.raises(aemp.CallTimeout):
            await node.cal(silent, "ask", timeout=limit)
        ended[limit] = loop.time() - t0

    await asyncio.gather(*(timed(t) for t in (0.08, 0.02, 0.05, 0.02)))
    for timeout, took in ended.items():  # early only by the loop's clock resolution
        assert timeout - 0.002 <= took < timeout + 0.15, (timeout, took)  # slack for slow CI
    assert not long.done()
    long.cancel()
    assert lowlevel.statistics(node)["calls"] == 0


async def test_a_send_that_raises_leaves_no_call_behind() -> None:
    secret = "s"
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=secret, framing_format=["json"]) as a,
        aemp.Node(nodeid="b", seeds=a.listeners, secret=secret, framing_format=["json"]) as b,
    ):
        srv = a.port(echo=lambda *m: a.snd(m[-1], *m[:-1]))
        assert await b.cal(srv, "echo", 1) == (1,)
        ports = set(lowlevel.ports(b))
        with pytest.raises(aemp.MessageError, match="binary"):
            b.cal(srv, "echo", b"json cannot carry bytes")
        assert lowlevel.statistics(b)["calls"] == 0 and set(lowlevel.ports(b)) == ports
        assert subscriptions(b, "a")[srv.partition("#")[2]] == 1  # the idle one
