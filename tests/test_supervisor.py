"""aemp.supervisor: strategies, restart intensity, placement, nesting, no orphans.

The first tests run nodes in this process (over TCP); those marked as
process tests start host nodes as processes of their own
(tests/supervisor_host.py) and kill them with SIGKILL. Every wait is an
awaited event with a bound, never a sleep that hopes.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import supervised  # noqa: F401  (loaded: the host nodes of this process may spawn it)
from conftest import free_port, until

import aemp
from aemp import testing
from aemp.supervisor import (
    Child,
    Event,
    InvalidSpec,
    Supervisor,
    SupervisorExited,
    supervisor_child,
)

HOST = Path(__file__).resolve().parent / "supervisor_host.py"
SECRET = "supervisor-secret"
WAIT = 15.0  # the longest one awaited event may take


class Events:
    """An on_event callback that keeps every event and can be awaited."""

    def __init__(self) -> None:
        self.all: list[Event] = []
        self._more = asyncio.Event()

    def __call__(self, ev: Event) -> None:
        self.all.append(ev)
        self._more.set()

    def of(self, kind: str, child: str | None = None) -> list[Event]:
        return [e for e in self.all if e.kind == kind and (child is None or e.child == child)]

    async def wait(self, kind: str, child: str | None = None, n: int = 1) -> Event:
        async with asyncio.timeout(WAIT):
            while len(self.of(kind, child)) < n:
                self._more.clear()
                await self._more.wait()
        return self.of(kind, child)[n - 1]


class death:  # lower case: it reads as a function
    """Watch port from now on: awaiting this gives the reason it died."""

    def __init__(self, node: aemp.Node, port: str) -> None:
        self.fut: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        node.mon(port, lambda *reason: self.fut.done() or self.fut.set_result(reason))

    def __await__(self) -> Generator[Any, None, tuple[Any, ...]]:
        return asyncio.wait_for(self.fut, WAIT).__await__()


async def ping(node: aemp.Node, port: str) -> tuple[Any, ...]:
    return await node.cal(port, "ping", timeout=WAIT)


def ports(sup: Supervisor) -> dict[str, str | None]:
    return {c.id: c.port for c in sup.children()}


# ---------------------------------------------------------------- bad input


async def test_bad_specs_raise_clear_errors(node: aemp.Node) -> None:
    with pytest.raises(aemp.SpawnError, match="not valid"):
        Child("a", "no colon")
    with pytest.raises(InvalidSpec, match="restart must be one of"):
        Child("a", "supervised:worker", ("a",), restart="sometimes")
    with pytest.raises(InvalidSpec, match="non-empty str"):
        Child("", "supervised:worker")
    with pytest.raises(aemp.MessageError):
        Child("a", "supervised:worker", (object(),))
    with pytest.raises(InvalidSpec, match="strategy must be one of"):
        Supervisor([], strategy="one_for_some", node=node)
    with pytest.raises(InvalidSpec, match="'a' twice"):
        Supervisor([Child("a", "supervised:worker"), Child("a", "supervised:worker")], node=node)
    with pytest.raises(aemp.OutOfRange, match="period"):
        Supervisor([], period=0, node=node)
    with pytest.raises(aemp.InvalidArgument, match="max_restarts"):
        Supervisor([], max_restarts=2.5, node=node)  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidFamily, match="no family name"):
        Supervisor([], hosts="no such family!", node=node)
    with pytest.raises(InvalidSpec, match="node IDs"):
        Supervisor([], hosts=["a#b"], node=node)
    assert aemp.lowlevel.ports(node) == []  # nothing was started by the failures
    # a nested supervisor's spec is data from elsewhere: a bad one kills only that port
    for spec in ({"children": [["a"]]}, {"chidlren": []}, ["not a dict"], {"strategy": 1},
                 {"children": 5}):  # fmt: skip
        port = node.spawn(node.id, "aemp.supervisor:supervise", spec)
        reason = await death(node, port)
        assert reason[0] == "die" and reason[1].startswith("InvalidSpec: "), reason
    assert aemp.lowlevel.ports(node) == []


async def test_unknown_target_fails_alone(node: aemp.Node) -> None:
    events = Events()
    children = [
        Child("good", "supervised:worker", ("good",)),
        Child("missing", "supervised:no_such_function", ("x",)),
        Child("nomodule", "no_such_module_here:worker", ("x",)),
    ]
    sup = Supervisor(children, on_event=events, node=node)
    ev = await events.wait("failed", "missing")
    assert ev.reason == ("refused on every host",)
    refused = events.of("refused", "missing")[0]
    assert "AttributeError" in refused.reason[1] and refused.node == node.id
    await events.wait("failed", "nomodule")
    # nothing else harmed: the good child runs, nothing counted as a restart
    assert await ping(node, ports(sup)["good"] or "") == ("pong", "good", node.id)
    assert {c.id: c.state for c in sup.children()} == {
        "good": "running", "missing": "failed", "nomodule": "failed"
    }  # fmt: skip
    assert sup.reason is None and not events.of("restarted")
    sup.stop()
    assert await sup.wait_closed() == ()


# ---------------------------------------------------------------- on one node


async def test_one_for_one_restarts_a_crashed_child(node: aemp.Node) -> None:
    events = Events()
    sup = Supervisor(
        [Child(n, "supervised:worker", (n,)) for n in ("a", "b")], on_event=events, node=node
    )
    await sup.wait_started()
    before = ports(sup)
    node.snd(before["a"] or "", "crash")
    ev = await events.wait("restarted", "a")
    assert events.of("exited", "a")[0].reason == ("die", "RuntimeError: a was asked to crash")
    after = ports(sup)
    assert after["b"] == before["b"] and after["a"] == ev.port != before["a"]
    assert await ping(node, ev.port or "") == ("pong", "a", node.id)
    assert [c.restarts for c in sup.children()] == [1, 0]
    # a cal of the supervisor port lists the children as plain data
    (listed,) = await node.cal(sup.port, "which_children", timeout=WAIT)
    assert [(c["id"], c["state"], c["port"]) for c in listed] == [
        ("a", "running", after["a"]),
        ("b", "running", after["b"]),
    ]
    sup.stop()
    await sup.wait_closed()


@pytest.mark.parametrize(
    ("restart", "normal_restarts", "crash_restarts"),
    [("permanent", True, True), ("transient", False, True), ("temporary", False, False)],
)
async def test_restart_kinds(
    node: aemp.Node, restart: str, normal_restarts: bool, crash_restarts: bool
) -> None:
    for how, restarts in (("quit", normal_restarts), ("crash", crash_restarts)):
        events = Events()
        sup = Supervisor([Child("c", "supervised:worker", ("c",), restart)], on_event=events,
                         node=node)  # fmt: skip
        await sup.wait_started()
        node.snd(ports(sup)["c"] or "", how)
        await events.wait("exited", "c")
        probe = await node.cal(sup.port, "which_children", timeout=WAIT)  # behind the exit
        assert bool(events.of("restarted")) == restarts, (how, restart, events.all)
        if restart == "temporary":
            assert probe == ([],) and sup.children() == []
        sup.stop()
        await sup.wait_closed()


async def test_intensity_gives_up_and_children_die(node: aemp.Node) -> None:
    events = Events()
    sup = Supervisor(
        [Child(n, "supervised:worker", (n,)) for n in ("a", "b")],
        max_restarts=2,
        period=60,
        on_event=events,
        node=node,
    )
    await sup.wait_started()
    b = death(node, ports(sup)["b"] or "")
    for i in range(3):
        node.snd(ports(sup)["a"] or "", "crash")
        await events.wait("exited", "a", i + 1)
    reason = await sup.wait_closed()
    assert reason[0] == "max_restarts" and "more than 2 restarts within 60 s" in reason[1]
    assert events.of("gave_up")[0].reason == reason
    assert len(events.of("restarted")) == 2
    assert (await b)[0] == "max_restarts"  # children die with it
    assert aemp.lowlevel.ports(node) == []
    with pytest.raises(SupervisorExited, match="max_restarts"):
        await sup.wait_started() if ports(sup)["a"] else sup.start_child(Child("x", "a:b"))


async def test_nested_supervisors_die_with_their_parent(node: aemp.Node) -> None:
    events = Events()
    inner = supervisor_child("inner", [Child(n, "supervised:worker", (n,)) for n in "xy"])
    top = Supervisor([inner, Child("z", "supervised:worker", ("z",))], on_event=events, node=node)
    await top.wait_started()
    inner_port = ports(top)["inner"] or ""
    node.snd(inner_port, "no such tag")  # logged and ignored: a supervisor is no easy kill
    (kids,) = await node.cal(inner_port, "which_children", timeout=WAIT)
    assert [k["id"] for k in kids] == ["x", "y"]
    assert await ping(node, kids[0]["port"]) == ("pong", "x", node.id)
    # the inner supervisor crashes: the top one restarts it, its children went with it
    y = death(node, kids[1]["port"])
    node.kil(inner_port, "die", "inner broke")
    ev = await events.wait("restarted", "inner")
    assert await y == ("die", "inner broke")
    (kids2,) = await node.cal(ev.port or "", "which_children", timeout=WAIT)
    assert await ping(node, kids2[1]["port"]) == ("pong", "y", node.id)
    # the top one ends: the whole tree goes
    x = death(node, kids2[0]["port"])
    node.kil(top.port, "done")
    assert await x == ("done",)
    await top.wait_closed()
    assert aemp.lowlevel.ports(node) == []


async def test_events_to_a_port_and_a_failing_callback(node: aemp.Node) -> None:
    got: list[tuple[Any, ...]] = []
    inbox = node.port(lambda *msg: got.append(msg))
    sup = Supervisor([Child("a", "supervised:worker", ("a",))], on_event=inbox, node=node)
    await sup.wait_started()
    a = ports(sup)["a"]
    node.snd(a or "", "crash")
    await until(lambda: len(got) >= 3, WAIT, "three events")
    assert [m[:5] for m in got[:3]] == [
        ("supervisor", "started", sup.port, "a", a),
        ("supervisor", "exited", sup.port, "a", a),
        ("supervisor", "restarted", sup.port, "a", ports(sup)["a"]),
    ]
    assert got[1][6] == ["die", "RuntimeError: a was asked to crash"]
    sup.stop()
    await sup.wait_closed()

    def broken(ev: Event) -> None:
        if ev.kind == "started":
            raise ValueError("the hook is broken")

    sup = Supervisor([Child("b", "supervised:worker", ("b",))], on_event=broken, node=node)
    # a hook that raises kills the supervisor, as any callback kills its port
    assert await sup.wait_closed() == ("die", "ValueError: the hook is broken")
    await until(lambda: aemp.lowlevel.ports(node) == [inbox], WAIT, "its child gone with it")


# ---------------------------------------------------------------- over the network


class Host:
    """A host node process of tests/supervisor_host.py; stopped by its PID only."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info
        self.id: str = info["id"]
        self.lines: list[dict[str, Any]] = []
        self._more = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(json.loads(line))
            self._more.set()

    async def event(self, kind: str, child: str | None = None, n: int = 1) -> list[Any]:
        def found() -> list[list[Any]]:
            evs = [ln["event"] for ln in self.lines if "event" in ln]
            return [e for e in evs if e[0] == kind and (child is None or e[1] == child)]

        async with asyncio.timeout(WAIT):
            while len(found()) < n:
                self._more.clear()
                await self._more.wait()
        return found()[n - 1]

    def kill9(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        self.kill9()
        await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def net() -> AsyncIterator[tuple[aemp.Node, Callable[..., Awaitable[Host]]]]:
    """This process's node as the seed, and a way to start host processes."""
    addr = f"127.0.0.1:{free_port()}"
    hosts: list[Host] = []
    async with aemp.Node(nodeid="sup", binds=[addr], secret=SECRET, monitor_timeout=2) as me:

        async def start(nodeid: str, **spec: Any) -> Host:
            spec = {"nodeid": nodeid, "seed": addr, "secret": SECRET, **spec}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(HOST), json.dumps(spec),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
            h = Host(proc, json.loads(line))
            hosts.append(h)
            return h

        try:
            yield me, start
        finally:
            for h in hosts:
                await h.stop()


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
async def test_strategies_when_a_host_is_killed(net: Any, strategy: str) -> None:
    me, start = net
    h1, h2 = await start("h1"), await start("h2")
    events = Events()
    sup = Supervisor(strategy=strategy, hosts=["h1", "h2", "sup"], on_event=events, node=me)
    assert await sup.wait_for_hosts(3) == ["h1", "h2", "sup"]
    for n in ("a", "b", "c"):  # once every host is there, so that they spread one each
        sup.start_child(Child(n, "supervised:worker", (n,)))
    await sup.wait_started()
    before = ports(sup)
    assert {c.id: c.node for c in sup.children()} == {"a": "h1", "b": "h2", "c": "sup"}
    for name, port in before.items():
        assert (await ping(me, port or ""))[1] == name
    deaths = {n: death(me, p or "") for n, p in before.items()}
    h2.kill9()  # b's host
    await events.wait("restarted", "b")
    after = ports(sup)
    restarted = {n for n in before if after[n] != before[n]}
    assert restarted == {
        "one_for_one": {"b"}, "one_for_all": {"a", "b", "c"}, "rest_for_one": {"b", "c"}
    }[strategy]  # fmt: skip
    assert events.of("exited", "b")[0].reason[:2] == ("transport_error", "h2")
    for n in restarted - {"b"}:  # killed by the strategy, then started again
        assert events.of("exited", n)[0].reason == ("shutdown",)
        assert await deaths[n] == ("shutdown",)
    for c in sup.children():
        assert c.node in ("h1", "sup") and c.state == "running"
        assert (await ping(me, c.port or "")) == ("pong", c.id, c.node)
    assert sup.hosts() == ["h1", "sup"]
    sup.stop()
    await sup.wait_closed()
    del h1


async def test_intensity_with_a_host_killed(net: Any) -> None:
    me, start = net
    h1, h2 = await start("h1"), await start("h2")
    events = Events()
    sup = Supervisor(max_restarts=1, period=60, hosts=["h1", "h2"], on_event=events, node=me)
    await sup.wait_for_hosts(2)
    for n in ("a", "b", "c", "d"):
        sup.start_child(Child(n, "supervised:worker", (n,)))
    await sup.wait_started()
    assert sorted(str(c.node) for c in sup.children()) == ["h1", "h1", "h2", "h2"]
    h1.kill9()  # two children lost with it: one restart counted
    await events.wait("restarted", n=2)
    assert sup.reason is None
    assert {c.node for c in sup.children()} == {"h2"}
    victims = [p for p in ports(sup).values() if p]
    deaths = [death(me, p) for p in victims]
    me.snd(victims[0], "crash")  # a second restart within the period: too many
    reason = await sup.wait_closed()
    assert reason[0] == "max_restarts"
    for d in deaths[1:]:  # the children on the other process died with it
        assert (await d)[0] == "max_restarts"
    del h2


async def test_family_placement_loss_and_rebalance(net: Any) -> None:
    me, start = net
    events = Events()
    sup = Supervisor(
        [Child(f"w{i}", "supervised:worker", (f"w{i}",)) for i in range(4)],
        hosts="sup_hosts",
        on_event=events,
        node=me,
    )
    await events.wait("waiting", "w0")  # no host yet: the children wait, no sleep
    me.db_set("sup_hosts", "not a node; id")  # anyone may write the family: skipped
    h1 = await start("h1", family="sup_hosts")
    await sup.wait_started()  # all on h1, the only host
    assert {c.node for c in sup.children()} == {"h1"}
    old = {c.port: death(me, c.port or "") for c in sup.children()}
    h2 = await start("h2", family="sup_hosts")
    await events.wait("moved", n=2)  # a host came: two children move there
    assert sorted(str(c.node) for c in sup.children()) == ["h1", "h1", "h2", "h2"]
    for ev in events.of("moved"):
        assert ev.node == "h2" and ev.reason[:2] == ("rebalance", "h1")
        assert await old[ev.reason[2]] == ("rebalance", "h2")
        assert (await ping(me, ev.port or ""))[2] == "h2"

    h1.kill9()  # its children move to h2
    await events.wait("restarted", n=2)
    assert {c.node for c in sup.children()} == {"h2"} and sup.hosts() == ["h2"]
    h1 = await start("h1", family="sup_hosts")  # the same node ID, back
    await events.wait("moved", n=4)
    assert sorted(str(c.node) for c in sup.children()) == ["h1", "h1", "h2", "h2"]
    for c in sup.children():
        assert await ping(me, c.port or "") == ("pong", c.id, c.node)
    assert sup.reason is None
    sup.stop()
    await sup.wait_closed()
    del h2


async def test_refused_on_one_host_runs_on_another(net: Any) -> None:
    me, start = net
    bare = await start("bare", load=False)  # has not loaded supervised: refuses it
    events = Events()
    sup = Supervisor(hosts=["bare", "sup"], rebalance=False, on_event=events, node=me)
    await sup.wait_for_hosts(2)
    sup.start_child(Child("a", "supervised:worker", ("a",)))  # to bare, the least loaded
    sup.start_child(Child("u", "supervised:unmarked", ("u",)))  # to sup: it spawns anything
    ev = await events.wait("refused", "a")
    assert ev.node == "bare" and "SpawnRefused: module 'supervised' is not loaded" in ev.reason[1]
    await sup.wait_started()
    assert {c.id: c.node for c in sup.children()} == {"a": "sup", "u": "sup"}
    assert await ping(me, ports(sup)["a"] or "") == ("pong", "a", "sup")
    assert sup.reason is None and not events.of("restarted")
    sup.stop()
    await sup.wait_closed()
    del bare


async def test_no_orphans_when_the_supervisor_process_is_killed(net: Any) -> None:
    me, start = net
    h1, h2 = await start("h1"), await start("h2")
    worker = "supervised:worker"
    spec = {
        "children": [["a", worker, ["a", "sup_ran"]], ["b", worker, ["b", "sup_ran"]]],
        "hosts": ["h1", "h2"],
    }
    running = asyncio.Event()
    with me.db_mon("sup_ran", lambda fam, *_: len(fam) == 2 and running.set()):
        boss = await start("boss", supervise=spec)
        children = [await boss.event("started", n) for n in ("a", "b")]
        await asyncio.wait_for(running.wait(), WAIT)  # spawn returned before they ran
    assert {e[3] for e in children} == {"h1", "h2"}
    for e in children:
        assert await ping(me, e[2]) == ("pong", e[1], e[3])
    deaths = [death(me, e[2]) for e in children]
    boss.kill9()
    for d in deaths:  # the hosts saw the supervisor's node go, and killed its children
        reason = await d
        assert reason[:2] == ("transport_error", "boss"), reason
    del h1, h2


async def test_no_orphans_when_the_supervisor_stops(net: Any) -> None:
    me, start = net
    h1 = await start("h1")
    sup = Supervisor([Child("a", "supervised:worker", ("a",))], hosts=["h1"], node=me)
    await sup.wait_for_hosts()
    await sup.wait_started()
    a = ports(sup)["a"] or ""
    assert await ping(me, a) == ("pong", "a", "h1")
    gone = death(me, a)
    async with sup:
        pass  # leaving the block stops it
    assert await gone == ("shutdown",)
    with pytest.raises(SupervisorExited):
        sup.start_child(Child("b", "supervised:worker", ("b",)))
    del h1


async def test_waits_end_when_the_node_closes() -> None:
    node = aemp.Node(nodeid="closing/%u")
    sup = Supervisor([Child("a", "supervised:worker", ("a",))], hosts="sup_nobody", node=node)
    waiting = asyncio.ensure_future(sup.wait_started())  # no host ever comes
    closed = asyncio.ensure_future(sup.wait_closed())
    await asyncio.sleep(0)
    await node.close()
    with pytest.raises(SupervisorExited, match="node_closed"):
        await asyncio.wait_for(waiting, WAIT)
    assert await asyncio.wait_for(closed, WAIT) == ("node_closed", node.id)


async def test_a_tree_across_processes_leaves_no_orphans(net: Any) -> None:
    """boss runs the top supervisor; its child, a supervisor, runs on h1 and
    supervises workers on h2. Killing boss takes the inner supervisor with it,
    and that takes the workers: two links, two processes away."""
    me, start = net
    h1, h2 = await start("h1"), await start("h2")
    inner = supervisor_child(
        "inner",
        [Child(n, "supervised:worker", (n, "sup_tree")) for n in ("x", "y")],
        hosts=["h2"],
    )
    spec = {"children": [inner.as_data()], "hosts": ["h1"]}
    workers: dict[str, str] = {}
    ready = asyncio.Event()

    def watch(fam: Any, *_: Any) -> None:
        workers.update({v: k for k, v in fam.items()})
        if len(fam) == 2:
            ready.set()

    with me.db_mon("sup_tree", watch):
        boss = await start("boss", supervise=spec)
        ev = await boss.event("started", "inner")
        assert ev[3] == "h1"
        await asyncio.wait_for(ready.wait(), WAIT)
    (kids,) = await me.cal(ev[2], "which_children", timeout=WAIT)
    assert {k["id"]: (k["port"], k["node"]) for k in kids} == {
        n: (workers[n], "h2") for n in ("x", "y")
    }
    deaths = {n: death(me, p) for n, p in workers.items()}
    inner_death = death(me, ev[2])
    for host in ("h1", "h2"):  # the monitors are in place there before the kill
        assert await me.cal(host, "time", timeout=WAIT)
    boss.kill9()
    assert (await inner_death)[:2] == ("transport_error", "boss")
    for d in deaths.values():  # killed by h2, which saw the inner supervisor die
        assert (await d)[:2] == ("transport_error", "boss")
    del h1, h2


async def test_a_host_whose_link_broke_is_taken_back(stack: AsyncExitStack) -> None:
    """The supervisor's link to a host breaks, the host lives on (its master is
    another node, so nothing dials it again): its child moves away, and the
    host, still listed after twice monitor_timeout, is used again."""
    addr = f"127.0.0.1:{free_port()}"

    async def node(nodeid: str, **keys: Any) -> aemp.Node:
        n = aemp.Node(nodeid=nodeid, secret=SECRET, monitor_timeout=0.5, **keys)
        return await stack.enter_async_context(n)

    await node("g", binds=[addr])
    me = await node("me", binds=["127.0.0.1:0"], seeds=[addr])
    for h in ("h1", "h2"):
        host = await node(h, binds=["127.0.0.1:0"], seeds=[addr])
        host.db_set("sup_blip", h)
    events = Events()
    sup = Supervisor(hosts="sup_blip", on_event=events, node=me)
    await sup.wait_for_hosts(2)
    for n in ("a", "b"):
        sup.start_child(Child(n, "supervised:worker", (n,)))
    await sup.wait_started()
    assert {c.id: c.node for c in sup.children()} == {"a": "h1", "b": "h2"}
    assert await ping(me, ports(sup)["a"] or "") == ("pong", "a", "h1")
    testing.cut_link(me, "h1")
    ev = await events.wait("restarted", "a")
    assert ev.node == "h2" and sup.hosts() == ["h2"]
    ev = await events.wait("moved")  # h1 is still listed: back after the grace
    assert ev.node == "h1" and sup.hosts() == ["h1", "h2"]
    assert (await ping(me, ev.port or ""))[2] == "h1"
    sup.stop()
    await sup.wait_closed()


async def test_no_move_to_this_node_when_the_target_is_not_here(net: Any) -> None:
    """Rebalancing onto the supervisor's own node checks the target first: a
    function that only the hosts have is refused there, and nothing moves."""
    me, start = net
    events = Events()
    sup = Supervisor(hosts="sup_here", on_event=events, node=me)
    await start("h1", family="sup_here")
    await sup.wait_for_hosts(1)
    for n in ("a", "b"):
        sup.start_child(Child(n, "__main__:worker", (n,)))
    await sup.wait_started()
    before = ports(sup)
    me.db_set("sup_here", me.id)  # this node becomes a host too
    ev = await events.wait("refused")
    assert ev.node == "sup" and "cannot be found here" in ev.reason[1]
    assert ports(sup) == before and not events.of("moved") and not events.of("restarted")
    for c in sup.children():
        assert await ping(me, c.port or "") == ("pong", c.id, "h1")
