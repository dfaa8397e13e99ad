"""port, rcv, snd on local ports: dispatch, order, re-entrancy, async callbacks."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import Recorder, settle

import aemp


async def test_default_callback_gets_whole_message(node: aemp.Node) -> None:
    rec = Recorder()
    p = node.port(rec)
    node.snd(p, "hello", 1, [2, 3], {"k": None})
    assert rec.calls == []  # never delivered inside snd
    await rec.wait()
    assert rec.calls == [("hello", 1, [2, 3], {"k": None})]


async def test_tag_callbacks_get_message_minus_tag(node: aemp.Node) -> None:
    ping, default = Recorder(), Recorder()
    p = node.port(default, ping=ping)
    node.snd(p, "ping", 1, 2)
    node.snd(p, "other", 3)
    await default.wait()
    assert ping.calls == [(1, 2)]
    assert default.calls == [("other", 3)]


async def test_dict_form_for_any_tag_string(node: aemp.Node) -> None:
    rec = Recorder()
    p = node.port()
    assert node.rcv(p, {"needs space": rec, "": rec}) == p
    node.snd(p, "needs space", 1)
    node.snd(p, "", 2)
    await rec.wait(2)
    assert rec.calls == [(1,), (2,)]


async def test_rcv_none_removes_tag_and_default(node: aemp.Node) -> None:
    a, b = Recorder(), Recorder()
    p = node.port(b, a=a)
    node.rcv(p, a=None)
    node.snd(p, "a", 1)
    await b.wait()
    assert a.calls == [] and b.calls == [("a", 1)]
    node.rcv(p, None)
    died = Recorder()
    node.mon(p, died)
    node.snd(p, "a", 2)
    await died.wait()
    assert died.calls == [("unhandled_message", "no callback found for message 'a'")]


async def test_rcv_replaces_default_callback(node: aemp.Node) -> None:
    first, second = Recorder(), Recorder()
    p = node.port(first)
    node.rcv(p, second)
    node.snd(p, "x")
    await second.wait()
    assert first.calls == []


async def test_port_without_callback_dies_on_unhandled_message(node: aemp.Node) -> None:
    died = Recorder()
    p = node.port(ok=lambda: None)
    node.mon(p, died)
    node.snd(p, "ok")
    node.snd(p, "nope", 1)
    node.snd(p, "ok")
    await died.wait()
    assert died.calls == [("unhandled_message", "no callback found for message 'nope'")]


async def test_non_string_tag_goes_to_default(node: aemp.Node) -> None:
    rec = Recorder()
    p = node.port(rec, ping=lambda: None)
    node.snd(p, [1, 2], "x")
    node.snd(p, 5)
    await rec.wait(2)
    assert rec.calls == [([1, 2], "x"), (5,)]


async def test_order_of_100000_messages(node: aemp.Node) -> None:
    got: list[int] = []
    done = asyncio.get_running_loop().create_future()

    def cb(i: int) -> None:
        got.append(i)
        if i == 99_999:
            done.set_result(None)

    p = node.port(n=cb)
    for i in range(100_000):
        node.snd(p, "n", i)
    await asyncio.wait_for(done, 10)
    assert got == list(range(100_000))


async def test_order_holds_across_senders_and_self_sends(node: aemp.Node) -> None:
    got: list[Any] = []
    p = node.port(lambda *m: got.append(m))

    def relay(i: int) -> None:
        node.snd(p, "via", i)

    r = node.port(go=relay)
    for i in range(100):
        node.snd(r, "go", i)
        node.snd(p, "direct", i)
    await settle(20)
    assert [m[1] for m in got if m[0] == "via"] == list(range(100))
    assert [m[1] for m in got if m[0] == "direct"] == list(range(100))


async def test_handler_sending_to_itself_never_recurses(node: aemp.Node) -> None:
    depth = 0
    max_depth = 0
    count = 0

    def cb(n: int) -> None:
        nonlocal depth, max_depth, count
        depth += 1
        max_depth = max(max_depth, depth)
        count += 1
        if n:
            node.snd(p, "n", n - 1)
            node.snd(p, "n", 0)
        depth -= 1

    p = node.port(n=cb)
    node.snd(p, "n", 5000)  # far deeper than the recursion limit if it nested
    for _ in range(200):
        await asyncio.sleep(0)
        if count == 10_001:
            break
    assert count == 10_001
    assert max_depth == 1


async def test_exception_kills_port_with_die_reason(node: aemp.Node) -> None:
    died, after = Recorder(), Recorder()

    def boom(x: int) -> None:
        raise ValueError(f"bad {x}")

    p = node.port(after, boom=boom)
    node.mon(p, died)
    node.snd(p, "boom", 7)
    node.snd(p, "later")
    await died.wait()
    assert died.calls == [("die", "ValueError: bad 7")]
    await settle()
    assert after.calls == []  # messages behind the fatal one are not delivered


async def test_async_callback_exception_kills_port(node: aemp.Node) -> None:
    died = Recorder()

    async def boom() -> None:
        await asyncio.sleep(0)
        raise KeyError("k")

    p = node.port(boom=boom)
    node.mon(p, died)
    node.snd(p, "boom")
    await died.wait()
    assert died.calls == [("die", "KeyError: 'k'")]


async def test_async_callback_holds_later_messages_of_its_port_only(node: aemp.Node) -> None:
    log: list[str] = []
    release = asyncio.Event()

    async def slow(i: int) -> None:
        log.append(f"start {i}")
        if i == 0:
            await release.wait()
        log.append(f"end {i}")

    p = node.port(slow=slow)
    other = node.port(lambda *m: log.append("other"))
    node.snd(p, "slow", 0)
    node.snd(p, "slow", 1)
    node.snd(p, "slow", 2)
    node.snd(other, "x")
    await settle()
    assert sorted(log) == ["other", "start 0"]
    release.set()
    await settle(10)
    assert log[2:] == ["end 0", "start 1", "end 1", "start 2", "end 2"]


async def test_async_callback_then_sync_backlog_keeps_order(node: aemp.Node) -> None:
    got: list[int] = []

    async def first(i: int) -> None:
        await asyncio.sleep(0.001)
        got.append(i)

    p = node.port(a=first, s=got.append)
    node.snd(p, "a", 0)
    for i in range(1, 50):
        node.snd(p, "s", i)
    await asyncio.sleep(0.02)
    for i in range(50, 60):
        node.snd(p, "s", i)
    await settle()
    assert got == list(range(60))


async def test_self_is_the_running_port(node: aemp.Node) -> None:
    seen: list[Any] = []

    async def a() -> None:
        await asyncio.sleep(0)
        seen.append(aemp.SELF.get())

    p = node.port(lambda *m: seen.append(aemp.SELF.get()))
    q = node.port(a=a)
    node.snd(p, "x")
    node.snd(q, "a")
    await settle(5)
    assert seen == [p, q]
    assert aemp.SELF.get() is None


async def test_port_names_are_unique_and_never_reused(node: aemp.Node) -> None:
    ids = [node.port() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for p in ids[:10]:
        node.kil(p)
    assert not set(ids) & {node.port() for _ in range(100)}


def test_port_name_counter_runs_a_to_z_then_aa() -> None:
    from aemp._ids import counter_names

    def spelled(n: int) -> str:  # bijective base 26: 1 = a, 26 = z, 27 = aa
        out = ""
        while n:
            n, r = divmod(n - 1, 26)
            out = "abcdefghijklmnopqrstuvwxyz"[r] + out
        return out

    names = counter_names("n#P")
    assert [next(names) for _ in range(20_000)] == ["n#P" + spelled(n) for n in range(1, 20_001)]


async def test_same_nodeid_gets_fresh_port_names() -> None:
    async with aemp.Node(nodeid="same") as a:
        first = {a.port() for _ in range(100)}
    async with aemp.Node(nodeid="same") as b:
        second = {b.port() for _ in range(100)}
    assert not first & second
    assert all(p.startswith("same#") for p in first | second)


async def test_dead_port_receives_nothing(node: aemp.Node) -> None:
    rec = Recorder()
    p = node.port(rec)
    node.snd(p, "before")
    node.kil(p)
    node.snd(p, "after")  # dropped, no error
    await settle()
    assert rec.calls == []  # even "before": the port died before delivery
