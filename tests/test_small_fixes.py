"""Smaller promises: bad input named as the user gave it, lookups of
unknown nodes that back off, and the state of departed nodes forgotten."""

from __future__ import annotations

import asyncio
import gc
import itertools
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

import aemp
from aemp import lowlevel, testing
from aemp._config import Config, check_value
from aemp.testing import wait_until

SECRET = "test-secret"


async def wait_up(node: aemp.Node, other: str, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not node.node_is_up(other):
            await asyncio.sleep(0.005)


def nested(depth: int) -> list[Any]:
    x: list[Any] = []
    for _ in range(depth):
        x = [x]
    return x


@pytest.fixture
async def pair() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async with aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a:  # noqa: SIM117
        async with aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET) as b:
            await wait_up(b, "a")
            yield a, b


# ---------------------------------------------------------------- 13a: nesting


@pytest.mark.parametrize("framing", ["msgpack", "json"])
@pytest.mark.parametrize("depth", [600, 2000, 100_000])
async def test_too_deep_to_a_remote_port_is_a_message_error(framing: str, depth: int) -> None:
    async with aemp.Node(  # noqa: SIM117
        nodeid="a", binds=["127.0.0.1:0"], secret=SECRET, framing_format=[framing]
    ) as a:
        async with aemp.Node(
            nodeid="b", seeds=a.listeners, secret=SECRET, framing_format=[framing]
        ) as b:
            await wait_up(b, "a")
            got: list[Any] = []
            p = a.port(lambda *m: got.append(m))
            deep = nested(depth)
            for msg in [("t", deep), (deep,), ("t", {"k": deep})]:
                with pytest.raises(aemp.MessageError, match="nested more than 500 levels deep"):
                    b.snd(p, *msg)  # the first send finds the route, the second takes it
                with pytest.raises(aemp.MessageError, match="nested more than 500 levels deep"):
                    b.snd(p, *msg)
                with pytest.raises(aemp.MessageError, match="nested more than 500 levels deep"):
                    b.cal(p, *msg)
                with pytest.raises(aemp.MessageError, match="nested more than 500 levels deep"):
                    a.snd(p, *msg)  # the local path says the same
            b.snd(p, "still", "fine")  # the link was not harmed
            async with asyncio.timeout(5):
                while not got:
                    await asyncio.sleep(0.005)
            assert got == [("still", "fine")]


async def test_a_peer_packet_too_deep_to_repr_closes_only_its_connection(
    pair: tuple[aemp.Node, aemp.Node],
) -> None:
    a, b = pair
    # a packet that is a map nested 1020 deep: msgpack decodes it, but repr()
    # recursed past Python's limit while writing the error
    data = b"\x81\xa1k" * 1020 + b"\xc0"
    assert isinstance(msgpack.unpackb(data), dict)
    conn = testing.connection(b, "a")
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    a.mon_nodes(lambda nodeid, up, *why: lost.done() or up or lost.set_result(str(why)))
    assert conn.transport is not None
    conn.transport.write(data)
    assert "packet is not an array" in await asyncio.wait_for(lost, 5)


# ---------------------------------------------------------------- 13b: nodeid ""


async def test_an_empty_node_id_is_refused() -> None:
    with pytest.raises(aemp.ConfigError, match=r"'nodeid' must not be empty \(got ''\)"):
        aemp.Node(nodeid="")
    with pytest.raises(aemp.ConfigError, match="'nodeid' must not be empty"):
        check_value("nodeid", "")
    async with aemp.Node(nodeid=None) as n:  # None (or nothing) is still anonymous
        assert n.id.startswith("anon/")


# ---------------------------------------------------------------- 13c: numbers


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("monitor_timeout", float("inf"), "from 0.1 to 86400"),
        ("monitor_timeout", float("nan"), "positive number of seconds"),
        ("monitor_timeout", 1e300, "from 0.1 to 86400"),
        ("monitor_timeout", 1e-9, "from 0.1 to 86400"),
        ("monitor_timeout", -1, "positive number of seconds"),
        ("monitor_timeout", "5", "positive number of seconds"),
        ("connect_interval", float("inf"), "from 0.01 to 86400"),
        ("connect_interval", 0, "positive number of seconds"),
        ("connect_interval", 1e-5, "from 0.01 to 86400"),
        ("max_packet", 10**30, "at most 4294967295 bytes"),
        ("max_packet", 1.5e6, "an int of at least 1024 bytes"),
        ("max_packet", 12, "an int of at least 1024 bytes"),
    ],
)
async def test_numeric_keys_are_checked_under_their_own_name(
    key: str, value: Any, expected: str
) -> None:
    for check in (
        lambda: aemp.Node(**{key: value}),
        lambda: Config.from_keys({key: value}),
        lambda: check_value(key, value),
    ):
        with pytest.raises(aemp.ConfigError) as info:
            check()
        text = str(info.value)
        assert text.startswith(f"{key!r} must be"), text
        assert repr(value) in text and expected in text, text
        assert "heartbeat" not in text


