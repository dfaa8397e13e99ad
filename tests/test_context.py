"""psub, peval, after, SELF and the module-level functions' current node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Recorder, settle

import aemp
from aemp import lowlevel


async def test_psub_runs_later_in_port_context(node: aemp.Node) -> None:
    seen: list[Any] = []
    holder: dict[str, Any] = {}

    def start() -> None:
        holder["fn"] = node.psub(lambda x: seen.append((x, aemp.SELF.get())))

    p = node.port(start=start)
    node.snd(p, "start")
    await settle()
    holder["fn"](1)
    assert seen == [(1, p)]
    assert aemp.SELF.get() is None  # restored after the call


async def test_psub_error_kills_port_and_dead_port_runs_nothing(node: aemp.Node) -> None:
    holder: dict[str, Any] = {}
    calls: list[int] = []

    def bad(x: int) -> None:
        calls.append(x)
        raise LookupError("psub failed")

    p = node.port(start=lambda: holder.setdefault("fn", node.psub(bad)))
    died = Recorder()
    node.mon(p, died)
    node.snd(p, "start")
    await settle()
    holder["fn"](1)
    await died.wait()
    assert died.calls == [("die", "LookupError: psub failed")]
    holder["fn"](2)
    assert calls == [1]


async def test_psub_with_async_function(node: aemp.Node) -> None:
    holder: dict[str, Any] = {}
    died = Recorder()

    async def later() -> None:
        await asyncio.sleep(0)
        raise ValueError("async psub")

    p = node.port(start=lambda: holder.setdefault("fn", node.psub(later)))
    node.mon(p, died)
    node.snd(p, "start")
    await settle()
    holder["fn"]()
    await died.wait()
    assert died.calls == [("die", "ValueError: async psub")]


async def test_peval_returns_value_and_error_kills(node: aemp.Node) -> None:
    p = node.port()
    assert node.peval(p, lambda a, b: (a + b, aemp.SELF.get()), 1, 2) == (3, p)
    died = Recorder()
    node.mon(p, died)
    assert node.peval(p, lambda: 1 / 0) is None
    await died.wait()
    assert died.calls == [("die", "ZeroDivisionError: division by zero")]
    with pytest.raises(aemp.PortDead):
        node.peval(p, lambda: None)


async def test_after_sends_and_calls(node: aemp.Node) -> None:
    rec = Recorder()
    p = node.port(rec)
    called: list[Any] = []
    t0 = asyncio.get_running_loop().time()
    node.after(0.02, p, "tick", 1)
    node.after(0.01, lambda: called.append(aemp.SELF.get()))
    await rec.wait()
    assert rec.calls == [("tick", 1)]
    assert asyncio.get_running_loop().time() - t0 >= 0.015
    assert called == [None]


async def test_after_cancel(node: aemp.Node) -> None:
    rec = Recorder()
    p = node.port(rec)
    with node.after(0.01, p, "never"):
        pass
    t = node.after(0.01, p, "never")
    t.cancel()
    await asyncio.sleep(0.03)
    assert rec.calls == []
    assert lowlevel.statistics(node)["timers"] == 0


async def test_after_callback_error_kills_caller_port(node: aemp.Node) -> None:
    died = Recorder()
    p = node.port(start=lambda: node.after(0, lambda: {}["missing"]))
    node.mon(p, died)
    node.snd(p, "start")
    await died.wait()
    assert died.calls == [("die", "KeyError: 'missing'")]


async def test_after_bad_arguments(node: aemp.Node) -> None:
    for bad in (-1, -0.5, float("nan")):  # a delay out of range is a ValueError
        with pytest.raises(aemp.OutOfRange, match="seconds must be a number >= 0") as ei:
            node.after(bad, node.port(), "x")
        assert isinstance(ei.value, ValueError) and not isinstance(ei.value, TypeError)
    for bad in ("1", None, True):  # not a number at all: a TypeError
        with pytest.raises(aemp.InvalidArgument, match="seconds must be a number"):
            node.after(bad, node.port(), "x")
    with pytest.raises(aemp.InvalidID):
        node.after(1, "", "x")


async def test_module_functions_act_on_the_node_of_the_running_callback() -> None:
    async with aemp.Node(nodeid="a") as a, aemp.Node(nodeid="b") as b:
        seen: list[Any] = []

        def cb() -> None:
            q = aemp.port()
            seen.append((aemp.NODE(), aemp.node_of(q), aemp.port_is_local(q)))

        a.snd(a.port(go=cb), "go")
        b.snd(b.port(go=cb), "go")
        await settle()
        assert seen == [("a", "a", True), ("b", "b", True)]


async def test_module_functions_outside_callbacks_use_process_node() -> None:
    node = await aemp.configure(nodeid="proc")
    try:
        assert aemp.NODE() == "proc"
        rec = Recorder()
        p = aemp.port(rec)
        aemp.snd(p, "hi")
        await rec.wait()
        assert aemp.node_of(p) == "proc"
        with pytest.raises(aemp.ConfigError, match="already called"):
            await aemp.configure(nodeid="again")
    finally:
        await node.close()
    assert aemp.NODE() != "proc"  # an anonymous node takes over after close


async def test_configure_default_nodeid_uses_profile() -> None:
    node = await aemp.configure(profile="worker")
    try:
        assert node.id.startswith("worker/") and len(node.id) == len("worker/") + 10
    finally:
        await node.close()


def test_no_event_loop_is_a_clear_error() -> None:
    with pytest.raises(aemp.NoCurrentNode, match="event loop"):
        aemp.port()


def test_run_uses_uvloop() -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert aemp.run(main()).startswith("uvloop")


def test_implicit_node_is_per_event_loop() -> None:
    async def main() -> str:
        rec = Recorder()
        p = aemp.port(rec)
        aemp.snd(p, "x")
        await rec.wait()
        return aemp.NODE()

    first = aemp.run(main())
    second = asyncio.run(main())  # also works on the stdlib loop
    assert first != second
    assert first.startswith("anon/")


def test_node_outside_loop_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        aemp.Node()
