"""aemp.names across processes: contention, a holder killed with SIGKILL, an
etcd server restarted, a global node killed.

Workers are tests/names_proc.py in processes of their own; etcd is a real
server (tests/names_helpers.py); aemp:// runs over TCP with global nodes in
this process or in a worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, until
from names_helpers import EtcdServer, Worker

import aemp
from aemp import names

pytestmark = pytest.mark.slow
SECRET = "names-test"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def workers() -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.kill()
        await w.proc.wait()


async def seed(stack: AsyncExitStack, nodeid: str = "seed") -> aemp.Node:
    node = await stack.enter_async_context(
        aemp.Node(nodeid=nodeid, binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=2)
    )
    names.serve(node)
    return node


async def contend(
    workers: list[Worker], url: str, opts: dict[str, Any], manager: names.NameManager
) -> None:
    """50 tasks in 5 processes try_acquire one name at once: exactly one wins."""
    await manager.acquire("c")  # "0" exists now (NameNotExist otherwise)
    await manager.release("c", "0")
    procs = [await Worker.start("contend", url, {**opts, "family": "c", "name": "0", "tasks": 10})
             for _ in range(5)]  # fmt: skip
    workers.extend(procs)
    results = [await w.line() for w in procs]
    won = [r for res in results for r in res["won"]]
    assert len(won) == 1, results
    assert sum(res["in_use"] for res in results) == 49
    [held] = [n for n in await manager.list("c") if n.name == "0"]
    assert not held.free and str(held.token) == won[0].split(":")[1]


async def test_contention_on_memory() -> None:
    managers = [await names.open(f"memory://{uuid.uuid4().hex}") for _ in range(1)]
    store_url = managers[0].url
    managers += [await names.open(store_url) for _ in range(4)]
    await managers[0].acquire("c")
    await managers[0].release("c", "0")
    start = asyncio.Event()

    async def one(m: names.NameManager) -> bool:
        await start.wait()
        try:
            await m.try_acquire("c", "0")
        except names.NameInUse:
            return False
        return True

    tasks = [asyncio.create_task(one(m)) for m in managers for _ in range(10)]
    await asyncio.sleep(0)
    start.set()
    assert sorted(await asyncio.gather(*tasks)) == [False] * 49 + [True]


async def test_contention_on_etcd(etcd: EtcdServer, workers: list[Worker]) -> None:
    async with await names.open(etcd.url) as m:
        await contend(workers, etcd.url, {}, m)


async def test_contention_on_aemp(workers: list[Worker]) -> None:
    async with AsyncExitStack() as stack:
        s = await seed(stack)
        async with await names.open("aemp://", node=s) as m:
            await contend(workers, "aemp://", {"seeds": s.listeners, "secret": SECRET}, m)


async def killed_holder(workers: list[Worker], url: str, opts: dict[str, Any],
                        manager: names.NameManager, ttl: float) -> float:  # fmt: skip
    """A holder killed with SIGKILL: its name is free one ttl later, not before."""
    await manager.acquire("k")
    await manager.release("k", "0")
    holder = await Worker.start("hold", url, {**opts, "family": "k", "name": "0", "ttl": ttl})
    workers.append(holder)
    token = (await holder.line())["token"]
    await asyncio.sleep(ttl)  # a few renewals
    holder.kill()
    killed = time.monotonic()
    with pytest.raises(names.NameInUse):
        await manager.try_acquire("k", "0")
    while True:
        try:
            lease = await manager.try_acquire("k", "0")
            break
        except names.NameInUse:
            assert time.monotonic() - killed < 3 * ttl + 2, "the name never became free"
            await asyncio.sleep(0.05)
    freed = time.monotonic() - killed
    assert lease.token > token
    # it was renewed up to the kill, so it lasted at least most of a ttl
    assert freed > 0.5 * ttl
    return freed


async def test_killed_holder_on_etcd(etcd: EtcdServer, workers: list[Worker]) -> None:
    async with await names.open(etcd.url) as m:
        await killed_holder(workers, etcd.url, {}, m, ttl=2.0)


async def test_killed_holder_on_aemp(workers: list[Worker]) -> None:
    async with AsyncExitStack() as stack:
        s = await seed(stack)
        async with await names.open("aemp://", node=s) as m:
            await killed_holder(
                workers, "aemp://", {"seeds": s.listeners, "secret": SECRET}, m, 1.0
            )


async def test_etcd_restart_keeps_the_lease(etcd: EtcdServer, workers: list[Worker]) -> None:
    """etcd stops and comes back within the ttl: the holder sees errors while
    it is away, keeps its name, and nobody else gets it."""
    async with await names.open(etcd.url, ttl=6.0) as m:
        await m.acquire("r")
        await m.release("r", "0")
        holder = await Worker.start("hold", etcd.url, {"family": "r", "name": "0", "ttl": 6.0})
        workers.append(holder)
        token = (await holder.line())["token"]
        etcd.stop()
        error = await holder.line(limit=15)
        assert error["error"].startswith("BackendUnavailable"), error
        await asyncio.to_thread(etcd.start)
        await asyncio.sleep(3)  # renewals succeed again (a lost lease would print NameLost)
        with pytest.raises(names.NameInUse):
            await m.try_acquire("r", "0")
        [rec] = await m.list("r")
        assert not rec.free and rec.token == token
        holder.kill()


async def test_a_killed_global_node_hands_over_the_table(workers: list[Worker]) -> None:
    """Two globals: the leader (the smaller ID) is killed with SIGKILL; the
    other leads after its quiet period, and the holder keeps its name."""
    bind = f"127.0.0.1:{free_port()}"
    async with AsyncExitStack() as stack:
        second = await seed(stack, "g2")
        leader = await Worker.start(
            "global",
            "",
            {"nodeid": "g1", "bind": bind, "seeds": [bind, *second.listeners], "secret": SECRET},
        )
        workers.append(leader)
        await leader.line()
        seeds = [bind, *second.listeners]
        m = await stack.enter_async_context(await names.open("aemp://", node=second, ttl=1.0))
        await until(lambda: aemp.lowlevel.database(second)["globals"] == ["g1"], 10, "a mesh")
        await m.acquire("g")
        await m.release("g", "0")
        holder = await Worker.start(
            "hold",
            "aemp://",
            {"family": "g", "name": "0", "ttl": 3.0, "seeds": seeds, "secret": SECRET},
        )
        workers.append(holder)
        token = (await holder.line())["token"]
        # renewed on g1 past the expiry that g2 copied with the grant: g2 must
        # wait for a lease that long (3 s), not for its own manager's 1 s
        await asyncio.sleep(4)
        leader.kill()
        await until(lambda: aemp.lowlevel.database(second)["globals"] == [], 10, "g1 lost")
        # the new leader grants nothing in its quiet period, then refuses: held
        with pytest.raises(names.NameInUse):
            await m.try_acquire("g", "0")
        [rec] = await m.list("g")
        assert not rec.free and rec.token == token
        for _ in range(8):  # through the quiet period and after it
            await asyncio.sleep(0.5)
            with pytest.raises(names.NameInUse):
                await m.try_acquire("g", "0")
        said = await holder.lines_so_far()
        assert not any("NameLost" in line.get("error", "") for line in said), said
        holder.kill()
        # and once the holder is gone, its name is free a ttl later
        for _ in range(200):
            try:
                lease = await m.try_acquire("g", "0")
                break
            except names.NameInUse:
                await asyncio.sleep(0.05)
        assert lease.token > token


async def test_a_new_leader_grants_nothing_before_the_old_leases_lapse(
    workers: list[Worker],
) -> None:
    """The holder's only seed is the leader g1, killed: the holder cannot renew
    and loses its 3 s lease; g2 (whose own manager uses 1 s) waits long
    enough that its first grant comes after the holder gave the name up."""
    bind = f"127.0.0.1:{free_port()}"
    async with AsyncExitStack() as stack:
        second = await seed(stack, "g2")
        leader = await Worker.start(
            "global", "",
            {"nodeid": "g1", "bind": bind, "seeds": [bind, *second.listeners], "secret": SECRET},
        )  # fmt: skip
        workers.append(leader)
        await leader.line()
        m = await stack.enter_async_context(await names.open("aemp://", node=second, ttl=1.0))
        await until(lambda: aemp.lowlevel.global_nodes(second) == ["g1"], 10, "a mesh")
        await m.acquire("n")
        await m.release("n", "0")
        holder = await Worker.start(
            "hold", "aemp://",
            {"family": "n", "name": "0", "ttl": 3.0, "seeds": [bind], "secret": SECRET},
        )  # fmt: skip
        workers.append(holder)
        token = (await holder.line())["token"]
        await asyncio.sleep(4)  # renewed on g1 past what g2 copied with the grant
        leader.kill()
        while True:
            try:
                lease = await m.try_acquire("n", "0")
                granted = time.monotonic()
                break
            except (names.NameInUse, names.BackendUnavailable):
                await asyncio.sleep(0.02)
        said = await holder.lines_so_far(quiet=1.0)
        lost = [line for line in said if line.get("error", "").startswith("NameLost")]
        assert lost, said
        assert lost[0]["at"] <= granted, (lost[0], granted)
        assert lease.token > token
