"""The up_nodes node request, between nodes talking TCP on 127.0.0.1.

A node answers ``["", "up_nodes", reply...]`` with the IDs of the nodes it
is connected to now; ``aemp trace`` walks the network with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conftest import Recorder, settle
from test_remote import wait_up

import aemp

SECRET = "up-nodes-secret"


@pytest.fixture
async def star() -> AsyncIterator[tuple[aemp.Node, aemp.Node, aemp.Node]]:
    """Node "hub" listens; "b" and "c" each connect to it (and not to each other)."""
    async with aemp.Node(nodeid="hub", binds=["127.0.0.1:0"], secret=SECRET) as hub:  # noqa: SIM117
        async with aemp.Node(nodeid="b", seeds=hub.listeners, secret=SECRET) as b:
            async with aemp.Node(nodeid="c", seeds=hub.listeners, secret=SECRET) as c:
                await wait_up(hub, "b")
                await wait_up(hub, "c")
                yield hub, b, c


async def test_a_node_names_the_nodes_it_is_connected_to(
    star: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    hub, b, _c = star
    (up,) = await b.cal("hub", "up_nodes", timeout=5)
    assert sorted(up) == ["b", "c"]
    # a node without listeners answers over the connection it made; b and c
    # are not connected to each other
    assert await hub.cal("b", "up_nodes", timeout=5) == (["hub"],)
    assert await hub.cal("c", "up_nodes", timeout=5) == (["hub"],)


async def test_the_answer_follows_connections(
    star: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    hub, b, c = star
    await c.close()
    async with asyncio.timeout(5):
        while hub.node_is_up("c"):
            await asyncio.sleep(0.005)
    assert await b.cal("hub", "up_nodes", timeout=5) == (["b"],)


async def test_reply_with_extra_elements_and_can(
    star: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    _hub, b, _c = star
    rec = Recorder()
    r = b.port(rec)
    b.snd("hub", "up_nodes")  # no reply port: nothing is sent, nothing breaks
    b.snd("hub", "up_nodes", r, "tag", 1)
    b.snd("hub", "can", "up_nodes", r, "can")
    await rec.wait(2, limit=5)
    await settle(20)
    calls = sorted(rec.calls, key=repr)
    assert calls[0] == ("can", True)
    assert calls[1][:2] == ("tag", 1) and sorted(calls[1][2]) == ["b", "c"]
    assert len(calls) == 2
