"""aemp.names.Singleton: one instance on the network at a time, moved when
its node is lost, stopped when the name is lost.

Three global nodes linked in memory on virtual time, each a candidate; a
watcher task checks every 10 ms of loop time that at most one runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import aemp
from aemp import lowlevel, names, testing

pytestmark = pytest.mark.virtual_time
TARGET = "spawn_targets:echo_init"


class Candidates:
    def __init__(self, mesh: testing.Mesh, singletons: list[names.Singleton]) -> None:
        self.mesh = mesh
        self.singletons = singletons
        self.most = 0
        self.runners: list[str] = []

    def running(self) -> list[names.Singleton]:
        return [s for s in self.singletons if s.running and not s.node.closed]

    async def watch(self) -> None:
        while True:
            now = self.running()
            self.most = max(self.most, len(now))
            if now and (not self.runners or self.runners[-1] != now[0].node.id):
                self.runners.append(now[0].node.id)
            await asyncio.sleep(0.01)


@pytest.fixture
async def candidates() -> AsyncIterator[Candidates]:
    async with testing.mesh(["a", "b", "c"], monitor_timeout=1) as mesh:
        for n in mesh.nodes:
            names.serve(n)
        await testing.wait_until(lambda: len(lowlevel.database(mesh["c"])["globals"]) == 2, 5)
        singletons = []
        for n in mesh.nodes:
            m = await names.open("aemp://", node=n, ttl=1.0)
            singletons.append(names.Singleton(n, m, "echo", TARGET, "one"))
        c = Candidates(mesh, singletons)
        watcher = asyncio.ensure_future(c.watch())
        yield c
        watcher.cancel()
        for s in singletons:
            if not s.node.closed:
                await s.aclose()
                await s.manager.aclose()
        assert c.most <= 1, c.runners


def other_manager(c: Candidates, s: names.Singleton) -> names.NameManager:
    return next(o.manager for o in c.singletons if o is not s)


async def one_runs(c: Candidates) -> names.Singleton:
    await testing.wait_until(lambda: len(c.running()) == 1, 10)
    return c.running()[0]


async def test_exactly_one_runs_and_answers(candidates: Candidates) -> None:
    s = await one_runs(candidates)
    assert s.port is not None
    other = next(n for n in candidates.mesh.nodes if n is not s.node)
    assert await other.cal(s.port, "echo", 5, timeout=5) == ("one", 5)
    await asyncio.sleep(5)  # it stays where it is
    assert candidates.running() == [s]


async def test_it_moves_when_its_node_is_lost(candidates: Candidates) -> None:
    first = await one_runs(candidates)
    for n in candidates.mesh.nodes:  # as a crash looks from the others: links lost
        if n is not first.node:
            candidates.mesh.link(first.node.id, n.id).cut("node lost")
    await first.node.close()
    second = await one_runs(candidates)
    assert second.node is not first.node
    await asyncio.sleep(0.05)  # a look of the watcher
    assert candidates.runners == [first.node.id, second.node.id]


async def test_it_stops_when_the_name_is_lost(candidates: Candidates) -> None:
    first = await one_runs(candidates)
    port = first.port
    died: list[tuple[object, ...]] = []
    other = next(n for n in candidates.mesh.nodes if n is not first.node)
    other.mon(port, lambda *reason: died.append(reason))
    await other_manager(candidates, first).release("aemp.singleton", "echo")  # as the CLI does
    await testing.wait_until(lambda: died, 5)
    assert died[0][0] == "aemp.names" and "lost the name" in died[0][1]
    await one_runs(candidates)  # and a candidate runs it again
    # a release by somebody else frees the name at once (an operator's
    # override, docs/names.md): the old instance stops at its holder's next
    # renewal, so for up to a third of the ttl two may run
    candidates.most = min(candidates.most, 1)


async def test_under_a_partition_each_side_may_run_it_and_one_is_left_on_heal(
    candidates: Candidates,
) -> None:
    # aemp:// grants on both sides of a split (docs/names.md): so does the
    # singleton on it; on heal the older grant keeps the name, the other
    # instance is stopped
    first = await one_runs(candidates)
    links = [candidates.mesh.link(first.node.id, n.id)
             for n in candidates.mesh.nodes if n is not first.node]  # fmt: skip
    for link in links:
        link.partition()
    second = await testing.wait_until(
        lambda: next((s for s in candidates.running() if s is not first), None), 15
    )
    assert second.node is not first.node
    for link in links:
        link.heal()
        link.reconnect()
    await testing.wait_until(lambda: len(candidates.running()) == 1, 10)
    assert candidates.running() == [first]
    candidates.most = 1  # two ran while split, as documented


async def test_bad_arguments(candidates: Candidates) -> None:
    s = candidates.singletons[0]
    with pytest.raises(aemp.InvalidArgument, match=r"wants an aemp\.Node"):
        names.Singleton("a", s.manager, "x", TARGET)  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidArgument, match="wants a NameManager"):
        names.Singleton(s.node, "aemp://", "x", TARGET)  # type: ignore[arg-type]
    with pytest.raises(names.InvalidName):
        names.Singleton(s.node, s.manager, "bad name", TARGET)
