"""Closing a node: nothing left running, pending work fails clearly, later use raises."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from conftest import settle

import aemp
from aemp import lowlevel


async def test_close_leaves_no_task_and_no_warning() -> None:
    before = asyncio.all_tasks()
    node = aemp.Node()

    async def forever() -> None:
        await asyncio.sleep(3600)

    busy = node.port(go=forever)
    node.snd(busy, "go")
    node.psub(forever)()  # an owned task outside any port
    node.after(3600, node.port(print), "never")
    silent = node.port(ask=lambda reply: None)
    call = node.cal(silent, "ask", timeout=3600)
    for i in range(1000):
        node.snd(node.port(print), "queued", i)
    await settle()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await node.close()
        gc.collect()
        await settle()
    assert asyncio.all_tasks() == before
    stats = lowlevel.statistics(node)
    assert stats["tasks"] == stats["timers"] == stats["ports"] == stats["queued"] == 0
    with pytest.raises(aemp.NodeClosed, match="was closed"):
        await call


async def test_close_ends_callback_form_calls_quietly() -> None:
    node = aemp.Node(nodeid="closing")
    silent = node.port(ask=lambda reply: None)
    owner = node.port(lambda *m: None)
    errs: list[Exception] = []
    node.cal(silent, "ask", cb=print)  # no err: dropped without a log line
    token = aemp.SELF.set(owner)
    try:
        node.cal(silent, "ask", cb=print)  # and its owner is not killed
    finally:
        aemp.SELF.reset(token)
    node.cal(silent, "ask", cb=print, err=errs.append)
    await settle()
    await node.close()
    await settle()
    assert [type(e) for e in errs] == [aemp.NodeClosed]


async def test_use_after_close_raises() -> None:
    node = aemp.Node(nodeid="gone")
    p = node.port(print)
    await node.close()
    await node.close()  # idempotent
    with pytest.raises(aemp.NodeClosed, match="'gone' is closed"):
        node.snd(p, "x")
    with pytest.raises(aemp.NodeClosed):
        node.port()
    with pytest.raises(aemp.NodeClosed):
        node.mon(p, print)
    with pytest.raises(aemp.NodeClosed):
        node.cal(p, "x")
    with pytest.raises(aemp.NodeClosed):
        node.spawn("gone", "m:f")


async def test_close_from_inside_an_async_callback() -> None:
    node = aemp.Node()
    done = asyncio.Event()

    async def shutdown() -> None:
        await node.close()
        done.set()

    node.snd(node.port(stop=shutdown), "stop")
    await asyncio.wait_for(done.wait(), 2)
    assert node.closed


async def test_async_with() -> None:
    async with aemp.Node(nodeid="ctx") as node:
        assert node.id == "ctx" and node.listeners == []
    assert node.closed


async def test_monitors_do_not_fire_on_close() -> None:
    node = aemp.Node()
    fired: list[object] = []
    node.mon(node.port(), lambda *r: fired.append(r))
    await node.close()
    await settle()
    assert fired == []


async def test_network_needs_a_secret_or_a_certificate() -> None:
    node = aemp.Node(binds=["127.0.0.1:0"])
    with pytest.raises(aemp.ConfigError, match=r"set 'secret' \(aemp gensecret\)"):
        await node.start()
    await node.close()
