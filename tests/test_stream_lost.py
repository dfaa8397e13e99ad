"""A data stream whose socket fails under the writer: write() must not
return as if all were well. uvloop drops what is written to a transport
that is closing and tells connection_lost a loop turn later; a writer
whose buffer never fills never waits, so a loop of send_all calls
(``while True: await stream.send_all(block)``) spun for ever, its own
timeout unable to run. (The reader-killed case of
tests/test_streams_processes.py hung CI so.)"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from conftest import Recorder

import aemp
from aemp import lowlevel
from aemp.streams import BrokenStreamError


async def test_a_write_into_a_reset_connection_raises_instead_of_spinning() -> None:
    async with aemp.Node(nodeid="lost") as node:
        one, two = await lowlevel.stream_pair(node)
        await one.write(b"x" * 1000)
        assert await two.read() == b"x" * 1000
        two.close(abort=True)  # a reset, as a killed process's socket gives
        await asyncio.sleep(0.05)  # the socket is closed now; `one` has not heard yet
        spins = 0
        with pytest.raises(BrokenStreamError) as e:
            for spins in range(100_000):  # noqa: B007 - a bound, not a count to use
                await one.write(b"y" * 1000)
        assert spins < 100, f"{spins} writes went into a dead connection"
        print(e.value)


async def test_snd_and_drain_into_a_failed_link_let_the_loss_be_told() -> None:
    """The same for a link: its transport closing under a loop of snd and
    drain (connection_lost not run yet). drain waits for the loss instead
    of returning at once, so the link is lost, snd queues for a new one
    and is refused past its cap, and the monitor fires."""
    async with (
        aemp.Node(nodeid="far", binds=["127.0.0.1:0"], secret="s") as far,
        aemp.Node(nodeid="near", seeds=far.listeners, secret="s") as near,
    ):
        port = far.port(m=lambda *a: None)
        assert await near.cal(far.id, "time", timeout=5)
        fired = Recorder()
        near.mon(port, fired)
        net = near.network
        assert net is not None
        (conn,) = [c for c in net.conns if c.is_link]
        assert conn.transport is not None
        conn.transport.abort()  # as a socket that failed: closing, not yet told
        n = 0
        with contextlib.suppress(aemp.Overloaded):
            for n in range(300_000):
                near.snd(port, "m", n)
                await near.drain(port)
        assert n < 200_000, f"{n} messages went into a failed link with no word"
        await fired.wait(1, limit=10)
        assert fired.calls[0][0] == "transport_error"