async def test_numeric_keys_at_their_bounds_work() -> None:
    async with aemp.Node(  # noqa: SIM117
        binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=86400, max_packet=2**32 - 1
    ) as a:
        async with aemp.Node(
            seeds=a.listeners, secret=SECRET, monitor_timeout=0.1, connect_interval=0.01
        ) as b:
            await wait_up(b, a.id)


# ---------------------------------------------------------------- 13d: addresses


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"seeds": ["127.0.0.1:99999"]}, "'seeds' entry '127.0.0.1:99999' is not valid"),
        ({"seeds": ["localhost"]}, "'seeds' entry 'localhost' is not valid"),
        ({"seeds": ["*:4040"]}, "'seeds' entry '*:4040' is not valid"),
        ({"seeds": ["h:x"]}, "'seeds' entry 'h:x' is not valid"),
        ({"binds": ["127.0.0.1:99999"]}, "'binds' entry '127.0.0.1:99999' is not valid"),
        ({"binds": ["h:x"]}, "'binds' entry 'h:x' is not valid"),
    ],
)
async def test_a_bad_address_names_its_key_and_value(keys: dict[str, Any], named: str) -> None:
    ((key, [value]),) = keys.items()
    for check in (
        lambda: aemp.Node(secret=SECRET, **keys),
        lambda: check_value(key, [value]),
    ):
        with pytest.raises(aemp.ConfigError, match="expected 'host:port'") as info:
            check()
        assert named in str(info.value)
        other = "bind" if key == "seeds" else "seed"
        assert other not in str(info.value)


# ---------------------------------------------------------------- 11: back-off


