"""Guarantees 2 and 3 (docs/ports.md) on in-memory links in virtual time.

2. No silent holes: after a link is lost, no later message from the node
   reaches a port on the other side before every monitor on that port fired.
3. Loss is detected: a monitor on a port of a node that stops answering
   fires within monitor_timeout (default 30 s); on a clean loss, at once.

Every test runs in virtual time: 30 s of heartbeats pass in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from aemp import testing
from aemp.testing import MemoryLink, wait_until

pytestmark = pytest.mark.virtual_time

MONITORS = 3
BACKLOG = 10_000  # messages queued on a's run queue: several drains' worth


def _cut(link: MemoryLink) -> None:
    link.cut("cut")


def _fail_far_end(link: MemoryLink) -> None:
    link.end("b").fail("b gave up")  # a hears of it as a reset


def _close_far_end(link: MemoryLink) -> None:
    link.end("b").close("b closed")  # a reads what is in flight, then the end


def _fail_near_end(link: MemoryLink) -> None:
    link.end("a").fail("a gave up")


LOSSES: dict[str, Callable[[MemoryLink], None]] = {
    "cut": _cut,
    "far end fails": _fail_far_end,
    "far end closes": _close_far_end,
    "near end fails": _fail_near_end,
}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("relink", ["at once", "next turn", "after 0.2 s", "never"])
@pytest.mark.parametrize("delay", [0.0, 0.05])
@pytest.mark.parametrize("busy", [False, True])
async def test_no_message_after_a_loss_overtakes_the_monitors(
    loss: str, relink: str, delay: float, busy: bool
) -> None:
    real = time.monotonic()
    async with testing.pair(delay=delay) as (a, b, link):
        loop = asyncio.get_running_loop()
        events: list[tuple[str, Any]] = []  # one log for both nodes: one loop, one order
        port = b.port(lambda i: events.append(("got", i)))
        for k in range(MONITORS):
            a.mon(port, lambda *r, k=k: events.append(("fired", (k, r))))
        for i in range(20):  # a stream, some of it in flight at the loss
            a.snd(port, i)
            await asyncio.sleep(0.01)
        if busy:  # the monitors' turn on a's run queue comes late
            local = a.port(lambda *m: None)
            for _ in range(BACKLOG):
                a.snd(local, 0)
        LOSSES[loss](link)
        # sent after the loss (a may not have heard of it yet: it must not matter)
        for i in range(100, 105):
            a.snd(port, i)
        if relink == "at once":
            link.reconnect()
        elif relink == "next turn":
            loop.call_soon(link.reconnect)
        elif relink == "after 0.2 s":
            loop.call_later(0.2, link.reconnect)
        for i in range(105, 110):
            a.snd(port, i)
            await asyncio.sleep(0.01)
        await wait_until(lambda: sum(e[0] == "fired" for e in events) == MONITORS, 5)
        if relink != "never":
            await wait_until(lambda: link.is_up, 5)
            a.snd(port, 200)
            await wait_until(lambda: ("got", 200) in events, 5)
        got = [i for kind, i in events if kind == "got"]
        assert got == sorted(got), f"out of order: {got}"  # guarantee 1
        first_fired = events.index(next(e for e in events if e[0] == "fired"))
        after = [n for n, e in enumerate(events) if e[0] == "got" and e[1] >= 100]
        assert all(n > first_fired + MONITORS - 1 for n in after), events
        fired = [e[1] for e in events if e[0] == "fired"]
        assert [k for k, _ in fired] == list(range(MONITORS))  # each once
        assert all(r[:2] == ("transport_error", "b") for _, r in fired), fired
    assert time.monotonic() - real < 5


@pytest.mark.parametrize("one_way", [False, True])
async def test_a_silent_node_is_detected_within_monitor_timeout(one_way: bool) -> None:
    """The default monitor_timeout, 30 s, in virtual time: well under a second of real time."""
    real = time.monotonic()
    async with testing.pair() as (a, b, link):
        assert a.config.monitor_timeout == 30
        loop = asyncio.get_running_loop()
        fired: list[tuple[float, tuple[Any, ...]]] = []
        port = b.port(lambda *m: None)
        a.mon(port, lambda *r: fired.append((loop.time(), r)))
        await asyncio.sleep(5)  # heartbeats flow meanwhile
        assert link.is_up and not fired
        t0 = loop.time()
        if one_way:
            link.drop = lambda sender, packet: sender == "b"  # b stops answering
        else:
            link.partition()
        # a keeps sending meanwhile: writing is not hearing
        for i in range(40):
            a.snd(port, i)
            await asyncio.sleep(1)
            if fired:
                break
        await wait_until(lambda: fired, 31)
        at, reason = fired[0]
        assert reason == ("transport_error", "b", "heartbeat timeout")
        hb = 30 / 4
        assert 30 - hb <= at - t0 <= 30, at - t0
    assert time.monotonic() - real < 1


async def test_a_clean_loss_is_detected_at_once() -> None:
    real = time.monotonic()
    async with testing.pair() as (a, b, link):
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        port = b.port()
        a.mon(port, lambda *r: fired.append(loop.time()))
        await asyncio.sleep(10)
        t0 = loop.time()
        link.end(b).close("b shut down")
        await wait_until(lambda: fired)
        assert fired[0] - t0 < 0.05
    assert time.monotonic() - real < 1


async def test_an_unreachable_node_is_reported_within_monitor_timeout() -> None:
    real = time.monotonic()
    async with testing.pair() as (a, _, _):
        loop = asyncio.get_running_loop()
        fired: list[tuple[float, tuple[Any, ...]]] = []
        t0 = loop.time()
        a.mon("nowhere#port", lambda *r: fired.append((loop.time(), r)))
        await wait_until(lambda: fired, 30)
        at, reason = fired[0]
        assert at - t0 <= 30 and reason[:2] == ("transport_error", "nowhere")
    assert time.monotonic() - real < 1
