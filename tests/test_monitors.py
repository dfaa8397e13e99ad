"""kil and mon in all four forms, mon_guard, one-shot firing, handles."""

from __future__ import annotations

import gc
import weakref

import pytest
from conftest import Recorder, settle

import aemp


async def test_mon_callback_normal_and_abnormal(node: aemp.Node) -> None:
    a, b = node.port(), node.port()
    ra, rb = Recorder(), Recorder()
    node.mon(a, ra)
    node.mon(b, rb)
    node.kil(a)
    node.kil(b, "my_error", "broken", 3)
    await rb.wait()
    assert ra.calls == [()]
    assert rb.calls == [("my_error", "broken", 3)]


async def test_monitors_fire_from_the_loop_not_inside_kil(node: aemp.Node) -> None:
    p = node.port()
    rec = Recorder()
    node.mon(p, rec)
    node.kil(p, "x")
    assert rec.calls == []
    await rec.wait()


async def test_monitor_fires_after_messages_sent_before_the_kill(node: aemp.Node) -> None:
    order: list[str] = []
    target = node.port()
    watcher = node.port(note=lambda: order.append("message"))
    node.mon(target, lambda *r: order.append("monitor"))
    node.snd(watcher, "note")
    node.kil(target, "x")
    await settle()
    assert order == ["message", "monitor"]


async def test_mon_kill_form_kills_on_abnormal_death_only(node: aemp.Node) -> None:
    t1, t2 = node.port(), node.port()
    w1, w2 = node.port(), node.port()
    r1, r2 = Recorder(), Recorder()
    node.mon(t1, w1)
    node.mon(t2, w2)
    node.mon(w1, r1)
    node.mon(w2, r2)
    node.kil(t1)  # normal: w1 lives
    node.kil(t2, "crash", "why")
    await r2.wait()
    assert r2.calls == [("crash", "why")]
    assert r1.calls == []
    assert node.port_is_local(w1)
    node.snd(w1, "still there?")  # w1 has no callback: it dies of that, proving it was alive
    await r1.wait()
    assert r1.calls[0][0] == "unhandled_message"


async def test_mon_without_action_kills_self(node: aemp.Node) -> None:
    target = node.port()
    died = Recorder()

    def watch() -> None:
        node.mon(target)

    w = node.port(watch=watch)
    node.mon(w, died)
    node.snd(w, "watch")
    await settle()
    node.kil(target, "gone")
    await died.wait()
    assert died.calls == [("gone",)]


async def test_mon_without_action_outside_port_is_an_error(node: aemp.Node) -> None:
    with pytest.raises(TypeError, match="no port callback is running"):
        node.mon(node.port())


async def test_mon_message_form_sends_msg_and_reason(node: aemp.Node) -> None:
    t1, t2 = node.port(), node.port()
    rec = Recorder()
    r = node.port(rec)
    node.mon(t1, r, "down", 1)
    node.mon(t2, r, "down", 2)
    node.kil(t1)
    node.kil(t2, "boom")
    await rec.wait(2)
    assert sorted(rec.calls) == [("down", 1), ("down", 2, "boom")]


async def test_monitors_are_one_shot(node: aemp.Node) -> None:
    p = node.port()
    rec = Recorder()
    node.mon(p, rec)
    node.kil(p, "first")
    node.kil(p, "second")
    await settle(10)
    assert rec.calls == [("first",)]


async def test_several_monitors_each_fire_once(node: aemp.Node) -> None:
    p = node.port()
    recs = [Recorder() for _ in range(5)]
    for r in recs:
        node.mon(p, r)
    node.mon(p, recs[0])  # a second registration is a second monitor
    node.kil(p, "x")
    await settle()
    assert [len(r.calls) for r in recs] == [2, 1, 1, 1, 1]


async def test_mon_on_nonexistent_port(node: aemp.Node) -> None:
    p = node.port()
    node.kil(p)
    await settle()
    rec = Recorder()
    node.mon(p, rec)
    await rec.wait()
    assert rec.calls == [("no_such_port", "cannot monitor nonexistent port", p)]


async def test_cancel_and_context_manager(node: aemp.Node) -> None:
    p = node.port()
    r1, r2, r3 = Recorder(), Recorder(), Recorder()
    m1 = node.mon(p, r1)
    m1.cancel()
    m1.cancel()  # idempotent
    assert not m1.active
    with node.mon(p, r2) as m2:
        assert m2.active
    assert not m2.active
    node.mon(p, r3)  # handle dropped at once: still fires
    gc.collect()
    node.kil(p, "x")
    await r3.wait()
    assert r1.calls == [] and r2.calls == []


async def test_monitor_callback_exception_kills_the_registering_port(node: aemp.Node) -> None:
    target = node.port()
    died = Recorder()

    def bad_cb(*reason: object) -> None:
        raise RuntimeError("in monitor")

    w = node.port(go=lambda: node.mon(target, bad_cb))
    node.mon(w, died)
    node.snd(w, "go")
    await settle()
    node.kil(target)
    await died.wait()
    assert died.calls == [("die", "RuntimeError: in monitor")]


async def test_mon_guard_keeps_objects_until_death(node: aemp.Node) -> None:
    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing)
    p = node.port()
    node.mon_guard(p, thing)
    del thing
    gc.collect()
    assert ref() is not None
    node.kil(p)
    await settle()
    gc.collect()
    assert ref() is None


async def test_kil_from_inside_own_callback(node: aemp.Node) -> None:
    rec, later = Recorder(), Recorder()
    p = node.port(later, stop=lambda: node.kil(aemp.SELF.get() or "", "stopped"))
    node.mon(p, rec)
    node.snd(p, "stop")
    node.snd(p, "more")
    await rec.wait()
    await settle()
    assert rec.calls == [("stopped",)] and later.calls == []


async def test_kil_cancels_a_running_async_callback(node: aemp.Node) -> None:
    import asyncio

    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    p = node.port(go=forever)
    node.snd(p, "go")
    await settle()
    node.kil(p, "stop")
    await asyncio.wait_for(cancelled.wait(), 2)


async def test_mon_on_own_node_port_never_fires(node: aemp.Node) -> None:
    rec = Recorder()
    m = node.mon(node.id, rec)
    await settle()
    assert rec.calls == [] and m.active


async def test_other_node_in_same_process_is_not_reachable(node: aemp.Node) -> None:
    async with aemp.Node(nodeid="other") as other:
        got = Recorder()
        p = other.port(got)
        node.snd(p, "hello")  # no network between them: dropped
        died = Recorder()
        node.mon(p, died)
        await died.wait()
        assert died.calls == [("transport_error", "other", "no known address")]
        assert got.calls == []
        assert not node.port_is_local(p) and other.port_is_local(p)
