"""The kernel's copies of its hot paths agree: the three of the dispatch,
and the three of the send side.

A message reaches a port's callbacks through one of three copies of the
same steps in aemp/kernel/_dispatch.py, kept inlined for speed: the loop of
_drain (sent from this node), the loop of _receive (read from another
node, delivered at once) and _deliver (a busy or gated port's backlog).
Each case below sends the same messages to the same callbacks through all
three and compares what the callbacks saw (SELF, arguments, order) and
how the port ended. The send side has its copies there too (Kernel.snd,
Kernel.send and make_snd, which is aemp.snd): one series of sends, good
and bad, local, remote, to node ports and to a closed node, goes through
each, and what they raised and what arrived must be the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from conftest import settle

import aemp
from aemp import lowlevel

Trace = list[tuple[Any, ...]]
Setup = Callable[[aemp.Node, str, Trace], None]


def tags_and_default(node: aemp.Node, p: str, trace: Trace) -> None:
    node.rcv(
        p,
        lambda *m: trace.append(("default", aemp.SELF.get(), *m)),
        a=lambda *m: trace.append(("a", aemp.SELF.get(), *m)),
    )


def tags_only(node: aemp.Node, p: str, trace: Trace) -> None:
    node.rcv(p, a=lambda *m: trace.append(("a", aemp.SELF.get(), *m)))


def raises(node: aemp.Node, p: str, trace: Trace) -> None:
    def cb(*m: Any) -> None:
        trace.append(("cb", aemp.SELF.get(), *m))
        if m[0] == "boom":
            raise ZeroDivisionError("boom")

    node.rcv(p, cb)


def async_cb(node: aemp.Node, p: str, trace: Trace) -> None:
    async def cb(*m: Any) -> None:
        trace.append(("start", aemp.SELF.get(), *m))
        await asyncio.sleep(0)
        trace.append(("end", aemp.SELF.get(), *m))
        if m[0] == "die":
            raise ValueError("late")

    node.rcv(p, cb)


def kills_itself(node: aemp.Node, p: str, trace: Trace) -> None:
    def cb(*m: Any) -> None:
        trace.append(("cb", aemp.SELF.get(), *m))
        if m[0] == "stop":
            node.kil(p, "stopped", m[1])

    node.rcv(p, cb)


CASES: dict[str, tuple[Setup, list[tuple[Any, ...]]]] = {
    "tags and default": (
        tags_and_default,
        [("a", 1), ("b", 2), (3, "x"), ({"k": 1},), ("a",), ([1], "a")],
    ),
    "unhandled": (tags_only, [("a", 1), ("zz", 2), ("a", 3)]),
    "die": (raises, [("ok", 1), ("boom", 2), ("ok", 3)]),
    "async": (async_cb, [("m", 1), ("m", 2), ("die", 3), ("m", 4)]),
    "kil inside": (kills_itself, [("x", 1), ("stop", 2), ("x", 3)]),
}

PATHS = ["drain", "receive", "deliver"]


async def run_case(node: aemp.Node, path: str, case: str) -> tuple[Trace, tuple[Any, ...]]:
    setup, messages = CASES[case]
    trace: Trace = []
    p = lowlevel.gated_port(node) if path == "deliver" else node.port()
    setup(node, p, trace)
    ended: list[tuple[Any, ...]] = []
    node.mon(p, lambda *reason: ended.append(reason))
    name = p.partition("#")[2]
    if path == "receive":
        await settle()  # the run queue is empty: _receive delivers at once
        node.inbox("peer").receive([[name, *m] for m in messages])
    else:
        for m in messages:
            node.snd(p, *m)
        if path == "deliver":
            await settle()
            assert trace == []
            lowlevel.release(node, p)
    for _ in range(20):
        await settle()
    # the port's own name is the same in every path: compare it as "P"
    shown = [tuple("P" if x == p else x for x in t) for t in trace]
    return shown, (ended[0] if ended else ("alive",))


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_three_dispatch_paths_agree(node: aemp.Node, case: str) -> None:
    results = {path: await run_case(node, path, case) for path in PATHS}
    assert results["receive"] == results["drain"], case
    assert results["deliver"] == results["drain"], case


async def test_the_cases_see_what_they_should(node: aemp.Node) -> None:
    """The common answer is the right one (so agreeing means something)."""
    trace, end = await run_case(node, "drain", "tags and default")
    assert trace == [
        ("a", "P", 1),
        ("default", "P", "b", 2),
        ("default", "P", 3, "x"),
        ("default", "P", {"k": 1}),
        ("a", "P"),
        ("default", "P", [1], "a"),
    ]
    assert end == ("alive",)
    trace, end = await run_case(node, "drain", "unhandled")
    assert trace == [("a", "P", 1)]
    assert end == ("unhandled_message", "no callback found for message 'zz'")
    trace, end = await run_case(node, "drain", "die")
    assert trace == [("cb", "P", "ok", 1), ("cb", "P", "boom", 2)]
    assert end == ("die", "ZeroDivisionError: boom")
    trace, end = await run_case(node, "drain", "async")
    assert trace == [
        ("start", "P", "m", 1),
        ("end", "P", "m", 1),
        ("start", "P", "m", 2),
        ("end", "P", "m", 2),
        ("start", "P", "die", 3),
        ("end", "P", "die", 3),
    ]
    assert end == ("die", "ValueError: late")
    trace, end = await run_case(node, "drain", "kil inside")
    assert trace == [("cb", "P", "x", 1), ("cb", "P", "stop", 2)]
    assert end == ("stopped", 2)


# -- the send side: Kernel.snd, Kernel.send and make_snd (aemp.snd) -----------


def _snd(node: aemp.Node, port: Any, msg: tuple[Any, ...]) -> None:
    node.snd(port, *msg)


def _send(node: aemp.Node, port: Any, msg: tuple[Any, ...]) -> None:
    node.send(port, msg)


def _module_snd(node: aemp.Node, port: Any, msg: tuple[Any, ...]) -> None:
    # aemp.snd acts on the current node: the one whose code runs (call_in
    # makes it current); call_in logs what it raises, so carry it out
    raised: list[BaseException] = []

    def send() -> None:
        try:
            aemp.snd(port, *msg)
        except Exception as e:
            raised.append(e)

    lowlevel.call_in(node, None, send)
    if raised:
        raise raised[0]


SENDERS: dict[str, Callable[[aemp.Node, Any, tuple[Any, ...]], None]] = {
    "Kernel.snd": _snd,
    "Kernel.send": _send,
    "aemp.snd": _module_snd,
}


async def send_case(sender: str) -> tuple[list[Any], list[Any]]:
    """Send one series through `sender`: (what each send raised, what arrived where)."""
    from aemp import testing

    send = SENDERS[sender]
    outcomes: list[Any] = []
    got: list[Any] = []
    async with testing.pair() as (a, b, _link):
        local = a.port(lambda *m: got.append(("local", *m)))
        remote = b.port(lambda *m: got.append(("remote", *m)))
        other = b.port(lambda *m: got.append(("other", *m)))
        reply = a.port(lambda *m: got.append(("reply", *m)))
        dead = a.port()
        a.kil(dead)
        nodeid = a.id
        cases: list[tuple[Any, tuple[Any, ...]]] = [
            (local, ("x", 1)),
            (local, ("bad", {1, 2})),  # not for the wire: refused, locally too
            (local, ()),  # empty
            (remote, ("y", 2)),  # not routed yet
            (remote, ("y", 3)),  # routed now
            (remote, ("bad", {1})),
            (other, ("bad", {1})),  # not routed, bad
            (dead, ("z",)),  # dropped
            (nodeid, ("can", "mon1", reply, "own")),  # a node request to this node
            ("b", ("can", "nothing", reply, "b")),  # ... to another node
            ("no such#port#at all", ("w",)),
            (None, ("w",)),
            (local, ("x", 4)),
        ]
        for port, msg in cases:
            try:
                send(a, port, msg)
                outcomes.append(None)
            except aemp.AempError as e:
                outcomes.append(type(e).__name__)
        await testing.wait_until(lambda: len(got) >= 6, what=f"{sender}: six arrivals")
    # a closed node refuses
    try:
        send(a, local, ("late",))
        outcomes.append(None)
    except aemp.AempError as e:
        outcomes.append(type(e).__name__)
    # the ports' names differ from run to run: arrivals compared per port
    return outcomes, sorted(got, key=repr)


@pytest.mark.virtual_time
async def test_the_three_send_paths_agree() -> None:
    results = {sender: await send_case(sender) for sender in SENDERS}
    assert results["Kernel.send"] == results["Kernel.snd"]
    assert results["aemp.snd"] == results["Kernel.snd"]
    # and the common answer is the right one
    outcomes, got = results["Kernel.snd"]
    assert outcomes == [
        *(None, "MessageError", "MessageError"),
        *(None, None, "MessageError", "MessageError"),
        *(None, None, None),
        *("InvalidID", "InvalidID", None),
        "NodeClosed",
    ]
    assert got == sorted(
        [
            ("local", "x", 1),
            ("local", "x", 4),
            ("remote", "y", 2),
            ("remote", "y", 3),
            ("reply", "own", True),
            ("reply", "b", False),
        ],
        key=repr,
    )
