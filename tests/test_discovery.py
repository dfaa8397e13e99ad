"""aemp.discovery without multicast: its configuration, its refusals, and
what it does with a datagram it hears, over TCP on 127.0.0.1.

Nothing here opens a multicast socket or starts discovery's channels (the
host's own network namespace must never see a multicast datagram): the
datagrams are handed to Discovery.received() as the channel would, and
the nodes they name are real nodes on loopback. The channels themselves
are tested in tests/test_discovery_netns.py, between namespaces.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import until

import aemp
import aemp.discovery
from aemp import lowlevel, wire
from aemp.discovery import Discovery
from aemp.tls import make_certificate

SECRET = "discovery-secret"
SPEC = "multicast:239.255.65.77:4044;interval=1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def datagram(node: aemp.Node, *, secret: str = SECRET, network: str | None = "lab",
             addrs: list[str] | None = None, ms: int | None = None) -> bytes:  # fmt: skip
    return wire.encode_announcement(
        wire.discovery_key(secret.encode(), network),
        node.id,
        network,
        node.listeners if addrs is None else addrs,
        now_ms() if ms is None else ms,
        "00112233445566ff",
    )


async def make(stack: AsyncExitStack, nodeid: str, **keys: Any) -> aemp.Node:
    keys.setdefault("secret", SECRET)
    keys.setdefault("network", "lab")
    keys.setdefault("binds", ["127.0.0.1:0"])
    keys.setdefault("monitor_timeout", 2)
    return await stack.enter_async_context(aemp.Node(nodeid=nodeid, **keys))


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("broadcast:1.2.3.4:5", "is not 'multicast:GROUP:PORT'"),
        ("multicast:10.0.0.1:4044", "is not an IPv4 multicast group"),
        ("multicast:ff02::1:4044", "is not an IPv4 multicast group"),
        ("multicast:239.1.1.1:0", "port '0' is not from 1 to 65535"),
        ("multicast:239.1.1.1:x", "port 'x' is not from 1 to 65535"),
        ("multicast:239.1.1.1:4044;ttl=0", "ttl '0' is not from 1 to 255"),
        ("multicast:239.1.1.1:4044;ttl=1;ttl=2", "each at most once"),
        ("multicast:239.1.1.1:4044;interval=0.1", "interval '0.1' is not a number of seconds"),
        ("multicast:239.1.1.1:4044;window=nan", "window 'nan' is not a number of seconds"),
        ("multicast:239.1.1.1:4044;colour=red", "is not one of interface=, ttl="),
        ("multicast:239.1.1.1:4044;interface=a b", "interface 'a b' is not a name"),
    ],
)
def test_a_bad_discovery_entry_is_a_clear_config_error(spec: str, says: str) -> None:
    with pytest.raises(aemp.ConfigError, match="'discovery' entry") as info:
        aemp.Node(discovery=[spec], secret=SECRET)
    assert says in str(info.value)


async def test_discovery_entries_are_checked_as_a_list() -> None:
    node_keys = {"secret": SECRET}
    with pytest.raises(aemp.ConfigError, match="at most 8 allowed"):
        aemp.Node(discovery=[f"multicast:239.1.1.{i}:4044" for i in range(9)], **node_keys)
    with pytest.raises(aemp.ConfigError, match="must be a list of str"):
        aemp.Node(discovery=[4044], **node_keys)
    cfg = aemp.Node(discovery=SPEC + ",multicast:239.1.1.2:9;ttl=3", **node_keys).config
    assert cfg.discovery == (SPEC, "multicast:239.1.1.2:9;ttl=3")


async def test_start_refuses_what_it_cannot_do(stack: AsyncExitStack) -> None:
    plain = await make(stack, "plain")
    with pytest.raises(aemp.ConfigError, match="has no 'discovery' key"):
        await aemp.discovery.start(plain)
    cert_only = await stack.enter_async_context(
        aemp.Node(nodeid="c", cert=make_certificate("c"), discovery=[SPEC])
    )
    with pytest.raises(aemp.ConfigError, match="needs a shared 'secret'"):
        await aemp.discovery.start(cert_only)
    private = await stack.enter_async_context(aemp.Node(nodeid="p", discovery=[SPEC]))
    with pytest.raises(aemp.ConfigError, match="has no network"):
        await aemp.discovery.start(private)
    with pytest.raises(aemp.NoCurrentNode, match="needs a node"):
        await aemp.discovery.start()
    assert aemp.discovery.of(plain) is None
    with pytest.raises(aemp.ConfigError, match="was not started"):
        aemp.discovery.statistics(plain)


async def test_a_node_heard_becomes_a_seed_and_is_connected(stack: AsyncExitStack) -> None:
    a = await make(stack, "a", discovery=[SPEC])
    b = await make(stack, "b")
    b.db_set("svc", "b", 1)
    disc = Discovery(a)  # its channels are not opened: datagrams are handed to it
    disc.received(datagram(b), "127.0.0.1")
    await until(lambda: a.node_is_up("b"), what="b connected")
    assert lowlevel.seeds(a) == {b.listeners[0]: "b"}
    stats = disc.statistics()
    assert stats["accepted"] == 1 and stats["received"] == 1
    assert list(stats["peers"]) == ["b"] and stats["peers"]["b"]["seeds"] == b.listeners
    # a and b are one database now (b became global for a, as a seed does)
    await until(lambda: lowlevel.database(a)["merged"].get("svc") == {"b": 1}, what="merged")
    # heard again: nothing new; a restart on another port moves the seed
    disc.received(datagram(b), "127.0.0.1")
    assert lowlevel.seeds(a) == {b.listeners[0]: "b"}
    moved = ["127.0.0.1:1"]  # nothing listens there
    disc.received(datagram(b, addrs=moved, ms=now_ms() + 1), "127.0.0.1")
    assert set(lowlevel.seeds(a)) == set(moved)
    assert a.node_is_up("b")  # the link made through the old seed stays


async def test_what_is_not_a_good_announcement_is_counted_and_never_connected(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    a = await make(stack, "a", discovery=[SPEC])
    targets = [await make(stack, f"t{i}") for i in range(4)]
    disc = Discovery(a)
    good = datagram(targets[3])
    cases = [
        (datagram(targets[0], network="other"), "network"),
        (datagram(targets[1], secret="wrong"), "forged"),
        (datagram(targets[2], ms=now_ms() - 3_600_000), "stale"),
        (b"GET / HTTP/1.0\r\n\r\n", "malformed"),
        (good, None),
        (good, "replayed"),
    ]
    for data, reason in cases:
        before = dict(disc.counts)
        disc.received(data, "127.0.0.1")
        changed = {k for k in disc.counts if disc.counts[k] != before[k]} - {"received"}
        assert changed == {reason or "accepted"}, (reason, changed)
    # the refusals are logged once per reason, not per datagram
    disc.received(datagram(targets[0], network="other"), "127.0.0.1")
    lines = [r.getMessage() for r in caplog.records if r.name == "aemp.discovery"]
    assert sum("(network)" in line for line in lines) == 1
    await until(lambda: a.node_is_up("t3"), what="t3, the good one, connected")
    assert list(lowlevel.seeds(a).values()) == ["t3"]
    assert not any(a.node_is_up(f"t{i}") for i in range(3))


async def test_own_datagrams_and_addresses_elsewhere(stack: AsyncExitStack) -> None:
    a = await make(stack, "a", discovery=[SPEC])
    b = await make(stack, "b", binds=["127.0.0.2:0"])
    disc = Discovery(a)
    disc.received(datagram(a), "127.0.0.1")
    assert disc.counts["own"] == 1 and lowlevel.seeds(a) == {}
    # of the addresses listed, those of the host the datagram came from
    disc.received(datagram(b, addrs=["127.0.0.3:9", *b.listeners]), "127.0.0.2")
    assert list(lowlevel.seeds(a)) == b.listeners
    await until(lambda: a.node_is_up("b"), what="b connected at 127.0.0.2")


async def test_a_flood_is_cut_before_any_check(stack: AsyncExitStack) -> None:
    a = await make(stack, "a", discovery=[SPEC])
    disc = Discovery(a)
    started = a.loop.time()
    for _ in range(1000):  # bounded, and fast: the bucket refills little meanwhile
        disc.received(b"x" * 50, "127.0.0.1")
    refill = (a.loop.time() - started) * aemp.discovery.FLOOD_RATE + 1
    checked = disc.counts["malformed"]
    assert aemp.discovery.FLOOD_BURST <= checked <= aemp.discovery.FLOOD_BURST + refill
    assert disc.counts["flood"] == 1000 - checked


async def test_lowlevel_seeds(stack: AsyncExitStack) -> None:
    a = await make(stack, "a")
    b = await make(stack, "b")
    addr = b.listeners[0]
    assert lowlevel.seeds(a) == {}
    assert lowlevel.add_seed(a, addr) is True
    assert lowlevel.add_seed(a, addr) is False
    await until(lambda: a.node_is_up("b"), what="b connected through the added seed")
    assert lowlevel.seeds(a) == {addr: "b"}
    assert lowlevel.remove_seed(a, addr) is True
    assert lowlevel.remove_seed(a, addr) is False
    assert lowlevel.seeds(a) == {} and a.node_is_up("b")
    with pytest.raises(aemp.ConfigError, match="add_seed address"):
        lowlevel.add_seed(a, "no port here")
    with pytest.raises(aemp.InvalidArgument, match="'host:port' str"):
        lowlevel.add_seed(a, 4040)  # type: ignore[arg-type]
    private = await stack.enter_async_context(aemp.Node(nodeid="private"))
    with pytest.raises(aemp.ConfigError, match="has no network"):
        lowlevel.add_seed(private, addr)


async def test_discovery_and_configured_seeds_together(stack: AsyncExitStack) -> None:
    b = await make(stack, "b")
    c = await make(stack, "c")
    a = await make(stack, "a", seeds=b.listeners, discovery=[SPEC])
    await until(lambda: a.node_is_up("b"), what="b, the configured seed, connected")
    assert a.master == "b"  # a configured seed: a is b's slave, as without discovery
    disc = Discovery(a)
    disc.received(datagram(b), "127.0.0.1")  # a configured seed: not discovery's to keep
    disc.received(datagram(c), "127.0.0.1")
    await until(lambda: a.node_is_up("c"), what="c, heard, connected")
    peers = disc.statistics()["peers"]
    assert peers["b"]["seeds"] == [] and peers["c"]["seeds"] == c.listeners
    assert lowlevel.seeds(a) == {b.listeners[0]: "b", c.listeners[0]: "c"}
