"""Flow control: a fast sender into a slow receiver over TCP.

The receiver falls behind; it must pause reading (TCP pushes back) instead
of queueing without bound, keep its timers running, and the sender must
slow down (drain) instead of being disconnected. Each case floods for
FLOOD seconds with monitor_timeout and stall_timeout of 1 s, so a link
taken for dead or stalled would be dropped well within it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from conftest import until

import aemp
from aemp import lowlevel, wire

SECRET = "flow-test"
FLOOD = 1.5  # seconds of flooding per case
LIMIT = 2000  # the receiver's queue_limit
# What the receiver may hold past queue_limit: the slice of one read that
# is being delivered when the limit is crossed (16 KiB of ~10-byte packets),
# relayed copies of it, and the run queue's own entries.
SLACK = 2 * 16 * 1024 // 8


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


PAYLOAD = b"x" * 500  # loopback's socket buffers fill with a few thousand


async def flood(
    kind: str, make_receiver: Callable[[aemp.Node, list[int]], str], queues: bool = False
) -> None:
    """queues: the receiver's port queues more than queue_limit (async), so
    the node itself pauses reading; a sync handler, or a relay to one, is
    fed a read slice per loop turn and keeps up with that, TCP pushing back."""
    keys: dict[str, Any] = {"secret": SECRET, "monitor_timeout": 1.0, "stall_timeout": 1.0}
    async with (
        aemp.Node(nodeid="rcv", binds=["127.0.0.1:0"], queue_limit=LIMIT, **keys) as rcv,
        aemp.Node(nodeid="snd", seeds=rcv.listeners, send_buffer=256 * 1024, **keys) as snd,
    ):
        got: list[int] = []
        port = make_receiver(rcv, got)
        lost: list[tuple[Any, ...]] = []
        snd.mon(port, lambda *reason: lost.append(reason))
        assert await snd.cal(rcv.id, "time", timeout=5)  # linked, monitor in place

        # the receiver's own timer, and what it holds, sampled every 10 ms
        gaps: list[float] = []
        paused = [False]
        held: list[int] = []
        last = [rcv.loop.time()]

        def tick() -> None:
            now = rcv.loop.time()
            gaps.append(now - last[0])
            last[0] = now
            s = lowlevel.statistics(rcv)
            held.append(s["queued"] + s["inbound"] + s["backlog"])
            paused[0] = paused[0] or s["reading_paused"]
            ticker[0] = lowlevel.timer(rcv, 0.01, tick)

        ticker = [lowlevel.timer(rcv, 0.01, tick)]
        sent = 0
        waited = 0.0  # in drain: the sender was slowed down
        end = snd.loop.time() + FLOOD
        while snd.loop.time() < end:
            for _ in range(100):
                snd.snd(port, "m", sent, PAYLOAD)
                sent += 1
            t0 = snd.loop.time()
            await snd.drain(port)
            waited += snd.loop.time() - t0
            await asyncio.sleep(0)
        async with asyncio.timeout(30):
            while len(got) < sent and not lost:
                await asyncio.sleep(0.01)
        ticker[0].cancel()
        assert not lost, lost
        assert got == list(range(sent)), f"{kind}: {len(got)} of {sent}, out of order or lost"
        assert snd.node_is_up(rcv.id) and rcv.node_is_up(snd.id)
        assert waited > FLOOD / 4, f"{kind}: the sender was not slowed ({sent} messages)"
        assert paused[0] or not queues, f"{kind}: reading never paused ({sent} messages)"
        assert max(held) <= LIMIT + SLACK, (kind, max(held))
        # the 10 ms timer ran throughout (a 2 ms handler slice, the sender's
        # batch): a loop the flood starved would show a gap near FLOOD; the
        # bound leaves room for a loaded machine's scheduling (0.25 s was
        # passed by a load average above 6)
        assert max(gaps) < 0.5, (kind, max(gaps))


async def test_flood_into_a_slow_sync_handler() -> None:
    def make(node: aemp.Node, got: list[int]) -> str:
        def m(i: int, payload: bytes) -> None:
            busy(50e-6)
            got.append(i)

        return node.port(m=m)

    await flood("sync 50 us", make)


async def test_flood_relayed_to_a_slow_local_port() -> None:
    def make(node: aemp.Node, got: list[int]) -> str:
        def slow(i: int, payload: bytes) -> None:
            busy(50e-6)
            got.append(i)

        slow_port = node.port(m=slow)
        return node.port(m=lambda i, payload: node.snd(slow_port, "m", i, payload))

    await flood("relay", make)


async def test_flood_into_an_async_handler() -> None:
    def make(node: aemp.Node, got: list[int]) -> str:
        async def m(i: int, payload: bytes) -> None:
            await asyncio.sleep(0)
            got.append(i)

        return node.port(m=m)

    await flood("async", make, queues=True)


@pytest.mark.allow_error_log
async def test_a_peer_that_takes_nothing_is_dropped_after_stall_timeout() -> None:
    """The receiver's only port never finishes its first message: reading
    pauses for good. Its heartbeats still reach the sender, and it does not
    time the sender out (its silence is the receiver's own doing); the
    sender drops the link for stall_timeout, and says so."""
    keys: dict[str, Any] = {"secret": SECRET, "monitor_timeout": 1.0, "stall_timeout": 1.0}
    async with (
        aemp.Node(nodeid="rcv", binds=["127.0.0.1:0"], queue_limit=100, **keys) as rcv,
        aemp.Node(nodeid="snd", seeds=rcv.listeners, send_buffer=64 * 1024, **keys) as snd,
    ):
        never = asyncio.Event()

        async def stuck(*msg: Any) -> None:
            await never.wait()

        port = rcv.port(stuck)
        lost: list[tuple[Any, ...]] = []
        snd.mon(port, lambda *reason: lost.append(reason))
        rcv_lost: list[tuple[Any, ...]] = []
        rcv.mon_nodes(lambda nodeid, up, *reason: rcv_lost.append(reason) if not up else None)
        assert await snd.cal(rcv.id, "time", timeout=5)
        payload = b"x" * 1000
        started = snd.loop.time()
        async with asyncio.timeout(10):
            for _ in range(40_000):  # at most 40 MB: more than loopback's socket buffers
                if lost:
                    break
                snd.snd(port, "m", payload)
                if snd.loop.time() - started > 0.5:
                    await asyncio.sleep(0.01)
                else:
                    await asyncio.sleep(0)
            while not lost:
                await asyncio.sleep(0.05)
        assert lost[0][:2] == ("transport_error", "rcv")
        assert "stall_timeout" in lost[0][2], lost
        assert snd.loop.time() - started >= 1.0
        await asyncio.sleep(0.1)
        # the receiver saw a reset, never a heartbeat timeout of its own
        assert all("heartbeat" not in str(r) for r in rcv_lost), rcv_lost
        never.set()


async def test_drain_of_this_node_waits_for_its_queue() -> None:
    """drain() on a local port waits until the node holds under half of queue_limit."""
    async with aemp.Node(queue_limit=100) as node:
        got: list[int] = []
        port = node.port(m=got.append)
        for i in range(1000):
            node.snd(port, "m", i)
        await node.drain(port)
        assert lowlevel.statistics(node)["queued"] <= 50
        assert len(got) >= 950
        await node.drain(node.id)  # returns at once now
        with pytest.raises(aemp.InvalidArgument, match="drain"):
            await node.drain(42)  # type: ignore[arg-type]


UNSENT = 1 << 20  # the max_unsent of limited_pair's sender


@contextlib.asynccontextmanager
async def limited_pair(**keys: Any) -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    """A receiver, and a sender linked to it with send_buffer 256 KiB and
    max_unsent UNSENT."""
    async with (
        aemp.Node(nodeid="rcv", binds=["127.0.0.1:0"], secret=SECRET, **keys) as rcv,
        aemp.Node(
            nodeid="snd",
            seeds=rcv.listeners,
            secret=SECRET,
            send_buffer=256 * 1024,
            max_unsent=UNSENT,
            **keys,
        ) as snd,
    ):
        yield rcv, snd


async def test_a_sender_that_never_drains_is_refused_not_dropped() -> None:
    """A sender that never awaits drain() into a slower receiver: past
    max_unsent its snd raises Overloaded (nothing sent, nothing lost), the
    link stays up, and every message that snd took arrives, in order."""
    async with limited_pair(monitor_timeout=1.0, stall_timeout=1.0) as (rcv, snd):
        got: list[int] = []

        def m(i: int, payload: bytes) -> None:
            busy(100e-6)
            got.append(i)

        port = rcv.port(m=m)
        lost: list[tuple[Any, ...]] = []
        snd.mon(port, lambda *reason: lost.append(reason))
        assert await snd.cal(rcv.id, "time", timeout=5)
        sent = refused = 0
        errors: list[str] = []
        end = snd.loop.time() + FLOOD
        while snd.loop.time() < end:
            for _ in range(200):
                try:
                    snd.snd(port, "m", sent, PAYLOAD)
                except aemp.Overloaded as e:
                    refused += 1
                    errors.append(str(e))
                    break
                sent += 1
            await asyncio.sleep(0)
        assert refused, f"max_unsent never reached ({sent} messages)"
        assert "max_unsent (1048576)" in errors[0] and "drain('rcv')" in errors[0], errors[0]
        assert isinstance(aemp.Overloaded("x"), BufferError)
        # a cal is refused the same way while the link is full
        for _ in range(100_000):  # max_unsent (1 MiB) holds far fewer
            try:
                snd.snd(port, "m", sent, PAYLOAD)
            except aemp.Overloaded:
                break
            sent += 1
        else:
            raise AssertionError(f"snd never refused past max_unsent ({sent} messages taken)")
        with pytest.raises(aemp.Overloaded):
            await snd.cal(port, "m", timeout=1)
        async with asyncio.timeout(30):
            while len(got) < sent and not lost:
                await asyncio.sleep(0.01)
        assert not lost, lost
        assert got == list(range(sent))
        assert snd.node_is_up(rcv.id) and rcv.node_is_up(snd.id)
        snd.snd(port, "m", sent, PAYLOAD)  # taken again once drained
        await snd.drain(port)


@pytest.mark.parametrize("framing", ["msgpack", "json"])
@pytest.mark.parametrize("size", [500, 100_000], ids=["small", "large"])
async def test_a_burst_within_one_loop_turn_is_refused_past_max_unsent(
    size: int, framing: str
) -> None:
    """snd after snd with no await between them, so no loop turn for the
    link to look at its buffer: max_unsent holds all the same, overshot by
    one batch at most (OUT_PACKETS small packets, or one large one), and
    what snd took arrives in order. In both framings (JSON is what a Perl
    peer may ask for)."""
    limit = UNSENT
    async with limited_pair(framing_format=[framing]) as (rcv, snd):
        got: list[int] = []
        port = rcv.port(m=lambda i, payload: got.append(i))
        assert await snd.cal(rcv.id, "time", timeout=5)
        net = snd.network
        assert net is not None and net.statistics()[rcv.id]["framing"] == framing
        payload: Any = b"y" * size if framing == "msgpack" else "y" * size  # JSON has no bytes
        sent = 0
        # the receiver shares this loop, so it reads nothing meanwhile: the
        # socket buffers on both sides fill, then the link's own buffer
        for _ in range(min(200_000, (64 << 20) // size)):  # far past loopback's buffers
            try:
                snd.snd(port, "m", sent, payload)
            except aemp.Overloaded as e:
                error = str(e)
                break
            sent += 1
        else:
            raise AssertionError(f"snd never refused past max_unsent ({sent} messages taken)")
        unsent = int(error.split(" holds ")[1].split()[0])
        batch = wire.OUT_PACKETS * (size + 40) if size <= wire.OUT_BYTES else size + 40
        assert limit < unsent <= limit + batch, (unsent, error)
        async with asyncio.timeout(30):
            while len(got) < sent:
                await asyncio.sleep(0.01)
        assert got == list(range(sent))
        snd.snd(port, "m", sent, payload)  # taken again once drained
        await snd.drain(port)


async def test_a_node_closes_cleanly_while_its_link_holds_twice_max_unsent() -> None:
    """What the node sends itself (requests, replies) is never refused; a
    link it has overrun past twice max_unsent fails when the batch is
    flushed, and that may happen as the node closes: close() ends cleanly
    (it raised InvalidStateError, the link ending twice)."""
    keys: dict[str, Any] = {"secret": SECRET, "max_unsent": 1 << 20, "send_buffer": 256 << 10}
    async with aemp.Node(nodeid="rcv", binds=["127.0.0.1:0"], **keys) as rcv:
        snd = aemp.Node(nodeid="snd", seeds=rcv.listeners, **keys)
        await snd.start()
        try:
            assert await snd.cal(rcv.id, "time", timeout=5)
            net = snd.network
            assert net is not None
            (conn,) = [c for c in net.conns if c.is_link]
            assert conn.transport is not None
            for _ in range(2000):  # 200 MB at most; loopback's buffers hold far less
                conn.send(["", b"z" * 100_000])  # a heartbeat-like packet, never refused
                if conn.transport.get_write_buffer_size() > 2 << 20:
                    break
            else:
                raise AssertionError("the link's buffer never passed twice max_unsent")
        finally:
            await snd.close()
        assert conn.closed and "twice max_unsent" in conn.why, conn.why
        await until(lambda: not rcv.node_is_up("snd"), limit=10, what="the link lost at rcv")


async def test_while_connecting_snd_is_refused_past_max_unsent_and_the_packet_cap() -> None:
    """Packets wait for a link that is coming up; past max_unsent bytes (or
    100,000 packets) snd raises Overloaded, and what was queued arrives."""
    keys: dict[str, Any] = {"secret": SECRET}
    async with aemp.Node(nodeid="rcv2", binds=["127.0.0.1:0"], **keys) as rcv:
        got: list[int] = []
        port = rcv.port(m=lambda i, payload: got.append(i))
        async with aemp.Node(
            nodeid="snd2",
            seeds=rcv.listeners,
            send_buffer=64 * 1024,
            max_unsent=1 << 20,
            **keys,
        ) as snd:
            assert not snd.node_is_up("rcv2")
            payload = b"p" * 4000
            sent = 0
            with pytest.raises(aemp.Overloaded, match=r"wait for the connection"):
                for _ in range(1000):  # no await: the link cannot come up meanwhile
                    snd.snd(port, "m", sent, payload)
                    sent += 1
            assert 200 <= sent <= (1 << 20) // 4000 + 1, sent
            lost: list[tuple[Any, ...]] = []
            snd.mon(port, lambda *reason: lost.append(reason))
            async with asyncio.timeout(10):
                while len(got) < sent:
                    await asyncio.sleep(0.005)
            assert got == list(range(sent)) and not lost
    async with aemp.Node(nodeid="rcv3", binds=["127.0.0.1:0"], **keys) as rcv:
        small: list[int] = []
        port = rcv.port(m=small.append)
        async with aemp.Node(nodeid="snd3", seeds=rcv.listeners, **keys) as snd:
            n = 0
            with pytest.raises(aemp.Overloaded, match=r"100000 packets"):
                for _ in range(100_001):
                    snd.snd(port, "m", n)
                    n += 1
            assert n == 100_000
            async with asyncio.timeout(20):
                while len(small) < n:
                    await asyncio.sleep(0.01)
            assert small == list(range(n))


def test_max_unsent_below_send_buffer_is_a_config_error() -> None:
    with pytest.raises(aemp.ConfigError, match=r"'max_unsent' \(65536\) must be at least"):
        aemp.Node(send_buffer=1 << 20, max_unsent=64 * 1024)


async def test_only_the_links_feeding_a_stuck_port_pause() -> None:
    """A port that never finishes fills its backlog from node a: reading
    from a pauses. Node b, whose messages go to a port that keeps up, reads
    on; when the stuck port is killed, a's link reads again."""
    keys: dict[str, Any] = {"secret": SECRET, "monitor_timeout": 2.0}
    async with (
        aemp.Node(nodeid="r", binds=["127.0.0.1:0"], queue_limit=100, **keys) as r,
        aemp.Node(nodeid="a", seeds=r.listeners, send_buffer=64 * 1024, **keys) as a,
        aemp.Node(nodeid="b", seeds=r.listeners, **keys) as b,
    ):
        never = asyncio.Event()

        async def stuck(*msg: Any) -> None:
            await never.wait()

        stuck_port = r.port(stuck)
        fast: list[int] = []
        fast_port = r.port(m=fast.append)
        assert await a.cal(r.id, "time", timeout=5) and await b.cal(r.id, "time", timeout=5)
        for i in range(2000):  # far past queue_limit
            a.snd(stuck_port, "m", i, b"x" * 100)
        async with asyncio.timeout(5):
            while not lowlevel.statistics(r)["reading_paused"]:
                await asyncio.sleep(0.01)
        for i in range(500):
            b.snd(fast_port, "m", i)
            if i % 50 == 49:
                await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            while len(fast) < 500:
                await asyncio.sleep(0.01)
        assert fast == list(range(500))
        assert lowlevel.statistics(r)["reading_paused"]  # a is still paused
        held = lowlevel.statistics(r)["backlog"]
        assert held <= 100 + SLACK, held
        r.kil(stuck_port)
        async with asyncio.timeout(5):
            while lowlevel.statistics(r)["reading_paused"]:
                await asyncio.sleep(0.01)
        assert a.node_is_up("r") and b.node_is_up("r")
        never.set()
