"""Global nodes that meet over twin connections share their whole database.

Three nodes without seeds (each its own global node, as with discovery)
are given each other as seeds in the same instant, so pairs dial each
other and two connections race (tests/test_link_simultaneous.py's Jitter
holds back each connection's handshake a random fraction of a
millisecond). A connection that authenticated while its twin is still in
its handshake delivers what the peer sends before it becomes the link:
a global's g_global can so arrive before the link is up. The answer (a
g_global of our own, then our g_set) must still reach the peer, in that
order, or the peer lacks our entries for good.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import until
from test_link_simultaneous import Counter, Jitter

import aemp
from aemp import lowlevel

SECRET = "twins-secret"
ROUNDS = 25


async def test_three_globals_meeting_at_once_share_every_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed = random.randrange(2**32)
    Jitter(monkeypatch, random.Random(seed))
    counter = Counter(monkeypatch)
    ids = ["g0", "g1", "g2"]
    for r in range(ROUNDS):
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    aemp.Node(nodeid=n, binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=2)
                )
                for n in ids
            ]
            views: list[dict[str, Any]] = [{} for _ in nodes]
            for node, view in zip(nodes, views, strict=True):
                node.db_set("host", node.id, r)
                node.db_mon("host", lambda fam, *_, view=view: view.update(keys=sorted(fam)))
            for node in nodes:  # all at once: every pair dials both ways
                for other in nodes:
                    if other is not node:
                        lowlevel.add_seed(node, other.listeners[0])

            def whole(nodes: list[aemp.Node] = nodes, views: list[dict[str, Any]] = views) -> bool:
                return all(len(n.up_nodes()) == 2 for n in nodes) and all(
                    v.get("keys") == ids for v in views
                )

            try:
                await until(whole, 10, "every node seeing all three")
            except AssertionError as e:
                seen = [
                    (n.id, n.up_nodes(), v.get("keys")) for n, v in zip(nodes, views, strict=True)
                ]
                raise AssertionError(f"seed {seed}, round {r}: {e}: {seen}") from None
            await asyncio.sleep(0)
    assert counter.made > 6 * ROUNDS, counter.made  # twins did race
