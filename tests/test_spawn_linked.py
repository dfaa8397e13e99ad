"""lowlevel.spawn_linked: a spawned port that dies with its link port, on this
node and across a link (in memory, on virtual time), and lowlevel.current_node."""

from __future__ import annotations

from typing import Any

import pytest
import spawn_targets  # noqa: F401  (loaded: other nodes may spawn its functions)
from conftest import Recorder

import aemp
from aemp import lowlevel, testing

pytestmark = pytest.mark.virtual_time

ECHO = "spawn_targets:echo_init"


async def test_the_child_dies_with_its_link_whatever_the_reason(node: aemp.Node) -> None:
    for reason in (("boom", 1), ()):
        link = node.port(lambda *m: None)
        child = lowlevel.spawn_linked(node, node.id, link, ECHO, "T")
        assert await node.cal(child, "echo", 1) == ("T", 1)
        died = Recorder()
        node.mon(child, died)
        node.kil(link, *reason)
        await died.wait()
        assert died.calls == [reason]  # a normal exit too: no orphan
        assert not lowlevel.port_alive(node, child)


async def test_a_child_that_dies_first_leaves_no_monitor_behind(node: aemp.Node) -> None:
    link = node.port(lambda *m: None)
    children = [lowlevel.spawn_linked(node, node.id, link, ECHO, str(i)) for i in range(3)]
    await node.cal(children[-1], "echo", 0)
    assert (lowlevel.port_info(node, link) or {})["monitors"] == 3
    for c in children:
        node.kil(c)
    await testing.wait_until(lambda: (lowlevel.port_info(node, link) or {})["monitors"] == 0)
    assert lowlevel.port_alive(node, link)


async def test_a_dead_link_kills_the_child_at_once(node: aemp.Node) -> None:
    link = node.port(lambda *m: None)
    node.kil(link)
    child = lowlevel.spawn_linked(node, node.id, link, ECHO, "T")
    died = Recorder()
    node.mon(child, died)
    await died.wait()
    assert died.calls[0][0] == "no_such_port"


async def test_bad_arguments_raise_and_start_nothing(node: aemp.Node) -> None:
    with pytest.raises(aemp.InvalidID):
        lowlevel.spawn_linked(node, node.id, "no;such port", ECHO)
    with pytest.raises(aemp.SpawnError):
        lowlevel.spawn_linked(node, node.id, node.id, "not a target")
    assert lowlevel.ports(node) == []


async def test_across_a_link_the_child_dies_with_the_link_port_or_its_node() -> None:
    async with testing.pair(monitor_timeout=2) as (a, b, link):
        sup = a.port(lambda *m: None)
        child = lowlevel.spawn_linked(a, "b", sup, ECHO, "T")
        assert await a.cal(child, "echo", 2) == ("T", 2)
        on_b = Recorder()
        b.mon(child, on_b)
        a.kil(sup, "stopped", "by a")
        await on_b.wait()
        assert on_b.calls == [("stopped", "by a")]

        sup = a.port(lambda *m: None)
        child = lowlevel.spawn_linked(a, "b", sup, ECHO, "U")
        assert await a.cal(child, "echo", 3) == ("U", 3)
        on_b = Recorder()
        b.mon(child, on_b)
        link.partition()  # a goes silent: b gives it up after monitor_timeout, and the child
        await testing.wait_until(lambda: on_b.calls, timeout=10)
        assert on_b.calls[0][:2] == ("transport_error", "a")


async def test_a_malformed_request_from_a_peer_is_ignored() -> None:
    async with testing.pair() as (a, b, _link):
        before = lowlevel.ports(b)
        name = testing.take_names(a)["spawn"].partition("#")[2]
        for link in (42, "bad port;id", None):
            lowlevel.request(a, "b", "spawn_linked", name, link, ECHO, "T")
        assert await a.cal("b", "time")  # behind the requests: b handled them
        assert lowlevel.ports(b) == before


async def test_current_node_is_the_delivering_node() -> None:
    async with testing.pair() as (a, b, _link):
        seen: list[Any] = []
        p = b.port(lambda *msg: seen.append(lowlevel.current_node()))
        a.snd(p, "which node")
        await testing.wait_until(lambda: seen)
        assert seen == [b]
