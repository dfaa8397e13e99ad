"""db_mon views when the only master goes away: kept, marked not current, then one diff.

A pool built on db_mon must not see every worker vanish because the
registry is away for a while: the view stays as it was (DbMonitor.current
says it is not vouched for), entries of nodes this node saw go down still
leave it at once, and when a master is back each monitor gets one call
with the difference between the view it kept and the master's.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from conftest import Watch, free_port, until

import aemp
from aemp import wire
from tests.conftest import Recorder

SECRET = "db-views-secret"


async def start(stack: AsyncExitStack, **keys: Any) -> aemp.Node:
    """A node closed when the test ends, if the test did not close it before."""
    node = aemp.Node(secret=SECRET, monitor_timeout=2.0, **keys)
    stack.push_async_callback(node.close)
    return await node.start()


async def test_losing_the_only_master_keeps_the_views(stack: AsyncExitStack) -> None:
    addr = f"127.0.0.1:{free_port()}"
    seed = await start(stack, nodeid="seed", binds=[addr])
    obs = await start(stack, nodeid="obs/%u", binds=["127.0.0.1:0"], seeds=[addr])
    worker = await start(stack, nodeid="w/%u", binds=["127.0.0.1:0"], seeds=[addr])
    wport = worker.port(lambda *m: None)
    worker.db_reg("svc", wport, "w")
    sport = seed.port(lambda *m: None)
    seed.db_reg("svc", sport, "s")
    seed.db_set("svc", "static", 1)
    seed.db_set("svc", "old", 1)
    obs.db_set("svc", "mine", 1)
    w = Watch()
    mon = obs.db_mon("svc", w)
    assert not mon.current  # no answer yet
    full = {wport: "w", sport: "s", "static": 1, "old": 1, "mine": 1}
    await until(lambda: w.view == full, what="the whole family seen")
    assert mon.current
    # a pool watches its workers' ports: a direct connection to the worker
    lost = Recorder()
    obs.mon(wport, lost)
    await until(lambda: obs.node_is_up(worker.id), what="connected to the worker")
    await seed.close()

    # the master is gone and nobody else can vouch: the view stays, but for
    # the master's own ports (the master was seen going down)
    await until(lambda: obs.master is None, what="masterless")
    await until(lambda: sport not in w.view, what="the master's port gone")
    assert w.view == {wport: "w", "static": 1, "old": 1, "mine": 1}
    assert w.events[-1] == (set(), set(), {sport})
    assert not mon.current
    # a new monitor of the same family gets the kept view at once
    w2 = Watch()
    mon2 = obs.db_mon("svc", w2)
    await until(lambda: w2.events, what="a first call from the kept view")
    assert w2.view == w.view and not mon2.current
    mon2.cancel()

    # a worker that goes down meanwhile leaves the view at once
    await worker.close()
    await lost.wait()
    await until(lambda: wport not in w.view, what="the dead worker gone")
    assert w.events[-1] == (set(), set(), {wport})
    assert w.view == {"static": 1, "old": 1, "mine": 1} and not mon.current

    # what this node writes meanwhile reaches the next master
    obs.db_set("svc", "later", 2)
    obs.db_del("svc", "mine")
    seen = len(w.events)

    # the master comes back at the same address, with other data of its own
    seed = aemp.Node(nodeid="seed", binds=[addr], secret=SECRET, monitor_timeout=2.0)
    seed.db_set("svc", "static", 2)
    stack.push_async_callback(seed.close)
    await seed.start()
    await until(lambda: mon.current, limit=10, what="the view current again")
    assert len(w.events) == seen + 1, w.events[seen:]
    assert w.events[-1] == ({"later"}, {"static"}, {"old", "mine"})
    assert w.view == {"static": 2, "later": 2}
    assert obs.master == "seed"


async def test_reattach_without_a_difference_still_says_so(stack: AsyncExitStack) -> None:
    """A call with three empty lists tells the monitor that its view is current again."""
    addr = f"127.0.0.1:{free_port()}"
    seed = await start(stack, nodeid="seed", binds=[addr])
    obs = await start(stack, nodeid="obs/%u", seeds=[addr])
    obs.db_set("svc", "k", 1)
    w = Watch()
    mon = obs.db_mon("svc", w)
    await until(lambda: mon.current and w.view == {"k": 1})
    await seed.close()
    await until(lambda: obs.master is None)
    seen = len(w.events)
    seed = await start(stack, nodeid="seed", binds=[addr])
    await until(lambda: mon.current, limit=10)
    assert w.events[seen:] == [(set(), set(), set())]
    assert w.view == {"k": 1}


class FakeMaster:
    """A seed spoken by hand, that answers with whatever the test tells it.

    It stands for a master that has not yet noticed a node going down.
    """

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.families: dict[str, dict[str, Any]] = {}
        self.addresses: dict[str, list[str]] = {}
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in self.writers:
                w.close()
            await self.server.wait_closed()
            self.writers.clear()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        conn = wire.Connection(
            wire.Settings(nodeid=self.nodeid, provider="test", secret=SECRET), peeraddr="x"
        )
        conn.start()
        writer.write(conn.data_to_send())
        try:
            while True:
                ev = conn.next_event()
                if isinstance(ev, wire.Packets):
                    conn.send_packets([a for p in ev.packets for a in self._answer(p)])
                writer.write(conn.data_to_send())
                if ev is wire.NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        return
                    conn.receive_data(data)
        except (ConnectionError, aemp.AempError):
            return
        finally:
            writer.close()

    def _answer(self, packet: list[Any]) -> list[list[Any]]:
        if packet[:2] == ["", "g_mon1"]:
            return [["", "g_chg1", packet[2], self.families.get(packet[2])]]
        if packet[:2] == ["", "g_find"]:
            return [["", "g_found", packet[2], self.addresses.get(packet[2])]]
        return []


async def test_a_node_seen_going_down_stays_out_of_the_next_masters_view(
    stack: AsyncExitStack,
) -> None:
    master = FakeMaster("m")
    stack.push_async_callback(master.close)
    addr = await master.open()
    nowhere = f"127.0.0.1:{free_port()}"
    worker = await start(stack, nodeid="w/%u", binds=["127.0.0.1:0"], seeds=[nowhere])
    wport = worker.port(lambda *m: None)
    master.families["svc"] = {wport: 1, "k": 1}
    master.addresses[worker.id] = worker.listeners
    obs = await start(stack, nodeid="obs/%u", seeds=[addr])
    w = Watch()
    mon = obs.db_mon("svc", w)
    await until(lambda: mon.current and w.view == {wport: 1, "k": 1})
    lost = Recorder()
    obs.mon(wport, lost)
    await until(lambda: obs.node_is_up(worker.id), what="connected to the worker")

    await master.close()
    await until(lambda: obs.master is None, what="masterless")
    await worker.close()
    await lost.wait()
    await until(lambda: wport not in w.view, what="the dead worker gone")
    seen = len(w.events)

    # the master is back, but has not heard that the worker went
    master.families["svc"] = {wport: 1, "k": 1, "new": 2}
    await master.open()
    await until(lambda: mon.current, limit=10, what="the view current again")
    assert w.events[seen:] == [({"new"}, set(), set())]
    assert w.view == {"k": 1, "new": 2}
