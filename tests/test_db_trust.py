"""What a peer with the secret may do to the database, tried from a real peer over TCP.

A slave writes only its own entries: in the reserved families ('l, 'g,
...) only under its own node ID, so it cannot redirect another node's
traffic to itself. A node that announces itself global may relay others'
'l records, but a node's own record shows over them. Answers to queries
and lookups come only from the node's master, and query IDs cannot be
guessed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import free_port, until

import aemp
from aemp import lowlevel, wire
from tests.conftest import Recorder

SECRET = "db-trust-secret"


async def start(stack: AsyncExitStack, **keys: Any) -> aemp.Node:
    node = aemp.Node(secret=SECRET, monitor_timeout=2.0, **keys)
    stack.push_async_callback(node.close)
    return await node.start()


def refusals(caplog: pytest.LogCaptureFixture, src: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "refused" in r.getMessage() and src in r.getMessage()
    ]


async def network(stack: AsyncExitStack) -> tuple[str, aemp.Node, aemp.Node, aemp.Node, str]:
    """A global, a victim with a port, and a hostile slave: all attached."""
    addr = f"127.0.0.1:{free_port()}"
    g = await start(stack, nodeid="g", binds=[addr])
    victim = await start(stack, nodeid="victim", binds=["127.0.0.1:0"], seeds=[addr])
    evil = await start(stack, nodeid="evil", binds=["127.0.0.1:0"], seeds=[addr])
    got = Recorder()
    vport = victim.port(got)
    victim.db_reg("svc", vport)
    await until(
        lambda: {"victim", "evil"} <= set(lowlevel.database(g)["merged"].get("'l", {})),
        what="both attached",
    )
    return addr, g, victim, evil, vport


async def reaches_victim(stack: AsyncExitStack, addr: str, victim: aemp.Node, vport: str) -> None:
    """A fresh node, knowing only the port ID, gets a message to the victim."""
    fresh = await start(stack, nodeid="fresh/%u", seeds=[addr])
    got = Recorder()
    victim.rcv(vport, got)
    fresh.snd(vport, "hello")
    await got.wait(1, limit=5)
    assert got.calls == [("hello",)]


async def test_a_slave_cannot_write_another_nodes_listeners(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    addr, g, victim, evil, vport = await network(stack)
    fake = evil.listeners
    # exactly what a hostile slave sends its master: three ways to write 'l
    # (g_set and g_slave replace the sender's whole share: g_slave comes last)
    evil.snd(g.id, "g_set", {"'l": {"victim": fake}, "'g": {"ghost": None}})
    evil.snd(g.id, "g_upd", "'l", {"victim": fake, "ghost": fake})
    evil.snd(g.id, "g_upd", "'g", {"ghost": None, "evil": None})
    evil.snd(g.id, "g_slave", {"'l": {"victim": fake, "evil": fake}, "svc": {"mine": 1}})
    await evil.db_keys("svc", timeout=5)  # answered after all of the above

    merged = lowlevel.database(g)["merged"]
    assert merged["'l"]["victim"] == victim.listeners
    assert "ghost" not in merged["'l"] and set(merged["'g"]) == {"g"}
    assert merged["svc"]["mine"] == 1, "the rest of a packet still applies"
    said = refusals(caplog, "evil")
    for key in ("'l/victim", "'l/ghost", "'g/ghost", "'g/evil"):
        assert any(key in m for m in said), (key, said)
    await reaches_victim(stack, addr, victim, vport)


async def test_a_fake_global_cannot_override_a_nodes_own_listeners(
    stack: AsyncExitStack,
) -> None:
    """g_global makes any node a global in the receiver's eyes; what it relays
    about a node that is attached here does not show over that node's own word."""
    addr, g, victim, evil, vport = await network(stack)
    fake = evil.listeners
    evil.snd(g.id, "g_global")
    evil.snd(g.id, "g_set", {"'l": {"victim": fake, "g": fake, "evil": fake}})
    evil.snd(g.id, "g_upd", "'l", {"victim": fake}, [])
    await until(
        lambda: (
            "evil" in lowlevel.database(g)["globals"]
            and lowlevel.database(g)["shards"].get("evil", {}).get("'l", {}).get("victim") == fake
        ),
        what="taken as a global, its relayed record stored",
    )
    merged = lowlevel.database(g)["merged"]
    assert merged["'l"]["victim"] == victim.listeners
    assert merged["'l"]["g"] == g.listeners
    await reaches_victim(stack, addr, victim, vport)
    # the victim goes: the relayed record is what is left, as a relay says
    await victim.close()
    await until(lambda: lowlevel.database(g)["merged"]["'l"].get("victim") == fake)


class RawPeer:
    """A peer that speaks the wire protocol by hand: it sends what it likes."""

    def __init__(self, nodeid: str) -> None:
        self.conn = wire.Connection(
            wire.Settings(nodeid=nodeid, provider="hostile", secret=SECRET), peeraddr="x"
        )
        self.got: list[Any] = []

    async def connect(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.reader, self.writer = await asyncio.open_connection(host, int(port))
        self.conn.start()
        await self._pump(lambda ev: isinstance(ev, wire.Authenticated))

    def send(self, *packets: list[Any]) -> None:
        self.conn.send_packets(list(packets))
        self.writer.write(self.conn.data_to_send())

    async def wait_for(self, port: str) -> list[Any]:
        """Read until a packet to our port `port` arrives."""
        await self._pump(lambda ev: any(p[0] == port for p in self.got))
        return next(p for p in self.got if p[0] == port)

    async def _pump(self, done: Callable[[Any], bool]) -> None:
        async with asyncio.timeout(5):
            while True:
                ev = self.conn.next_event()
                self.writer.write(self.conn.data_to_send())
                if isinstance(ev, wire.Packets):
                    self.got.extend(ev.packets)
                if done(ev):
                    return
                if ev is wire.NEED_DATA:
                    data = await self.reader.read(65536)
                    assert data, "closed"
                    self.conn.receive_data(data)

    def close(self) -> None:
        self.writer.close()


async def test_answers_come_only_from_the_master(stack: AsyncExitStack) -> None:
    dead = f"127.0.0.1:{free_port()}"  # the seed is down: queries and lookups wait
    node = await start(stack, nodeid="node", binds=["127.0.0.1:0"], seeds=[dead])
    query = node.db_family("svc", timeout=30)
    lookup = asyncio.ensure_future(node.lookup("victim"))
    evil = RawPeer("evil")
    await evil.connect(node.listeners[0])
    try:
        guesses = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["aa", "ab", query.id]
        evil.send(*[["", "g_reply", qid, {"forged": 1}] for qid in guesses])
        evil.send(["", "g_found", "victim", ["127.0.0.1:1"]])
        evil.send(["", "up_nodes", "evil#done"])  # answered once the above were handled
        await evil.wait_for("done")
        await asyncio.sleep(0)
        assert not query.done() and not lookup.done()
    finally:
        evil.close()
        query.cancel()
        lookup.cancel()


async def test_query_ids_are_not_guessable(node: aemp.Node) -> None:
    queries = [node.db_keys("fam") for _ in range(50)]
    ids = [q.id for q in queries]
    assert len(set(ids)) == len(ids)
    assert all(len(i) >= 16 for i in ids), ids[:3]
    for q in queries:
        await q
