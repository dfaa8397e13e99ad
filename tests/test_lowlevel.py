"""aemp.lowlevel: the interface for code that extends aemp, and its page."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder, settle
from test_remote import SECRET, wait_up

import aemp
from aemp import lowlevel, testing

DOC = Path(__file__).resolve().parent.parent / "docs" / "lowlevel.md"


def test_the_page_documents_exactly_the_functions() -> None:
    documented = re.findall(r"^### `(\w+)\(", DOC.read_text(), re.M)
    assert sorted(documented) == sorted(lowlevel.__all__)
    for name in lowlevel.__all__:
        assert getattr(lowlevel, name).__doc__, name
    assert "lowlevel.md" in (DOC.parent / "README.md").read_text()
    assert "lowlevel.md" in (DOC.parent / "api.md").read_text()


async def test_post_runs_in_fifo_order_with_messages(node: aemp.Node) -> None:
    order: list[Any] = []
    p = node.port(lambda *m: order.append(("msg", *m)))
    node.snd(p, 1)
    lowlevel.post(node, lambda x: order.append(("post", x, aemp.SELF.get())), "a")
    node.snd(p, 2)
    await settle()
    assert order == [("msg", 1), ("post", "a", None), ("msg", 2)]


@pytest.mark.allow_error_log
async def test_post_failure_is_logged_and_harms_nothing(node: aemp.Node) -> None:
    got = Recorder()
    p = node.port(got)
    lowlevel.post(node, lambda: {}["x"])
    node.snd(p, "after")
    await got.wait()
    assert got.calls == [("after",)]
    with pytest.raises(aemp.InvalidArgument):
        lowlevel.post(node, "not callable")  # type: ignore[arg-type]


async def test_call_in_sets_self_and_kills_the_port_on_error(node: aemp.Node) -> None:
    p = node.port(lambda *m: None)
    assert lowlevel.call_in(node, p, lambda a: (aemp.SELF.get(), a), 7) == (p, 7)
    died = Recorder()
    node.mon(p, died)
    assert lowlevel.call_in(node, p, lambda: 1 / 0) is None
    await died.wait()
    assert died.calls == [("die", "ZeroDivisionError: division by zero")]
    assert not lowlevel.port_alive(node, p)
    # a dead port counts as no port
    assert lowlevel.call_in(node, p, lambda: aemp.SELF.get()) is None


async def test_spawn_task_is_cancelled_by_close() -> None:
    node = aemp.Node()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = lowlevel.spawn_task(node, forever())
    await started.wait()
    assert lowlevel.statistics(node)["tasks"] == 1
    await node.close()
    assert task.cancelled()
    with pytest.raises(aemp.NodeClosed):
        lowlevel.spawn_task(node, forever())


async def test_timer_fires_once_and_cancels(node: aemp.Node) -> None:
    fired = asyncio.Event()
    got: list[Any] = []
    lowlevel.timer(
        node, 0.01, lambda a, b: (got.append((a, b, aemp.SELF.get())), fired.set()), 1, 2
    )
    stopped = lowlevel.timer(node, 0.01, got.append, "never")
    stopped.cancel()
    assert lowlevel.statistics(node)["timers"] == 1
    await fired.wait()
    await settle()
    assert got == [(1, 2, None)]
    assert lowlevel.statistics(node)["timers"] == 0
    with pytest.raises(aemp.OutOfRange) as ei:
        lowlevel.timer(node, -1, print)
    assert isinstance(ei.value, ValueError)
    with pytest.raises(aemp.OutOfRange):
        lowlevel.timer(node, float("inf"), print)
    with pytest.raises(aemp.InvalidArgument) as ei2:
        lowlevel.timer(node, "1", print)  # type: ignore[arg-type]
    assert isinstance(ei2.value, TypeError)


async def test_on_close_runs_before_the_ports_die() -> None:
    node = aemp.Node()
    p = node.port(lambda *m: None)
    seen: list[bool] = []
    lowlevel.on_close(node, lambda: seen.append(lowlevel.port_alive(node, p)))
    await node.close()
    assert seen == [True]


async def test_reply_ports_send_and_drop_replies_as_cal_begins() -> None:
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a,
        aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET) as b,
    ):
        send, drop = lowlevel.reply_ports(b)
        remote = a.port(add=lambda x, y, reply: a.snd(reply, x + y, "more"))
        local = b.port(add=lambda x, y, reply: b.snd(reply, x * y))
        before = set(lowlevel.ports(b))
        got = Recorder()
        r1 = send(remote, ("add", 2, 3), lambda *m: got(*m, aemp.SELF.get()))
        r2 = send(local, ("add", 2, 3), lambda *m: got(*m, aemp.SELF.get()))
        assert isinstance(r1, lowlevel.ReplyPort) and r1.id.startswith("b#")
        assert r1.id != r2.id and set(lowlevel.ports(b)) == before | {r1.id, r2.id}
        await got.wait(2)
        # each message calls cb as the reply port; it stays until dropped
        assert sorted(got.calls, key=len) == [(6, r2.id), (5, "more", r1.id)]
        b.snd(r2.id, "again")
        await got.wait(3)
        assert got.calls[-1] == ("again", r2.id)
        drop(r1)
        drop(r2)
        drop(r2)  # twice: nothing
        assert set(lowlevel.ports(b)) == before
        b.snd(r2.id, "late")  # to a dropped reply port: dropped like any
        a.snd(r1.id, "late")
        await asyncio.sleep(0.05)
        assert len(got.calls) == 3
        # the values are checked as they are sent: nothing is left behind
        with pytest.raises(aemp.MessageError):
            send(remote, ("add", object(), 1), print)
        assert set(lowlevel.ports(b)) == before
        # a reply port somebody killed is dropped without harm
        r3 = send(local, ("add", 1, 1), print)
        b.kil(r3.id)
        drop(r3)
        assert set(lowlevel.ports(b)) == before
        live = send(local, ("add", 1, 1), print)
    # the node closed: its reply ports died with it, and a drop does nothing
    assert not lowlevel.port_alive(b, live.id)
    drop(live)
    with pytest.raises(aemp.NodeClosed):
        lowlevel.reply_ports(b)


async def test_handle_and_request_on_this_node(node: aemp.Node) -> None:
    got = Recorder()
    lowlevel.handle(node, "x_echo", lambda sender, *args: got(sender, *args))
    lowlevel.request(node, node.id, "x_echo", 1, "two")
    await got.wait()
    assert got.calls == [(None, 1, "two")]  # this node's own code: no sender
    with pytest.raises(ValueError, match="handled already"):
        lowlevel.handle(node, "x_echo", print)
    with pytest.raises(ValueError, match="handled already"):
        lowlevel.handle(node, "mon1", print)  # a core request
    with pytest.raises(aemp.InvalidArgument):
        lowlevel.handle(node, "", print)
    with pytest.raises(aemp.InvalidID):
        lowlevel.request(node, node.id + "#port", "x_echo")
    # `can` answers from the registry
    answers = Recorder()
    reply = node.port(answers)
    for tag in ("x_echo", "mon1", "nope", "eval"):
        node.snd(node.id, "can", tag, reply, tag)
    await answers.wait(4)
    assert answers.calls == [("x_echo", True), ("mon1", True), ("nope", False), ("eval", False)]


async def test_request_from_another_node_names_the_sender() -> None:
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a,
        aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET) as b,
    ):
        got = Recorder()
        lowlevel.handle(a, "x_hello", lambda sender, *args: got(sender, *args))
        await wait_up(b, "a")
        lowlevel.request(b, "a", "x_hello", [1, 2])
        await got.wait()
        assert got.calls == [("b", [1, 2])]


async def test_handle_global_answers_other_nodes_only() -> None:
    async with (
        aemp.Node(nodeid="g", binds=["127.0.0.1:0"], secret=SECRET) as g,
        aemp.Node(nodeid="c", seeds=g.listeners, secret=SECRET) as c,
    ):
        assert g.is_global
        got = Recorder()
        lowlevel.handle_global(g, "g_x_count", lambda sender, n: got(sender, n))
        with pytest.raises(ValueError, match="handled already"):
            lowlevel.handle_global(g, "g_x_count", print)
        with pytest.raises(ValueError, match="handled already"):
            lowlevel.handle_global(g, "g_find", print)  # one of the database's own
        await wait_up(c, "g")
        lowlevel.request(c, "g", "g_x_count", 3)
        await got.wait()
        assert got.calls == [("c", 3)]


async def test_watch_links_sees_up_and_down() -> None:
    async with aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a:
        seen = Recorder()
        watch = lowlevel.watch_links(a, lambda nodeid, up: seen(nodeid, up, aemp.SELF.get()))
        b = aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET)
        await b.start()
        await seen.wait()
        assert seen.calls == [("b", True, None)]
        assert "b" in lowlevel.statistics(a)["links"]
        await b.close()
        await seen.wait(2)
        assert seen.calls[1] == ("b", False, None)
        watch.cancel()
        assert not watch.active


async def test_gated_port_holds_messages_until_released(node: aemp.Node) -> None:
    got = Recorder()
    p = lowlevel.gated_port(node)
    node.rcv(p, lambda *m: got(aemp.SELF.get(), *m))
    node.snd(p, 1)
    node.snd(p, 2)
    await settle()
    assert got.calls == []
    assert lowlevel.statistics(node)["backlog"] == 2
    lowlevel.release(node, p, lambda x: got("init", aemp.SELF.get(), x), "arg")
    node.snd(p, 3)
    await got.wait(4)
    assert got.calls == [("init", p, "arg"), (p, 1), (p, 2), (p, 3)]
    with pytest.raises(aemp.InvalidArgument, match="not gated"):
        lowlevel.release(node, p)


async def test_gated_port_with_async_init_and_failing_init(node: aemp.Node) -> None:
    got = Recorder()
    go = asyncio.Event()
    p = lowlevel.gated_port(node)
    node.rcv(p, got)
    node.snd(p, "queued")

    async def init() -> None:
        await go.wait()

    lowlevel.release(node, p, init)
    await settle()
    assert got.calls == []  # still gated while the init runs
    go.set()
    await got.wait()
    assert got.calls == [("queued",)]

    q = lowlevel.gated_port(node)
    died = Recorder()
    node.mon(q, died)
    lowlevel.release(node, q, lambda: [][1])
    await died.wait()
    assert died.calls[0][0] == "die" and "IndexError" in died.calls[0][1]
    lowlevel.release(node, q)  # dead: nothing


async def test_statistics_counts_what_the_node_holds(node: aemp.Node) -> None:
    before = lowlevel.statistics(node)
    assert set(before) >= {"ports", "queued", "calls", "links", "db", "remotes", "tasks"}
    p = node.port(lambda *m: None)
    node.snd(p, "x")
    stats = lowlevel.statistics(node)
    assert stats["ports"] == before["ports"] + 1
    assert stats["queued"] == before["queued"] + 1
    held: list[Any] = []
    srv = node.port(ask=held.append)
    call = node.cal(srv, "ask")
    assert lowlevel.statistics(node)["calls"] == 1
    entry = node.db_set("fam", "k", 1)
    assert lowlevel.statistics(node)["db"]["entries"] >= 1
    call.cancel()
    entry.cancel()
    assert lowlevel.statistics(node)["calls"] == 0


@pytest.mark.virtual_time
async def test_ports_and_port_info_show_monitors_watchers_and_backlog() -> None:
    from aemp import testing

    async with testing.pair() as (a, b, _link):
        p = a.port(lambda *m: None)
        assert p in lowlevel.ports(a) and p not in lowlevel.ports(b)
        assert lowlevel.port_info(a, p) == {"monitors": 0, "watchers": [], "backlog": 0}
        m = a.mon(p, lambda *r: None)
        b.mon(p, lambda *r: None)
        await testing.wait_until(lambda: lowlevel.port_info(a, p)["watchers"] == ["b"])
        assert lowlevel.port_info(a, p) == {"monitors": 1, "watchers": ["b"], "backlog": 0}
        m.cancel()
        assert lowlevel.port_info(a, p)["monitors"] == 0
        gated = lowlevel.gated_port(a)
        a.snd(gated, "waits")
        await settle()
        assert lowlevel.port_info(a, gated)["backlog"] == 1
        a.kil(p)
        assert p not in lowlevel.ports(a)
        assert lowlevel.port_info(a, p) is None and lowlevel.port_info(b, p) is None
        with pytest.raises(aemp.InvalidID):
            lowlevel.port_info(a, "no port id")


@pytest.mark.virtual_time
async def test_node_info_shows_subscriptions_routes_and_back_off() -> None:
    from aemp import testing

    async with testing.pair() as (a, b, _link):
        assert lowlevel.node_info(b, "nobody") is None
        p = a.port(lambda *m: None)
        name = p.partition("#")[2]
        m = b.mon(p, lambda *r: None)
        b.snd(p, "x")
        info = lowlevel.node_info(b, "a")
        assert info == {
            "state": "up",
            "monitors": {name: 1},
            "routes": 1,
            "backoff": None,
            "waiting": False,
        }
        m.cancel()  # the subscription is kept idle for the next monitor
        assert lowlevel.node_info(b, "a")["monitors"] == {name: 0}
        # no link to "ghost", no network: the attempt fails and is remembered
        fired = Recorder()
        b.mon("ghost#p", fired)
        await fired.wait()
        ghost = lowlevel.node_info(b, "ghost")
        assert ghost is not None and ghost["state"] is None and ghost["monitors"] == {}
        assert ghost["backoff"] is not None and ghost["backoff"] > 0
        assert lowlevel.statistics(b)["unreachable"] == 1
        b.mon("ghost#p", fired)  # the next attempt waits out the back-off
        assert lowlevel.node_info(b, "ghost")["waiting"]
        assert lowlevel.statistics(b)["backoffs"] == 1
        await fired.wait(2)
        assert lowlevel.statistics(b)["backoffs"] == 0


async def test_statistics_show_links_addresses_and_call_targets() -> None:
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a,
        aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET) as b,
    ):
        await wait_up(b, "a")
        srv = a.port(ask=lambda reply: a.snd(reply, "ok"))
        assert await b.cal(srv, "ask", timeout=5) == ("ok",)
        stats = lowlevel.statistics(b)
        link = stats["links"]["a"]
        assert link["framing"] == "msgpack" and link["tls"] is None
        assert link["address"] == a.listeners[0]
        assert stats["addresses"] == {"a": [a.listeners[0]]}
        assert stats["calls"] == 0 and stats["call_targets"] == 1  # kept for the next call
        a.kil(srv)  # the idle target's port dies: it is forgotten
        async with asyncio.timeout(5):
            while lowlevel.statistics(b)["call_targets"]:
                await asyncio.sleep(0.005)


async def test_database_shows_own_entries_and_on_a_global_the_merge() -> None:
    async with (
        aemp.Node(nodeid="g", binds=["127.0.0.1:0"], secret=SECRET) as g,
        aemp.Node(nodeid="c", seeds=g.listeners, secret=SECRET) as c,
    ):
        await wait_up(c, "g")
        c.db_set("svc", "k", 1)
        g.db_set("svc", "own", 2)
        await c.db_keys("svc")  # the master has seen c's write
        mine = lowlevel.database(c)
        assert mine["local"] == {"svc": {"k": 1}}
        assert (mine["master"], mine["global"], mine["globals"], mine["merged"]) == (
            "g", False, [], {}
        )  # fmt: skip
        db = lowlevel.database(g)
        assert db["global"] and db["master"] == "g" and db["globals"] == []
        assert db["merged"]["svc"] == {"k": 1, "own": 2}
        assert db["shards"]["c"]["svc"] == {"k": 1} and db["shards"]["g"]["svc"] == {"own": 2}
        db["merged"]["svc"].clear()  # a copy: the node's database is untouched
        assert lowlevel.database(g)["merged"]["svc"] == {"k": 1, "own": 2}


async def test_global_nodes_agrees_with_the_database() -> None:
    async with testing.mesh(["a", "b", "c"]) as mesh:
        await testing.wait_until(lambda: lowlevel.global_nodes(mesh["a"]) == ["b", "c"], 5)
        for n in mesh.nodes:
            assert lowlevel.global_nodes(n) == lowlevel.database(n)["globals"]
            lowlevel.global_nodes(n).clear()  # a copy
            assert lowlevel.global_nodes(n) == lowlevel.database(n)["globals"]
    async with (
        aemp.Node(nodeid="g", binds=["127.0.0.1:0"], secret=SECRET) as g,
        aemp.Node(nodeid="c", seeds=g.listeners, secret=SECRET) as c,
    ):
        await wait_up(c, "g")
        assert lowlevel.global_nodes(c) == [] and lowlevel.global_nodes(g) == []


async def test_statistics_count_packets_each_way() -> None:
    async with (
        aemp.Node(nodeid="a", binds=["127.0.0.1:0"], secret=SECRET) as a,
        aemp.Node(nodeid="b", seeds=a.listeners, secret=SECRET) as b,
    ):
        await wait_up(b, "a")
        got = Recorder()
        sink = a.port(got)
        srv = a.port(ask=lambda reply: a.snd(reply, "ok"))
        assert await b.cal(srv, "ask", timeout=5) == ("ok",)  # settled: both ways up
        before_b, before_a = (
            lowlevel.statistics(b)["links"]["a"],
            lowlevel.statistics(a)["links"]["b"],
        )
        for i in range(1000):  # a burst, written in batches
            b.snd(sink, i)
        assert await b.cal(srv, "ask", timeout=5) == ("ok",)
        await got.wait(1000)
        after_b, after_a = (
            lowlevel.statistics(b)["links"]["a"],
            lowlevel.statistics(a)["links"]["b"],
        )
        # heartbeats may add a few, never take any away
        assert 1001 <= after_b["packets_out"] - before_b["packets_out"] <= 1010
        assert 1001 <= after_a["packets_in"] - before_a["packets_in"] <= 1010
        assert 1 <= after_a["packets_out"] - before_a["packets_out"] <= 10
        assert 1 <= after_b["packets_in"] - before_b["packets_in"] <= 10
        assert after_b["bytes_out"] > before_b["bytes_out"]


async def test_current_node_is_the_node_the_module_functions_use() -> None:
    node = lowlevel.current_node()
    p = aemp.port(lambda *m: None)
    assert aemp.node_of(p) == node.id
    seen: list[aemp.Node] = []
    async with aemp.Node(nodeid="other") as other:
        q = other.port(lambda *m: seen.append(lowlevel.current_node()))
        other.snd(q, "who")
        await settle()
        assert seen == [other]  # in a callback: the node that runs it
    assert lowlevel.current_node() is node


def test_current_node_outside_a_loop_is_an_error() -> None:
    with pytest.raises(aemp.NoCurrentNode, match="no current node"):
        lowlevel.current_node()
