"""Global nodes mesh and hold one database whatever each one's seeds list says.

Every layout of two and three global nodes is tried (up to relabelling),
each global's seeds drawn from: none, itself, one other global, all of
them; only layouts whose seed graph is connected can converge, so the
others are left out. A chain of four is tried too. Each global gets a
plain node that lists only that global as its seed and registers a port;
every global and every plain node must end up seeing every entry, and a
plain node on one side must reach a port registered on the other side.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import free_port

import aemp
from aemp import lowlevel

SECRET = "db-mesh-secret"
Option = int | str | None  # None: no seeds; "self"; "all"; or the index of one other global


def _connected(seeds: list[set[int]]) -> bool:
    n = len(seeds)
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, s in enumerate(seeds):
        for j in s - {i}:
            adj[i].add(j)
            adj[j].add(i)
    seen, todo = {0}, [0]
    while todo:
        for j in adj[todo.pop()] - seen:
            seen.add(j)
            todo.append(j)
    return len(seen) == n


def _seeds(n: int, layout: tuple[Option, ...]) -> list[set[int]]:
    out: list[set[int]] = []
    for i, o in enumerate(layout):
        if o is None:
            out.append(set())
        elif o == "self":
            out.append({i})
        elif o == "all":
            out.append(set(range(n)))
        else:
            assert isinstance(o, int)
            out.append({o})
    return out


def layouts(n: int) -> list[tuple[Option, ...]]:
    """Every connected layout of n globals, one per class of relabellings."""
    options: list[Option] = [None, "self", *range(n), "all"]
    found: dict[tuple[str, ...], tuple[Option, ...]] = {}
    for layout in itertools.product(*[[o for o in options if o != i] for i in range(n)]):
        if not _connected(_seeds(n, layout)):
            continue
        names = []
        for perm in itertools.permutations(range(n)):
            new: list[str] = [""] * n
            for i, o in enumerate(layout):
                new[perm[i]] = str(perm[o]) if isinstance(o, int) else str(o)
            names.append(tuple(new))
        found.setdefault(min(names), layout)
    return list(found.values())


def _name(layout: tuple[Option, ...]) -> str:
    def one(i: int, o: Option) -> str:
        what = "-" if o is None else o if isinstance(o, str) else f"g{o + 1}"
        return f"g{i + 1}:{what}"

    return ",".join(one(i, o) for i, o in enumerate(layout))


async def until(cond: Callable[[], Any], limit: float, what: str) -> None:
    """Poll `cond` every 20 ms until it is true; fail after `limit` seconds."""
    try:
        async with asyncio.timeout(limit):
            while not cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"after {limit} s: not {what}") from None


async def until_async(cond: Callable[[], Awaitable[bool]], limit: float, what: str) -> None:
    try:
        async with asyncio.timeout(limit):
            while not await cond():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"after {limit} s: not {what}") from None


async def check_network(seeds: list[set[int]]) -> None:
    n = len(seeds)
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(n)]
    gids = [f"g{i + 1}" for i in range(n)]
    async with AsyncExitStack() as stack:

        async def start(**keys: Any) -> aemp.Node:
            node = aemp.Node(secret=SECRET, monitor_timeout=2.0, **keys)
            return await stack.enter_async_context(node)

        globals_ = [
            await start(nodeid=gids[i], binds=[addrs[i]], seeds=[addrs[j] for j in sorted(s)])
            for i, s in enumerate(seeds)
        ]
        plain = [
            await start(nodeid=f"p{i + 1}/%u", binds=["127.0.0.1:0"], seeds=[addrs[i]])
            for i in range(n)
        ]
        ports = []
        for i, p in enumerate(plain):
            port = p.port()
            p.rcv(port, ask=lambda reply, i=i, p=p: p.snd(reply, "answer", i))
            p.db_reg("svc", port, i)
            ports.append(port)
        want = {port: i for i, port in enumerate(ports)}

        await until(lambda: all(g.is_global for g in globals_), 5, f"every one of {gids} global")
        await until(
            lambda: all(lowlevel.database(g)["globals"] == sorted(set(gids) - {g.id})
                        for g in globals_),
            10,
            "a full mesh of globals",
        )  # fmt: skip
        await until(
            lambda: all(lowlevel.database(g)["merged"].get("svc") == want
                        for g in globals_),
            10,
            "every entry on every global",
        )  # fmt: skip

        async def everyone_sees_all() -> bool:
            got = [await p.db_family("svc", timeout=2) for p in plain]
            return all(g == want for g in got)

        await until_async(everyone_sees_all, 10, "every entry seen from every plain node")
        # across the network: the first plain node to the last one's port and back
        assert await plain[0].cal(ports[-1], "ask", timeout=5) == ("answer", n - 1)
        assert await plain[-1].cal(ports[0], "ask", timeout=5) == ("answer", 0)


@pytest.mark.parametrize("layout", layouts(2), ids=_name)
async def test_two_globals_converge(layout: tuple[Option, ...]) -> None:
    await check_network(_seeds(2, layout))


@pytest.mark.parametrize("layout", layouts(3), ids=_name)
async def test_three_globals_converge(layout: tuple[Option, ...]) -> None:
    await check_network(_seeds(3, layout))


async def test_chain_of_four_globals_converges() -> None:
    """g1 <- g2 <- g3 <- g4: each global lists only the one before it."""
    await check_network([set(), {0}, {1}, {2}])


def test_the_layouts_are_all_there() -> None:
    # 2 globals: 12 connected layouts, 7 up to relabelling; 3 globals: 20
    assert len(layouts(2)) == 7 and len(layouts(3)) == 20
