"""A link that failed is aborted, not closed: once the sender's monitors fired,
nothing still queued on the link reaches the peer, and the peer fires its
monitors too. Closing on purpose (a node that closes) still sends everything."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import Recorder

import aemp
from aemp import _addr, testing
from aemp.net import _conn

SECRET = "test-secret"
PAYLOAD = b"x" * 4000  # one message is about 4 KB on the wire


async def wait_up(node: aemp.Node, other: str, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not node.node_is_up(other):
            await asyncio.sleep(0.005)


async def flood(sender: aemp.Node, port: str, fired: Recorder, limit: int) -> tuple[int, int]:
    """Send numbered messages until the monitor fires; bounded in count and
    time. Returns (messages snd took, times it refused one as Overloaded)."""
    sent = refused = 0
    async with asyncio.timeout(20):
        while not fired.calls:
            for _ in range(64):
                try:
                    sender.snd(port, "m", sent, PAYLOAD)
                except aemp.Overloaded:
                    refused += 1
                    await asyncio.sleep(0.01)
                    break
                sent += 1
            await asyncio.sleep(0)
            assert sent < limit, f"the monitor did not fire after {sent} messages"
    return sent, refused


async def test_failed_link_delivers_nothing_queued_after_the_monitor_fired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The receiver stops reading; the sender's buffer passes max_unsent (snd
    refuses more), the peer takes nothing for stall_timeout and the monitor
    fires ("peer is not reading"). The receiver then reads what
    is left: only what sat in its own kernel receive buffer, a few MB, not
    the limit's worth that was still queued at the sender; and its monitor
    on a port of the sender fires too (the connection was reset)."""
    limit = 4 * 1024 * 1024
    async with (
        aemp.Node(nodeid="rcv", binds=["127.0.0.1:0"], secret=SECRET) as rcv,
        aemp.Node(
            nodeid="snd",
            seeds=rcv.listeners,
            secret=SECRET,
            max_unsent=limit,
            monitor_timeout=4.0,
            stall_timeout=1.0,
        ) as snd,
    ):
        await wait_up(snd, "rcv")
        await wait_up(rcv, "snd")
        got: list[int] = []
        port = rcv.port(m=lambda i, payload: got.append(i))
        sender_port = snd.port(lambda *msg: None)
        fired_snd, fired_rcv = Recorder(), Recorder()
        snd.mon(port, fired_snd)
        rcv.mon(sender_port, fired_rcv)
        assert await snd.cal(rcv.id, "time", timeout=5)  # both monitors are in place
        conn = testing.connection(rcv, "snd")
        conn.transport.pause_reading()
        sent, refused = await flood(snd, port, fired_snd, limit=40 * limit // len(PAYLOAD))
        assert refused  # max_unsent was reached before the link was dropped
        assert fired_snd.calls[0][:2] == ("transport_error", "rcv")
        assert "peer is not reading" in fired_snd.calls[0][2]
        assert "stall_timeout" in fired_snd.calls[0][2]
        conn.transport.resume_reading()
        await fired_rcv.wait(1, limit=5)
        await asyncio.sleep(0.05)  # nothing more comes: the connection is gone
        assert fired_rcv.calls[0][:2] == ("transport_error", "snd")
        assert got == list(range(len(got)))  # a prefix, in order
        queued = limit // len(PAYLOAD)  # at least this much was in the sender's buffer
        assert len(got) <= sent - queued, (len(got), sent)
        assert len(got) * len(PAYLOAD) < 16 * 1024 * 1024


async def test_closing_a_node_still_sends_what_it_queued() -> None:
    """Node.close is a close on purpose: the burst sent just before it arrives whole."""
    async with aemp.Node(nodeid="rcv", binds=["127.0.0.1:0"], secret=SECRET) as rcv:
        got: list[int] = []
        done = asyncio.get_running_loop().create_future()
        n = 20_000

        def m(i: int, payload: bytes) -> None:
            got.append(i)
            if i == n - 1:
                done.set_result(None)

        port = rcv.port(m=m)
        snd = aemp.Node(nodeid="snd", seeds=rcv.listeners, secret=SECRET)
        await snd.start()
        await wait_up(snd, "rcv")
        for i in range(n):
            snd.snd(port, "m", i, PAYLOAD[:200])
        await snd.close()
        await asyncio.wait_for(done, 10)
        assert got == list(range(n))


async def test_refusal_after_the_greeting_is_a_clean_close() -> None:
    """A connection refused on purpose (here: to a node that is connected
    already) ends with a FIN after the greeting, not a reset."""
    async with aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a:
        host, port = _addr.parse_address(a.listeners[0])
        reader, writer = await asyncio.open_connection(host, port)
        # greet as the node itself: refused with "I refuse to talk to myself"
        writer.write(b"aemp;1;a;hmac_sha3_512;json\nnonce\n")
        t0 = time.monotonic()
        data = await asyncio.wait_for(reader.read(), 5)  # read to EOF: no reset raised
        assert data.startswith(b"aemp;1;a;") and time.monotonic() - t0 < 5
        writer.close()


async def test_a_long_burst_of_replies_goes_out_in_parts_and_whole() -> None:
    """Replies made while reading a burst go out in parts of CHUNK_PACKETS;
    the flush that ends the loop turn then finds the batch already written
    and must write nothing (it once failed there, logged as an ERROR)."""
    n = 4 * _conn.CHUNK_PACKETS
    async with (
        aemp.Node(nodeid="server", binds=["127.0.0.1:0"], secret=SECRET) as server,
        aemp.Node(nodeid="client", seeds=server.listeners, secret=SECRET) as client,
    ):
        echo = server.port(lambda i, reply: server.snd(reply, i))
        calls = [client.cal(echo, i, timeout=10) for i in range(n)]
        assert [await c for c in calls] == [(i,) for i in range(n)]
        sent = testing.connection(server, "client").bytes_out
        assert sent > 0
