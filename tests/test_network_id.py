"""The `network` key: several networks side by side on one host, over TCP.

Nodes announce their network id in the greeting (``network=ID``); a node
refuses a peer of another network (or of none, when it has one) before
the auth line, and both sides log why. A node pointed at the wrong
network's seed stays alone instead of merging the two databases.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

import pytest
from conftest import until

import aemp
from aemp import wire

SECRET = "network-id-secret"


async def make(stack: AsyncExitStack, nodeid: str, **keys: object) -> aemp.Node:
    keys.setdefault("secret", SECRET)
    keys.setdefault("monitor_timeout", 2)
    return await stack.enter_async_context(aemp.Node(nodeid=nodeid, **keys))


def refusals(caplog: pytest.LogCaptureFixture, nodeid: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "aemp.transport"
        and r.getMessage().startswith(f"node {nodeid}: refused")
        and "not connecting networks" in r.getMessage()
    ]


async def test_two_networks_side_by_side_each_with_its_own_seed(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "aemp.transport")
    a1 = await make(stack, "a1", network="red", binds=["127.0.0.1:0"])
    b1 = await make(stack, "b1", network="blue", binds=["127.0.0.1:0"])
    a2 = await make(stack, "a2", network="red", seeds=a1.listeners)
    b2 = await make(stack, "b2", network="blue", seeds=b1.listeners)
    a2.db_set("where", "a2", "red")
    b2.db_set("where", "b2", "blue")
    await until(lambda: a2.node_is_up("a1") and b2.node_is_up("b1"), what="both networks up")
    await until(
        lambda: aemp.lowlevel.database(a1)["merged"].get("where") == {"a2": "red"},
        what="a2's entry at a1",
    )
    await until(
        lambda: aemp.lowlevel.database(b1)["merged"].get("where") == {"b2": "blue"},
        what="b2's entry at b1",
    )
    # one network's database knows nothing of the other's nodes
    with pytest.raises(aemp.PortDead):
        await a2.cal("b1", "up_nodes", timeout=5)
    assert await a2.cal("a1", "up_nodes", timeout=5) == (["a2"],)
    assert not a1.node_is_up("b1") and not b1.node_is_up("a1")
    assert "b2" not in aemp.lowlevel.database(a1)["merged"].get("'l", {})
    assert not refusals(caplog, "a1") and not refusals(caplog, "b1")


async def test_a_node_pointed_at_the_wrong_networks_seed_is_refused(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "aemp.transport")
    seed = await make(stack, "red-seed", network="red", binds=["127.0.0.1:0"])
    seed.db_set("svc", "red-only", 1)
    stray = await make(stack, "stray", network="blue", seeds=seed.listeners)
    stray.db_set("svc", "blue-only", 2)
    await until(lambda: refusals(caplog, "stray") and refusals(caplog, "red-seed"), what="refused")
    (mine,) = refusals(caplog, "stray")[:1]
    assert "'red-seed' is of network 'red', this node of 'blue'" in mine
    (theirs,) = refusals(caplog, "red-seed")[:1]
    assert "'stray' is of network 'blue', this node of 'red'" in theirs
    await asyncio.sleep(0.3)
    assert not seed.node_is_up("stray") and not stray.node_is_up("red-seed")
    # nothing merged: each side sees only its own network's entries
    assert aemp.lowlevel.database(seed)["merged"]["svc"] == {"red-only": 1}
    assert aemp.lowlevel.database(stray)["master"] is None  # no master found in 'blue'
    assert aemp.lowlevel.statistics(seed)["links"] == {}


async def test_a_named_network_refuses_a_node_of_none_both_ways(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "aemp.transport")
    named = await make(stack, "named", network="red", binds=["127.0.0.1:0"])
    plain = await make(stack, "plain", binds=["127.0.0.1:0"])
    plain_dialer = await make(stack, "plain-dialer", seeds=named.listeners)
    named_dialer = await make(stack, "named-dialer", network="red", seeds=plain.listeners)
    await until(
        lambda: refusals(caplog, "plain-dialer") and refusals(caplog, "named-dialer"),
        what="both dialers refused",
    )
    assert "is of network 'red', this node of (none)" in refusals(caplog, "plain-dialer")[0]
    assert "is of network (none), this node of 'red'" in refusals(caplog, "named-dialer")[0]
    await until(lambda: refusals(caplog, "named") and refusals(caplog, "plain"), what="both logged")
    for n in (named, plain, plain_dialer, named_dialer):
        assert aemp.lowlevel.statistics(n)["links"] == {}


async def test_same_network_connects_and_announces_it(stack: AsyncExitStack) -> None:
    a = await make(stack, "na", network="lab/1", binds=["127.0.0.1:0"])
    b = await make(stack, "nb", network="lab/1", seeds=a.listeners)
    await until(lambda: b.node_is_up("na"), what="na up at nb")
    assert await b.cal("na", "up_nodes", timeout=5) == (["nb"],)


def test_the_greeting_carries_the_network_id() -> None:
    settings = wire.Settings(nodeid="g1", provider="t", secret=SECRET, network="lab-2")
    conn = wire.Connection(settings, peeraddr="x")
    conn.start()
    line1 = conn.data_to_send().split(b"\n")[0]
    assert line1.endswith(b";network=lab-2")
    greeting = wire.parse_greeting(line1, b"nonce")
    assert greeting.network == "lab-2"
    assert wire.networks_differ("lab-2", greeting) is None
    assert "not connecting networks" in (wire.networks_differ(None, greeting) or "")
    plain = wire.parse_greeting(b"aemp;1;perl;hmac_sha3_512;json;provider=AE-2.0", b"n")
    assert plain.network is None and wire.networks_differ(None, plain) is None


@pytest.mark.parametrize(
    "bad", ["", "a b", "x;y", "a,b", "n" * 65, 5, b"red", "caf\u00e9", "line\nbreak"]
)
def test_a_bad_network_id_is_a_clear_config_error(bad: object) -> None:
    with pytest.raises(aemp.ConfigError, match="'network' must be None or 1 to 64"):
        aemp.Node(network=bad, secret=SECRET)


def test_wire_settings_refuse_a_network_id_that_breaks_the_greeting() -> None:
    with pytest.raises(aemp.ConfigError, match="'network' must not contain ';'"):
        wire.Settings(nodeid="g", provider="t", secret=SECRET, network="a;b")
