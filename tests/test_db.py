"""The distributed database: one node, a seed with nodes, meshed seeds, healing in one process."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import free_port, until

import aemp
from aemp import lowlevel
from tests.conftest import Recorder, settle

SECRET = "db-test-secret"


class Watch:
    """A db_mon callback that keeps the latest view and every event."""

    def __init__(self) -> None:
        self.view: dict[str, Any] = {}
        self.events: list[tuple[list[str], list[str], list[str]]] = []

    def __call__(self, fam: Any, added: list[str], changed: list[str], deleted: list[str]) -> None:
        self.view = dict(fam)
        self.events.append((list(added), list(changed), list(deleted)))

    def added(self) -> set[str]:
        return {k for a, _, _ in self.events for k in a}

    def deleted(self) -> set[str]:
        return {k for _, _, d in self.events for k in d}


# ---------------------------------------------------------------- one node


async def test_single_node_is_its_own_master(node: aemp.Node) -> None:
    assert node.is_global and node.master == node.id
    node.db_set("svc", "a", 1)
    node.db_set("svc", "b", {"x": [1, 2]})
    assert await node.db_family("svc") == {"a": 1, "b": {"x": [1, 2]}}
    assert sorted(await node.db_keys("svc")) == ["a", "b"]
    assert await node.db_values("nothing") == []
    node.db_del("svc", "a", "not-there")
    assert await node.db_family("svc") == {"b": {"x": [1, 2]}}


async def test_db_mon_first_call_then_changes(node: aemp.Node) -> None:
    node.db_set("fam", "old", 0)
    w = Watch()
    handle = node.db_mon("fam", w)
    await until(lambda: w.events)
    assert w.events == [(["old"], [], [])] and w.view == {"old": 0}
    node.db_set("fam", "new", 1)
    node.db_set("fam", "old", 2)
    node.db_del("fam", "new")
    await until(lambda: len(w.events) == 4)
    assert w.events[1:] == [(["new"], [], []), ([], ["old"], []), ([], [], ["new"])]
    node.db_set("fam", "old", 2)  # the same value again is no change
    handle.cancel()
    node.db_set("fam", "later", 3)
    await settle(20)
    assert len(w.events) == 4


async def test_second_db_mon_gets_a_prompt_first_call(node: aemp.Node) -> None:
    node.db_set("fam", "k", "v")
    w1, w2 = Watch(), Watch()
    node.db_mon("fam", w1)
    await until(lambda: w1.events)
    node.db_mon("fam", w2)
    await until(lambda: w2.events)
    assert w2.events == [(["k"], [], [])]


async def test_db_mon_view_is_read_only(node: aemp.Node) -> None:
    seen: list[Any] = []
    node.db_mon("fam", lambda fam, *_: seen.append(fam))
    await until(lambda: seen)
    with pytest.raises(TypeError):
        seen[0]["x"] = 1


async def test_db_set_handle_deletes_only_its_own_write(node: aemp.Node) -> None:
    first = node.db_set("fam", "k", 1)
    node.db_set("fam", "k", 2)
    first.cancel()
    assert await node.db_family("fam") == {"k": 2}
    with node.db_set("fam", "tmp", 0):
        assert "tmp" in await node.db_family("fam")
    assert "tmp" not in await node.db_family("fam")


async def test_db_reg_goes_when_the_port_dies(node: aemp.Node) -> None:
    p = node.port(lambda *m: None)
    node.db_reg("workers", p, {"load": 0})
    assert await node.db_family("workers") == {p: {"load": 0}}
    node.kil(p)
    await until(lambda: lowlevel.database(node)["local"].get("workers") is None)
    assert await node.db_family("workers") == {}


async def test_db_reg_defaults_to_self(node: aemp.Node) -> None:
    got = Recorder()

    def init(*msg: Any) -> None:
        aemp.db_reg("workers", value="me")
        got(aemp.SELF.get())

    p = node.port(init)
    node.snd(p, "go")
    await got.wait()
    assert await node.db_family("workers") == {p: "me"}
    with pytest.raises(TypeError, match="db_reg needs a port"):
        node.db_reg("workers")


async def test_db_reg_with_a_malformed_port_sets_nothing(node: aemp.Node) -> None:
    with pytest.raises(aemp.InvalidID):
        node.db_reg("fam", "not a port id", 1)
    assert await node.db_family("fam", timeout=5) == {}


async def test_callback_forms(node: aemp.Node) -> None:
    node.db_set("fam", "k", 1)
    got = Recorder()
    node.db_keys("fam", cb=got)
    node.db_family("fam", cb=got)
    await got.wait(2)
    assert got.calls == [(["k"],), ({"k": 1},)]


@pytest.mark.parametrize(
    ("family", "message"),
    [
        ("1abc", "'1abc' is not a family"),
        ("", "'' is not a family"),
        ("a b", "'a b' is not a family"),
        ("'l", "read-only"),
        (7, "7 is not a family"),
    ],
)
async def test_bad_family_raises_at_once(node: aemp.Node, family: Any, message: str) -> None:
    with pytest.raises(aemp.InvalidFamily, match=message):
        node.db_set(family, "k", 1)


async def test_bad_values_and_keys_raise_at_once(node: aemp.Node) -> None:
    with pytest.raises(aemp.MessageError, match="object"):
        node.db_set("fam", "k", object())
    with pytest.raises(aemp.InvalidFamily, match="subkeys must be str"):
        node.db_set("fam", 1, "v")  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidFamily):
        node.db_mon("no way", lambda *a: None)
    assert "fam" not in lowlevel.database(node)["local"]


@pytest.mark.parametrize(
    "bad, error", [(0, ValueError), (-1.5, ValueError), (True, TypeError), ("5", TypeError)]
)
async def test_bad_query_timeout_raises_at_once(node: aemp.Node, bad: Any, error: type) -> None:
    with pytest.raises(
        error, match=rf"db_keys: timeout must be a positive number or None \(got {bad!r}\)"
    ):
        node.db_keys("fam", timeout=bad)


async def test_reserved_families_can_be_read(node: aemp.Node) -> None:
    assert node.id in await node.db_family("'g")


async def test_query_on_a_closed_node() -> None:
    n = await aemp.Node(nodeid="closing/%u").start()
    await n.close()
    with pytest.raises(aemp.NodeClosed):
        n.db_keys("fam")


# ---------------------------------------------------------------- a network in one process


async def start(stack: AsyncExitStack, **keys: Any) -> aemp.Node:
    keys.setdefault("secret", SECRET)
    keys.setdefault("monitor_timeout", 2.0)
    return await stack.enter_async_context(aemp.Node(**keys))


async def test_seed_and_two_nodes(stack: AsyncExitStack) -> None:
    addr = f"127.0.0.1:{free_port()}"
    seed = await start(stack, nodeid="seed", binds=[addr], seeds=[addr])
    a = await start(stack, nodeid="a/%u", binds=["127.0.0.1:0"], seeds=[addr])
    b = await start(stack, nodeid="b/%u", binds=["127.0.0.1:0"], seeds=[addr])
    await until(lambda: a.master == "seed" and b.master == "seed")
    assert seed.is_global and not a.is_global and not b.is_global

    w = Watch()
    b.db_mon("svc", w)
    await until(lambda: w.events)
    entry = a.db_set("svc", "a-key", [1, "two"])
    await until(lambda: "a-key" in w.view)
    assert w.view == {"a-key": [1, "two"]}
    assert await b.db_family("svc") == {"a-key": [1, "two"]}
    assert await seed.db_keys("svc") == ["a-key"]
    entry.cancel()
    await until(lambda: "a-key" in w.deleted())

    # b reaches a knowing only its node ID: the address comes from the seed
    got = Recorder()
    p = a.port(got)
    assert a.id not in b.up_nodes()
    b.snd(p, "hello")
    await got.wait()

    # a node that is not in the database cannot be reached, and says why
    dead = Recorder()
    b.mon("nobody#x", dead)
    await dead.wait()
    assert dead.calls == [("transport_error", "nobody", "no known address")]


async def test_entries_vanish_when_their_node_goes(stack: AsyncExitStack) -> None:
    addr = f"127.0.0.1:{free_port()}"
    await start(stack, nodeid="seed", binds=[addr], seeds=[addr])
    a = await aemp.Node(nodeid="a/%u", secret=SECRET, seeds=[addr]).start()
    b = await start(stack, nodeid="b/%u", seeds=[addr])
    w = Watch()
    b.db_mon("svc", w)
    p = a.port(lambda *m: None)
    a.db_reg("svc", p, "x")
    await until(lambda: p in w.view)
    await a.close()
    await until(lambda: p in w.deleted())
    assert w.view == {}


async def test_writes_without_a_master_are_kept(stack: AsyncExitStack) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    a = await start(stack, nodeid="a/%u", seeds=[addr])
    a.db_set("svc", "early", 1)  # no seed yet
    keys = a.db_keys("svc", timeout=10)
    await start(stack, nodeid="seed", binds=[addr], seeds=[addr])
    assert await keys == ["early"]


async def test_two_meshed_seeds_share_everything(stack: AsyncExitStack) -> None:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    s1 = await start(stack, nodeid="s1", binds=[addrs[0]], seeds=addrs)
    s2 = await start(stack, nodeid="s2", binds=[addrs[1]], seeds=addrs)
    a = await start(stack, nodeid="a/%u", seeds=[addrs[0]])
    b = await start(stack, nodeid="b/%u", seeds=[addrs[1]])
    await until(lambda: s1.node_is_up("s2"))
    assert a.master == "s1" and b.master == "s2"
    wa, wb = Watch(), Watch()
    a.db_mon("svc", wa)
    b.db_mon("svc", wb)
    a.db_set("svc", "from-a", 1)
    b.db_set("svc", "from-b", 2)
    s2.db_set("svc", "from-s2", 3)
    want = {"from-a": 1, "from-b": 2, "from-s2": 3}
    await until(lambda: wa.view == want and wb.view == want)
    assert set(await s1.db_keys("'g")) == {"s1", "s2"}
    a.db_del("svc", "from-a")
    await until(lambda: "from-a" not in wb.view)


async def test_seed_restart_heals(stack: AsyncExitStack) -> None:
    addr = f"127.0.0.1:{free_port()}"
    seed = await aemp.Node(
        nodeid="seed", binds=[addr], seeds=[addr], secret=SECRET, monitor_timeout=2.0
    ).start()
    nodes = [await start(stack, nodeid=f"n{i}/%u", seeds=[addr]) for i in range(3)]
    watches = []
    for i, n in enumerate(nodes):
        n.db_set("svc", f"k{i}", i)
        w = Watch()
        n.db_mon("svc", w)
        watches.append(w)
    want = {f"k{i}": i for i in range(3)}
    await until(lambda: all(w.view == want for w in watches))
    await seed.close()
    await until(lambda: all(n.master is None for n in nodes))
    assert all(w.view == want for w in watches), "the views are kept while masterless"
    nodes[0].db_set("svc", "while-down", 9)
    await start(stack, nodeid="seed", binds=[addr], seeds=[addr])
    want["while-down"] = 9
    await until(lambda: all(w.view == want for w in watches), limit=10)
    for w in watches:
        assert "while-down" in w.added()


async def test_globals_find_each_other_through_the_g_family(stack: AsyncExitStack) -> None:
    """s2 and s3 know only s1, yet every global ends up connected to every other."""
    a1, a2, a3 = (f"127.0.0.1:{free_port()}" for _ in range(3))
    s1 = await start(stack, nodeid="s1", binds=[a1], seeds=[a1])
    s2 = await start(stack, nodeid="s2", binds=[a2], seeds=[a1, a2])
    s3 = await start(stack, nodeid="s3", binds=[a3], seeds=[a1, a3])
    await until(lambda: s2.node_is_up("s3") and s3.node_is_up("s2"))
    for s in (s1, s2, s3):
        assert s.is_global
        assert sorted(await s.db_keys("'g")) == ["s1", "s2", "s3"]
    # and the mesh heals: s3 goes and comes back, s2 connects to it again
    await s3.close()
    await until(lambda: not s2.node_is_up("s3"))
    await until(lambda: sorted(lowlevel.database(s2)["merged"].get("'g", {})) == ["s1", "s2"])
    s3 = await start(stack, nodeid="s3", binds=[a3], seeds=[a1, a3])
    await until(lambda: s2.node_is_up("s3"))


async def test_bytes_value_and_a_json_subscriber(stack: AsyncExitStack) -> None:
    """A value json cannot carry skips the json node; the others still hear of it."""
    addr = f"127.0.0.1:{free_port()}"
    await start(stack, nodeid="seed", binds=[addr], seeds=[addr])
    packer = await start(stack, nodeid="mp/%u", seeds=[addr])
    jsonish = await start(stack, nodeid="js/%u", seeds=[addr], framing_format=["json"])
    other = await start(stack, nodeid="o/%u", seeds=[addr])
    wj, wo = Watch(), Watch()
    jsonish.db_mon("svc", wj)
    other.db_mon("svc", wo)
    await until(lambda: wj.events and wo.events)
    packer.db_set("svc", "blob", b"\x00\x01")
    packer.db_set("svc", "text", "fine")
    await until(lambda: wo.view == {"blob": b"\x00\x01", "text": "fine"})
    await until(lambda: wj.view == {"text": "fine"})