class _Finds:
    """Counts the lookups a node makes, each of which asks its master (g_find)."""

    def __init__(self, node: aemp.Node, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[Any] = []
        lookup = node.lookup  # what the network calls for an address it does not know

        async def counting(nodeid: str) -> list[str]:
            self.asked.append(nodeid)
            return await lookup(nodeid)

        monkeypatch.setattr(node, "lookup", counting)


def backoff(node: aemp.Node, nodeid: str) -> float | None:
    """The seconds the next attempt to reach nodeid waits (None: no failure remembered)."""
    info = lowlevel.node_info(node, nodeid)
    return None if info is None else info["backoff"]


@pytest.fixture
async def attached() -> AsyncIterator[tuple[aemp.Node, aemp.Node]]:
    async with aemp.Node(  # noqa: SIM117
        nodeid="g", binds=["127.0.0.1:0"], secret=SECRET, monitor_timeout=2
    ) as g:
        async with aemp.Node(nodeid="n", seeds=g.listeners, secret=SECRET, monitor_timeout=2) as n:
            async with asyncio.timeout(5):
                while n.master != "g":
                    await asyncio.sleep(0.005)
            yield g, n


@pytest.mark.parametrize("port", ["ghost#p", "ghost"])
async def test_a_monitor_rearmed_on_an_unknown_node_backs_off(
    attached: tuple[aemp.Node, aemp.Node], port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    g, n = attached
    finds = _Finds(n, monkeypatch)
    fired: list[tuple[float, tuple[Any, ...]]] = []
    loop = asyncio.get_running_loop()

    def arm() -> None:
        n.mon(port, again)

    def again(*reason: Any) -> None:
        fired.append((loop.time(), reason))
        if len(fired) < 1000 and not n.node_is_up("ghost"):  # re-armed until it is up
            arm()

    arm()
    await asyncio.sleep(1.0)
    # without a back-off: thousands of each; with it: 0, 0.05, 0.15, 0.35, 0.75 s
    assert 3 <= len(fired) <= 8, len(fired)
    assert 3 <= len(finds.asked) <= 8, len(finds.asked)
    assert set(finds.asked) == {"ghost"}
    assert {r for _, r in fired} == {("transport_error", "ghost", "no known address")}
    # every firing came promptly: never later than the back-off's cap of 1 s
    times = [loop.time() - 1.0] + [t for t, _ in fired]
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.0 + 0.3

    # the node appears (attached to the same global): the monitor's next
    # attempt reaches it, at most the cap of 1 s later
    got: list[Any] = []
    async with aemp.Node(
        nodeid="ghost", binds=["127.0.0.1:0"], seeds=g.listeners, secret=SECRET
    ) as ghost:
        p = ghost.port(lambda *m: got.append(m))
        await wait_until(lambda: g.lookup("ghost"), what="ghost's listeners at the global")
        appeared = loop.time()
        async with asyncio.timeout(3):
            while not n.node_is_up("ghost"):
                await asyncio.sleep(0.005)
        assert loop.time() - appeared < 2.0
        n.snd(p, "hello")
        async with asyncio.timeout(3):
            while not got:
                await asyncio.sleep(0.005)
        assert got == [("hello",)]
        if port == "ghost":
            assert fired[-1][1][2] == "no known address"  # the node is up: the monitor holds
        assert len(fired) < 20


async def test_back_off_without_a_network() -> None:
    async with aemp.Node(nodeid="lonely") as n:  # no network: nothing is ever reachable
        fired = 0

        def again(*reason: Any) -> None:
            nonlocal fired
            fired += 1
            if fired < 100:  # bounded: without a back-off this chain never yields
                n.mon("elsewhere#p", again)

        n.mon("elsewhere#p", again)
        await asyncio.sleep(0.5)
        assert 2 <= fired <= 6, fired  # it was about 10,000 a second
        assert backoff(n, "elsewhere") is not None


async def test_a_connection_from_the_node_ends_its_back_off(
    attached: tuple[aemp.Node, aemp.Node],
) -> None:
    g, _ = attached
    loop = asyncio.get_running_loop()
    fired: list[asyncio.Future[None]] = [loop.create_future()]

    def arm() -> None:
        def again(*reason: Any) -> None:
            fired[-1].set_result(None)
            fired.append(loop.create_future())
            arm()

        g.mon("late", again)  # the global itself looks "late" up in its own database

    arm()
    async with asyncio.timeout(5):
        while (backoff(g, "late") or 0.0) < 1.0:  # the wait is at its cap
            await fired[-1]
        await fired[-1]  # a failure just now: the next attempt waits a whole second
    start = loop.time()
    async with aemp.Node(nodeid="late", seeds=g.listeners, secret=SECRET):
        async with asyncio.timeout(3):
            while not g.node_is_up("late"):
                await asyncio.sleep(0.005)
        assert loop.time() - start < 0.5  # it dialled us: no waiting for the attempt
        assert backoff(g, "late") is None
        assert lowlevel.statistics(g)["backoffs"] == 0
        assert not fired[-1].done()  # and the re-armed monitor holds


# ---------------------------------------------------------------- 12: forgetting


def _routes_are_live(node: aemp.Node) -> bool:
    """Every cached route leads to a node the kernel still holds (no stale route)."""
    stats = lowlevel.statistics(node)
    live = 0
    for nodeid in stats["remotes"]:
        info = lowlevel.node_info(node, nodeid)
        assert info is not None
        live += info["routes"]
    return bool(live == stats["routes"])


def remote_state(node: aemp.Node, nodeid: str) -> str | None:
    """What the kernel keeps for nodeid: "idle", "up"..., None if nothing."""
    state: str | None = lowlevel.statistics(node)["remotes"].get(nodeid)
    return state


async def test_departed_clients_are_forgotten() -> None:
    """One-shot clients, each with a fresh node ID, as `aemp cal` makes them:
    the seed keeps no state for them once they are gone."""
    async with aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret=SECRET) as seed:
        echo = seed.port(lambda *m: seed.snd(m[-1], *m[:-1]))

        async def client(i: int) -> None:
            async with aemp.Node(nodeid=f"client/{i}", seeds=seed.listeners, secret=SECRET) as c:
                assert await c.cal(echo, "hi", i, timeout=5) == ("hi", i)
                c.mon(echo, lambda *r: None)  # the seed watches echo for it
                c.db_set("clients", c.id)  # and holds an entry of it
            async with asyncio.timeout(5):  # its loss is reported and done with
                while remote_state(seed, f"client/{i}") not in (None, "idle"):
                    await asyncio.sleep(0.001)

        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(100):
            await client(i)
        tracemalloc.start()
        try:
            for i in range(100, 400):
                await client(i)
            gc.collect()  # closed connections are cycles: count only what stays
            before = tracemalloc.get_traced_memory()[0]
            for i in range(400, 1000):
                await client(i)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert loop.time() - start < 60
        stats = lowlevel.statistics(seed)
        assert len(stats["remotes"]) <= 1, stats["remotes"]
        assert _routes_are_live(seed)
        assert stats["unreachable"] == 0
        assert lowlevel.port_info(seed, echo) == {"monitors": 0, "watchers": [], "backlog": 0}
        # a Remote kept for each client, with its dicts and its route, was
        # about 900 bytes a client: 540 KB for these 600
        assert grown < 600 * 100, f"{grown / 600:.0f} bytes per client"


async def test_a_forgotten_node_comes_back_and_works() -> None:
    async with aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret=SECRET) as seed:
        got: list[Any] = []
        c = aemp.Node(nodeid="c", seeds=seed.listeners, secret=SECRET)
        await c.start()
        try:
            await wait_up(seed, "c")
            pc = c.port(lambda *m: got.append(m))
            lost: list[Any] = []
            seed.snd(pc, "before", 0)  # the seed now has a route to pc
            seed.mon(pc, lambda *r: lost.append(r))
            async with asyncio.timeout(5):
                while not got:
                    await asyncio.sleep(0.005)
            info = lowlevel.node_info(seed, "c")  # the one route, pc's, leads to c as it is
            assert info is not None and info["routes"] == 1 and _routes_are_live(seed)

            # the link breaks; c's seed loop dials again once the seed forgot c
            net = testing.network(c)
            dial, forgotten_c = net.dial, asyncio.Event()

            async def dial_after_forgotten(*args: Any, **kwargs: Any) -> Any:
                await forgotten_c.wait()
                return await dial(*args, **kwargs)

            net.dial = dial_after_forgotten  # type: ignore[method-assign]
            testing.cut_link(c, "seed", "cut for the test")
            await wait_until(lambda: remote_state(seed, "c") is None, what="the seed forgot c")
            forgotten_c.set()
            async with asyncio.timeout(5):
                while not seed.node_is_up("c"):
                    await asyncio.sleep(0.005)
            assert [r[:2] for r in lost] == [("transport_error", "c")]
            assert _routes_are_live(seed)

            # sends, in order, through the route cache
            got.clear()
            for i in range(1000):
                seed.snd(pc, "n", i)
            async with asyncio.timeout(5):
                while len(got) < 1000:
                    await asyncio.sleep(0.005)
            assert got == [("n", i) for i in range(1000)]
            # monitors, both ways
            died: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
            seed.mon(pc, lambda *r: died.set_result(r))
            await seed.cal(c.id, "time", timeout=5)  # a round trip: the mon1 arrived
            c.kil(pc, "bye")
            assert await asyncio.wait_for(died, 5) == ("bye",)
            ps = seed.port(lambda *m: None)
            died2: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
            c.mon(ps, lambda *r: died2.set_result(r))
            await c.cal(seed.id, "time", timeout=5)  # a round trip: the mon1 arrived
            seed.kil(ps, "gone")
            assert await asyncio.wait_for(died2, 5) == ("gone",)
        finally:
            await c.close()

        # a new incarnation under the same node ID, after the old one was forgotten
        async with asyncio.timeout(5):
            while seed.node_is_up("c") or remote_state(seed, "c") is not None:
                await asyncio.sleep(0.005)
        async with aemp.Node(nodeid="c", seeds=seed.listeners, secret=SECRET) as c2:
            await wait_up(seed, "c")
            got2: list[Any] = []
            pc2 = c2.port(lambda *m: got2.append(m))
            seed.snd(pc, "to the old port")  # guarantee 4: never delivered
            old: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
            seed.mon(pc, lambda *r: old.set_result(r))
            seed.snd(pc2, "to the new port")
            assert (await asyncio.wait_for(old, 5))[0] == "no_such_port"
            async with asyncio.timeout(5):
                while not got2:
                    await asyncio.sleep(0.005)
            assert got2 == [("to the new port",)]


async def test_departed_nodes_that_were_dialled_are_forgotten(
    attached: tuple[aemp.Node, aemp.Node],
) -> None:
    g, n = attached
    for i in range(50):
        name = f"worker/{i}"
        async with aemp.Node(
            nodeid=name, binds=["127.0.0.1:0"], seeds=g.listeners, secret=SECRET
        ) as w:
            await wait_until(lambda name=name: g.lookup(name), interval=0.002)
            got: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
            p = w.port(lambda *m, got=got: got.set_result(m))
            n.snd(p, "work", i)  # n dials the worker at the address g tells it
            assert await asyncio.wait_for(got, 5) == ("work", i)
            assert name in lowlevel.statistics(n)["addresses"]
        async with asyncio.timeout(5):
            while remote_state(n, name) not in (None, "idle"):
                await asyncio.sleep(0.002)
    stats = lowlevel.statistics(n)
    assert set(stats["remotes"]) <= {"g"}, stats["remotes"]
    assert set(stats["addresses"]) <= {"g"}, stats["addresses"]
    assert _routes_are_live(n)
