"""aemp.testing: in-memory links, the virtual-time loop and wait_until."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

import aemp
from aemp import lowlevel, testing
from aemp.testing import VirtualTimeLoop, wait_until

pytestmark = pytest.mark.virtual_time


async def test_the_virtual_loop_runs_the_tests_marked_for_it() -> None:
    assert isinstance(asyncio.get_running_loop(), VirtualTimeLoop)


async def test_virtual_time_jumps_to_the_next_timer() -> None:
    loop = asyncio.get_running_loop()
    t0, real = loop.time(), time.monotonic()
    await asyncio.sleep(3600)
    fired: list[float] = []
    loop.call_later(5, lambda: fired.append(loop.time()))
    async with asyncio.timeout(10):
        await wait_until(lambda: fired)
    assert loop.time() - t0 >= 3605 and fired == [t0 + 3605]
    assert time.monotonic() - real < 1


def test_run_and_a_loop_that_waits_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nap() -> float:
        await asyncio.sleep(86400 * 7)
        return asyncio.get_running_loop().time()

    assert testing.run(nap()) == 86400 * 7

    async def forever() -> None:
        await asyncio.get_running_loop().create_future()  # nobody will set it

    monkeypatch.setattr(VirtualTimeLoop, "idle_limit", 0.05)
    with pytest.raises(RuntimeError, match="waits for something that cannot happen"):
        testing.run(forever())


async def test_wait_until_returns_the_value_and_says_what_it_waited_for() -> None:
    box: list[int] = []
    asyncio.get_running_loop().call_later(2, box.append, 7)
    assert await wait_until(lambda: box and box[0], 3) == 7
    with pytest.raises(TimeoutError, match=r"waited 1 s .* for lambda: len\(box\) > 5"):
        await wait_until(lambda: len(box) > 5, 1)
    with pytest.raises(TimeoutError, match="for the port to die; last value 0"):
        await wait_until(lambda: 0, 0.5, what="the port to die")

    async def ready() -> bool:
        return True

    assert await wait_until(ready) is True


async def test_a_pair_carries_messages_through_the_wire_encoder() -> None:
    async with testing.pair(framing="json") as (a, b, link):
        got: list[tuple[Any, ...]] = []
        port = b.port(lambda *m: got.append(m))
        a.snd(port, "hi", [1, 2], {"k": None})
        with pytest.raises(aemp.MessageError, match="cannot send"):
            a.snd(port, b"bytes do not cross json")
        await wait_until(lambda: got)
        assert got == [("hi", [1, 2], {"k": None})]
        assert link.end(a).packets_out >= 1 and link.end(b).packets_in >= 1
        server = b.port(lambda x, reply: b.snd(reply, x * 2))
        assert await a.cal(server, 21) == (42,)


async def test_delay_keeps_order_even_when_it_shrinks() -> None:
    async with testing.pair(delay=0.5) as (a, b, link):
        loop = asyncio.get_running_loop()
        got: list[tuple[int, float]] = []
        port = b.port(lambda i: got.append((i, loop.time())))
        t0 = loop.time()
        a.snd(port, 1)
        link.delay = 0.0
        a.snd(port, 2)
        await wait_until(lambda: len(got) == 2)
        assert [i for i, _ in got] == [1, 2]
        assert got[0][1] - t0 == pytest.approx(0.5)


async def test_cut_is_seen_on_both_sides_at_once() -> None:
    async with testing.pair() as (a, b, link):
        loop = asyncio.get_running_loop()
        pa, pb = a.port(), b.port()
        seen: list[tuple[str, Any]] = []
        a.mon(pb, lambda *r: seen.append(("a", r)))
        b.mon(pa, lambda *r: seen.append(("b", r)))
        downs: list[tuple[Any, ...]] = []
        b.mon_nodes(lambda *args: downs.append(args))
        await wait_until(lambda: link.end(b).packets_in >= 1)  # a's mon1 arrived
        t0 = loop.time()
        link.cut("pulled the plug")
        await wait_until(lambda: len(seen) == 2)
        assert loop.time() - t0 < 0.05
        assert sorted(seen) == [
            ("a", ("transport_error", "b", "pulled the plug")),
            ("b", ("transport_error", "a", "pulled the plug")),
        ]
        assert downs == [("a", False, "transport_error", "a", "pulled the plug")]
        assert not a.node_is_up("b") and not link.is_up
        link.reconnect()
        got: list[tuple[Any, ...]] = []
        pc = b.port(lambda *m: got.append(m))
        a.snd(pc, "again")
        await wait_until(lambda: got == [("again",)])


async def test_a_failed_end_resets_the_other_and_drops_what_was_in_flight() -> None:
    async with testing.pair(delay=1.0) as (a, b, link):
        got: list[tuple[Any, ...]] = []
        port = b.port(lambda *m: got.append(m))
        fired: list[tuple[Any, ...]] = []
        b.mon(a.port(), lambda *r: fired.append(r))
        await wait_until(lambda: a.node_is_up("b") and link.end(a).packets_in >= 1)
        a.snd(port, "in flight")
        link.end(a).fail("given up")
        await wait_until(lambda: fired)
        assert fired == [("transport_error", "a", "Connection reset by peer")]
        await asyncio.sleep(2)
        assert got == []


async def test_close_delivers_what_is_in_flight_then_ends() -> None:
    async with testing.pair(delay=1.0) as (a, b, link):
        order: list[Any] = []
        port = b.port(lambda *m: order.append(m))
        b.mon_nodes(lambda nodeid, up, *reason: order.append((nodeid, up, *reason)))
        a.snd(port, "last words")
        link.end(a).close("done")
        await wait_until(lambda: len(order) == 2)
        assert order == [
            ("last words",),
            ("a", False, "transport_error", "a", "Unexpected end-of-file"),
        ]


async def test_a_node_that_closes_ends_its_links_as_over_tcp() -> None:
    async with testing.mesh(["a", "b", "c"], delay=0.5) as m:
        a, b, c = m.nodes
        order: list[Any] = []
        on_a = a.port(lambda *msg: None)
        port = b.port(lambda *msg: order.append(msg))
        b.mon(on_a, lambda *reason: order.append(("port", *reason)))
        b.mon_nodes(lambda nodeid, up, *reason: order.append((nodeid, up, *reason)))
        await wait_until(lambda: a.id in b.up_nodes())
        a.snd(port, "last words")
        await a.close()
        # what it sent arrives first, then the end, as a TCP close's EOF
        await wait_until(lambda: len(order) == 3)
        lost = ("transport_error", "a", "Unexpected end-of-file")
        assert order[0] == ("last words",)
        assert sorted(order[1:], key=str) == [("a", False, *lost), ("port", *lost)]
        assert b.up_nodes() == ["c"] and c.up_nodes() == ["b"]
        assert not m.link(a, b).is_up and m.link(b, c).is_up


async def test_drop_loses_packets_while_the_link_stays_up() -> None:
    async with testing.pair() as (a, b, link):
        got: list[int] = []
        port = b.port(lambda i: got.append(i))
        link.drop = lambda sender, packet: sender == "a" and packet[1:] == [2]
        for i in range(4):
            a.snd(port, i)
        await wait_until(lambda: len(got) == 3)
        assert got == [0, 1, 3] and link.is_up


async def test_a_partition_is_noticed_after_monitor_timeout() -> None:
    async with testing.pair(monitor_timeout=4) as (a, b, link):
        loop = asyncio.get_running_loop()
        lost: list[tuple[str, float]] = []
        a.mon_nodes(lambda nodeid, up, *r: lost.append(("a", loop.time())))
        b.mon_nodes(lambda nodeid, up, *r: lost.append(("b", loop.time())))
        t0 = loop.time()
        link.partition()
        await wait_until(lambda: len(lost) == 2, 10)
        for _, at in lost:
            assert 4 - 1 <= at - t0 <= 4  # silent since t0 at most; the heartbeat is 1 s
        assert link.end(a).why == "heartbeat timeout"
        link.heal()
        assert not link.is_up


async def test_a_mesh_links_every_pair() -> None:
    async with testing.mesh(["x", "y", "z"]) as m:
        x, y, z = m.nodes
        assert m["y"] is y and m.link("x", z) is m.link(z, x)
        assert sorted(x.up_nodes()) == ["y", "z"] and sorted(z.up_nodes()) == ["x", "y"]
        got: list[tuple[Any, ...]] = []
        port = z.port(lambda *msg: got.append(msg))
        x.snd(port, "via", "memory")
        await wait_until(lambda: got == [("via", "memory")])
        m.link(x, z).cut()
        assert x.up_nodes() == ["y"]


def test_a_link_needs_two_nodes_and_a_known_framing() -> None:
    async def main() -> None:
        async with testing.pair() as (a, b, _):
            with pytest.raises(ValueError, match="two different nodes"):
                testing.link(a, a)
            with pytest.raises(ValueError, match="unknown framing 'xml'"):
                testing.link(a, b, framing="xml")

    testing.run(main())


def test_the_example_of_docs_testing_md_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text()
    example = re.search(r"```python\n(.*?)```", page, re.S)
    assert example is not None
    real = time.monotonic()
    exec(compile(example.group(1), "docs/testing.md", "exec"), {"__name__": "example"})
    assert capsys.readouterr().out == "lost: ('transport_error', 'b', 'heartbeat timeout')\n"
    assert time.monotonic() - real < 2


async def test_connection_and_cut_link_reach_the_live_link() -> None:
    async with testing.pair() as (a, b, link):
        assert testing.connection(a, "b") is link.end(a)
        with pytest.raises(LookupError, match="no link to 'c'"):
            testing.connection(a, "c")
        seen: list[tuple[str, Any]] = []
        a.mon(b.port(), lambda *r: seen.append(("a", r)))
        b.mon(a.port(), lambda *r: seen.append(("b", r)))
        await wait_until(lambda: link.end(b).packets_in >= 1 and link.end(a).packets_in >= 1)
        testing.cut_link(a, "b", "cut here")
        await wait_until(lambda: len(seen) == 2)
        assert sorted(seen) == [
            ("a", ("transport_error", "b", "cut here")),
            ("b", ("transport_error", "a", "Connection reset by peer")),
        ]
        with pytest.raises(LookupError):
            testing.cut_link(a, "b")


async def test_network_is_there_only_for_a_node_with_one() -> None:
    async with testing.pair() as (a, _b, _link):
        with pytest.raises(RuntimeError, match="has no network"):
            testing.network(a)


async def test_take_names_takes_names_the_node_never_gives_out() -> None:
    async with testing.pair() as (a, _b, _link):
        names = testing.take_names(a)
        local, spawn, reply = a.prefixes
        assert names["local"].startswith(f"a#{local}")
        assert names["spawn"].startswith(f"a#{spawn}")
        assert names["reply"].startswith(f"a#{reply}")
        made = {a.port(), a.spawn("a", "spawn_targets:echo_init", "x")}
        replies: list[str] = []
        srv = a.port(ask=lambda r: (replies.append(r), a.snd(r, 1)))
        assert await a.cal(srv, "ask", timeout=5) == (1,)
        made.add(replies[0])
        assert not made & set(names.values())
        assert testing.take_names(a) != names


async def test_monitor_raw_sends_any_name() -> None:
    async with testing.pair() as (a, b, _link):
        got: list[tuple[Any, ...]] = []
        testing.monitor_raw(a, "b", "no such\nname", lambda *r: got.append(r))
        await wait_until(lambda: got)
        assert got == [("no_such_port", "cannot monitor nonexistent port", "b#no such\nname")]
        p = b.port()
        testing.monitor_raw(a, "b", p.partition("#")[2], lambda *r: got.append(r))
        await wait_until(
            lambda: lowlevel.port_info(b, p) == {"monitors": 0, "watchers": ["a"], "backlog": 0}
        )
        b.kil(p, "bye")
        await wait_until(lambda: len(got) == 2)
        assert got[1] == ("bye",)
