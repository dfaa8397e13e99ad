"""A pool call's own machinery, tried as a hostile worker and a careless
caller would: each attempt has a reply port of its own, the pool watches
each worker with one monitor and keeps its calls' deadlines itself
(aemp/pool/_pool.py). Nothing of a call may outlive it: no reply port, no
monitor, no deadline; a late or doubled answer harms nobody.
"""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import Recorder, until
from test_pool import bus, start

import aemp
from aemp import lowlevel
from aemp.pool import BUSY_TYPE, AllBusy, BadReply, Pool, PoolClosed, family_of, offer
from aemp.service import ERROR_TAG


def watchers(node: aemp.Node, port: str) -> list[str]:
    """The nodes that watch `port`, a port of `node`."""
    info = lowlevel.port_info(node, port)
    assert info is not None, f"{port} is not alive"
    return list(info["watchers"])


def monitors(caller: aemp.Node, port: str) -> int:
    """The caller's monitors on `port`, a port of another node (the node
    keeps its subscription a while after the last one is cancelled)."""
    nodeid, _, name = port.partition("#")
    info = lowlevel.node_info(caller, nodeid)
    return 0 if info is None else int(info["monitors"].get(name, 0))


async def gated_worker(node: aemp.Node, name: str) -> tuple[Any, asyncio.Event]:
    gate = asyncio.Event()

    async def job(x: Any) -> Any:
        await gate.wait()
        return x

    return offer({name: job}, limit=100, node=node), gate


async def gated_pool(
    stack: AsyncExitStack, name: str, retry_after: float = 1.0
) -> tuple[aemp.Node, aemp.Node, Any, asyncio.Event, Pool, set[str]]:
    """A caller, a worker node with a worker whose jobs wait for the gate,
    the caller's pool of it, and the caller's ports before any call."""
    caller, (n0,) = await bus(stack, 1)
    w, gate = await gated_worker(n0, name)
    pool = Pool(name, node=caller, retry_after=retry_after)
    await pool.wait_for_workers(1, timeout=5)
    return caller, n0, w, gate, pool, set(lowlevel.ports(caller))


async def test_many_calls_leave_no_reply_port_and_one_monitor_per_worker(
    stack: AsyncExitStack,
) -> None:
    caller, (n0, n1) = await bus(stack)
    workers = [offer({"echo": lambda x: x}, node=n) for n in (n0, n1)]
    pool = Pool("echo", node=caller)
    await pool.wait_for_workers(2, timeout=5)
    before = set(lowlevel.ports(caller))
    got = await pool.map(range(3000), concurrency=200, timeout=10.0)
    assert got == list(range(3000))
    assert set(lowlevel.ports(caller)) == before  # every reply port dropped
    assert pool.outstanding() == {w.port: 0 for w in workers}
    for w in workers:
        assert monitors(caller, w.port) == 1  # one each, not one per call
    pool.close()  # nothing out: it stops watching at once
    assert [monitors(caller, w.port) for w in workers] == [0, 0]


async def test_a_cancelled_call_leaves_nothing_and_its_late_answer_is_dropped(
    stack: AsyncExitStack,
) -> None:
    caller, _n0, w, gate, pool, before = await gated_pool(stack, "slow")
    call = pool.call(1, timeout=10)
    failed = Recorder()
    with_cb = pool.call(2, timeout=10, cb=failed, err=failed)
    await until(lambda: w.in_flight == 2, what="both jobs running")
    assert pool.outstanding() == {w.port: 2}
    call.cancel()
    with_cb.cancel()
    assert pool.outstanding() == {w.port: 0}
    assert set(lowlevel.ports(caller)) == before
    with pytest.raises(asyncio.CancelledError):
        await call
    gate.set()  # the worker answers both: to ports that are gone
    await until(lambda: w.in_flight == 0, what="jobs done")
    assert await pool.call(3, timeout=5) == 3
    assert failed.calls == []  # a cancelled call calls neither callback
    assert set(lowlevel.ports(caller)) == before


async def test_the_timeout_bounds_the_whole_call_and_the_late_answer_is_dropped(
    stack: AsyncExitStack,
) -> None:
    caller, _n0, w, gate, pool, before = await gated_pool(stack, "stuck", retry_after=5.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(aemp.CallTimeout) as e:
        await pool.call(1, timeout=0.3)
    took = loop.time() - t0
    assert e.value.port == w.port and e.value.timeout == 0.3  # the call's own timeout
    assert 0.3 <= took < 1.5  # never early; the bucket adds at most a millisecond
    assert set(lowlevel.ports(caller)) == before and pool.outstanding() == {w.port: 0}
    gate.set()  # its answer comes after all: dropped
    await until(lambda: w.in_flight == 0, what="job done")
    with pytest.raises(aemp.pool.AllBusy):  # benched for 5 s: the call waits, then says so
        await pool.call(2, timeout=0.2)


async def test_the_caller_node_closing_fails_the_calls_out_with_node_closed(
    stack: AsyncExitStack,
) -> None:
    _, (n0,) = await bus(stack, 1)
    caller = await start(stack, nodeid="short", seeds=[n0.listeners[0]])
    w, gate = await gated_worker(n0, "never")
    pool = Pool("never", node=caller)
    await pool.wait_for_workers(1, timeout=5)
    awaited = pool.call(1, timeout=30)
    errors = Recorder()
    pool.call(2, timeout=30, cb=print, err=errors)
    waiting = Pool("nobody", node=caller).call(3, timeout=30)
    await until(lambda: w.in_flight == 2, what="both jobs running")
    await asyncio.wait_for(caller.close(), 10)
    with pytest.raises(aemp.NodeClosed):
        await asyncio.wait_for(awaited, 5)
    await errors.wait()
    assert isinstance(errors.calls[0][0], aemp.NodeClosed)
    with pytest.raises(PoolClosed):
        await waiting
    await until(lambda: not watchers(n0, w.port), what="the lost node's monitor gone")
    gate.set()


async def test_a_closed_pool_lets_its_calls_end_then_stops_watching(
    stack: AsyncExitStack,
) -> None:
    caller, _n0, w, gate, pool, _ = await gated_pool(stack, "finish")
    out = pool.call("x", timeout=10)
    await until(lambda: w.in_flight == 1, what="job running")
    pool.close()
    assert monitors(caller, w.port) == 1  # still watched: a call is out
    gate.set()
    assert await out == "x"  # it ends as it would have
    assert monitors(caller, w.port) == 0


async def test_a_worker_that_leaves_the_database_alive_still_answers_its_calls(
    stack: AsyncExitStack,
) -> None:
    caller, (n0, n1) = await bus(stack)
    w, gate = await gated_worker(n0, "move")
    pool = Pool("move", node=caller)
    await pool.wait_for_workers(1, timeout=5)
    out = pool.call("first", timeout=10)
    await until(lambda: w.in_flight == 1, what="job running")
    n0.db_del(family_of("move"), w.port)  # gone from the database, the port lives
    await until(lambda: not pool.workers, what="worker dropped")
    other = offer({"move": lambda x: ("other", x)}, node=n1)
    await pool.wait_for_workers(1, timeout=5)
    assert await pool.call("second", timeout=5) == ["other", "second"]
    assert monitors(caller, w.port) == 1  # kept while its call is out
    gate.set()
    assert await out == "first"
    assert monitors(caller, w.port) == 0
    assert monitors(caller, other.port) == 1


async def test_a_worker_killed_with_calls_out_fails_them_all_through_one_monitor(
    stack: AsyncExitStack,
) -> None:
    caller, n0, w, _gate, pool, before = await gated_pool(stack, "doomed", retry_after=0.2)
    calls = [pool.call(i, timeout=10) for i in range(50)]
    safe = pool.call("again", timeout=10, idempotent=True)
    await until(lambda: w.in_flight == 51, what="jobs running")
    n0.kil(w.port, "crash", "on purpose")
    for call in calls:
        with pytest.raises(aemp.PortDead) as e:
            await call
        assert e.value.port == w.port and e.value.reason == ("crash", "on purpose")
    assert set(lowlevel.ports(caller)) - before == set()  # only `safe` may wait: no port
    successor = offer({"doomed": lambda x: ("successor", x)}, node=n0)
    assert await safe == ["successor", "again"]  # moved once a worker came
    assert pool.moved == 1
    assert pool.outstanding() == {successor.port: 0}


async def test_workers_on_nodes_that_cannot_be_reached_get_no_call(
    stack: AsyncExitStack,
) -> None:
    """Entries in the family that name ports of nodes nobody can reach (a
    careless or hostile node wrote them): the pool tries to connect, again
    and again, but sends them no call, so no call fails for them, not even
    one that may not be repeated; with only those, a call ends in AllBusy."""
    caller, (n0,) = await bus(stack, 1)
    ghosts = ["ghost1#p", "ghost2#q"]
    for g in ghosts:
        n0.db_set(family_of("sq"), g, {"limit": 5})
    only_ghosts = Pool("sq", node=caller, retry_after=0.05)
    await only_ghosts.wait_for_workers(2, timeout=5)
    with pytest.raises(AllBusy, match="unreachable"):
        await only_ghosts.call(3, timeout=0.5)
    real = offer({"sq": lambda x: x * x}, node=n0)
    pool = Pool("sq", node=caller, retry_after=0.05)
    await pool.wait_for_workers(3, timeout=5)
    end = caller.loop.time() + 1.0  # ghosts benched and tried again many times meanwhile
    n = 0
    while caller.loop.time() < end:
        assert await asyncio.gather(*(pool.call(i, timeout=5) for i in range(50))) == [
            i * i for i in range(50)
        ]
        n += 50
    assert n >= 500 and pool.outstanding() == {real.port: 0, **dict.fromkeys(ghosts, 0)}
    assert not caller.node_is_up("ghost1")
    only_ghosts.close()
    pool.close()


async def test_a_listed_port_that_is_dead_costs_one_call_at_most(
    stack: AsyncExitStack,
) -> None:
    """An entry for a port that does not exist on a live node (db_set by
    hand, or left by a port that died): the first call sent there fails
    with PortDead, since it may not be repeated; then the pool forgets the
    port for as long as the database lists it, and no other call fails."""
    caller, (n0,) = await bus(stack, 1)
    ghost = f"{n0.id}#nope"
    n0.db_set(family_of("sq"), ghost, {"limit": 5})
    real = offer({"sq": lambda x: x * x}, node=n0)
    pool = Pool("sq", node=caller, retry_after=0.05)
    await pool.wait_for_workers(2, timeout=5)
    first = await asyncio.gather(
        *(pool.call(i, timeout=5) for i in range(20)), return_exceptions=True
    )
    failed = [r for r in first if isinstance(r, Exception)]
    assert all(isinstance(r, aemp.PortDead) and r.port == ghost for r in failed), failed
    await until(lambda: pool.workers == [real.port], what="the dead port forgotten")
    end = caller.loop.time() + 0.5  # many retry_after periods
    while caller.loop.time() < end:
        assert await asyncio.gather(*(pool.call(i, timeout=5) for i in range(50))) == [
            i * i for i in range(50)
        ]
    assert pool.workers == [real.port]
    # the record of the dead port lasts as long as the entry: once the
    # database drops it nothing is kept, and the port listed again is taken
    # again (seen from a db_mon of the same family, which the database calls
    # after the pool's own, before the port is found dead again)
    seen: list[tuple[str, bool]] = []

    def after_the_pool(fam: Any, added: list[str], changed: list[str], deleted: list[str]) -> None:
        for what, keys in (("added", added), ("deleted", deleted)):
            if ghost in keys:
                seen.append((what, ghost in pool.workers))

    caller.db_mon(family_of("sq"), after_the_pool)
    n0.db_del(family_of("sq"), ghost)
    await until(lambda: ("deleted", False) in seen, what="the entry deleted")
    n0.db_set(family_of("sq"), ghost, {"limit": 5})
    await until(lambda: seen[-1][0] == "added", what="the entry listed again")
    assert seen[-1] == ("added", True)
    pool.close()


async def test_a_hostile_worker_harms_only_its_own_calls(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caller, (n0, n1) = await bus(stack)
    modes: list[str] = []

    def answer(_function: str, x: Any, reply: str) -> None:
        mode = modes.pop(0)
        if mode == "kill":  # kills the caller's reply port instead of answering
            n0.kil(reply, "gotcha")
        elif mode == "twice":
            n0.snd(reply, x)
            n0.snd(reply, "again")
        elif mode == "tag":  # its answer is the error tag alone
            n0.snd(reply, ERROR_TAG)
        elif mode == "keep":  # answers later, after the call timed out
            later.append(reply)

    later: list[str] = []
    liar = n0.port(answer)
    n0.db_reg(family_of("hostile"), liar, {"limit": 10})
    pool = Pool("hostile", node=caller, retry_after=0.05)
    await pool.wait_for_workers(1, timeout=5)
    before = set(lowlevel.ports(caller))
    modes.append("kill")
    with pytest.raises(aemp.CallTimeout):
        await pool.call(1, timeout=0.3)
    await asyncio.sleep(0.1)
    modes.append("twice")
    assert await pool.call(2, timeout=5) == 2  # the second answer is dropped
    await asyncio.sleep(0.1)
    modes.append("tag")
    with pytest.raises(aemp.RemoteError) as e:
        await pool.call(3, timeout=5)
    assert e.value.type == "aemp.MalformedErrorReply" and e.value.port == liar
    await asyncio.sleep(0.1)
    modes.append("keep")
    with pytest.raises(aemp.CallTimeout):
        await pool.call(4, timeout=0.2)
    n0.snd(later[0], "too late")
    await asyncio.sleep(0.1)
    assert set(lowlevel.ports(caller)) == before
    assert pool.outstanding() == {liar: 0}
    # the caller is whole: a real worker beside the liar answers
    real = offer({"hostile": lambda x: x * 2}, node=n1)
    await pool.wait_for_workers(2, timeout=5)
    modes.extend(["twice"] * 10)
    results = [await pool.call(i, timeout=5) for i in range(1, 11)]
    assert all(r in (i, i * 2) for i, r in enumerate(results, 1))  # never "again"
    assert pool.outstanding() == {liar: 0, real.port: 0}
    assert "Traceback" not in caplog.text


@pytest.mark.allow_error_log
async def test_callbacks_run_as_the_caller_and_their_failures_are_not_lost(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caller, (n0,) = await bus(stack, 1)
    offer({"cb": lambda x: x}, node=n0)
    pool = Pool("cb", node=caller)
    await pool.wait_for_workers(1, timeout=5)

    def bad(value: Any) -> None:
        raise ValueError(f"bad callback got {value}")

    # outside any port: logged, naming the callback
    with caplog.at_level(logging.ERROR):
        pool.call(1, timeout=5, cb=bad)
        await until(lambda: "bad callback got 1" in caplog.text, what="logged")
    assert "bad" in caplog.text and "raised outside any port" in caplog.text
    # in a port: the callback runs as it, and its failure kills it
    seen = Recorder()
    owner_died = Recorder()

    def handler(*_: Any) -> None:
        pool.call(2, timeout=5, cb=lambda v: seen(v, aemp.SELF.get()))
        pool.call(3, timeout=5, cb=bad)

    owner = caller.port(handler)
    caller.mon(owner, owner_died)
    caller.snd(owner, "go")
    await seen.wait()
    assert seen.calls == [(2, owner)]
    await owner_died.wait()
    assert owner_died.calls[0][0] == "die"
    # a callback's awaitable result runs as a task
    ran = Recorder()

    async def later(value: Any) -> None:
        await asyncio.sleep(0)
        ran(value)

    pool.call(4, timeout=5, cb=later)
    await ran.wait()
    assert ran.calls == [(4,)]


async def test_a_call_that_cannot_be_sent_raises_at_once_and_leaves_nothing(
    stack: AsyncExitStack,
) -> None:
    caller, (n0,) = await bus(stack, 1)
    w = offer({"send": lambda x: x}, node=n0)
    pool = Pool("send", node=caller)
    await pool.wait_for_workers(1, timeout=5)
    before = set(lowlevel.ports(caller))
    for bad in (object(), {1: {2: object()}}, b"x" * (64 * 1024 * 1024)):
        with pytest.raises(aemp.MessageError):
            pool.call(bad, timeout=5)
    assert set(lowlevel.ports(caller)) == before and pool.outstanding() == {w.port: 0}
    assert await pool.call("fine", timeout=5) == "fine"  # the worker was never benched


@pytest.mark.parametrize("seed", [1, 2])
async def test_chaos_every_call_ends_once_and_nothing_is_left(
    stack: AsyncExitStack, seed: int
) -> None:
    """Workers that answer late, busy, with errors, garbage, twice or never,
    and die; calls with short timeouts, some cancelled, some in the callback
    form. Every call ends exactly once, with a result or an error of the
    kinds the pool promises, and nothing of them is left."""
    rnd = random.Random(seed)
    caller, (n0, n1) = await bus(stack)
    loop = asyncio.get_running_loop()
    family = family_of("chaos")
    live: list[str] = []

    def worker(node: aemp.Node) -> str:
        def job(_function: str, x: int, reply: str) -> None:
            r = rnd.random()
            if r < 0.45:
                loop.call_later(rnd.random() * 0.02, node.snd, reply, x)
            elif r < 0.55:
                node.snd(reply, ERROR_TAG, BUSY_TYPE, "busy", "")
            elif r < 0.65:
                node.snd(reply, ERROR_TAG, "ValueError", f"no {x}", "")
            elif r < 0.70:
                node.snd(reply, x, "and more")
            elif r < 0.75:
                node.snd(reply, x)
                node.snd(reply, x)
            elif r < 0.80:
                loop.call_later(0.3, node.snd, reply, x)  # after most timeouts
            elif r < 0.83:  # dies with calls out; another takes its place
                me = aemp.SELF.get()
                assert me is not None
                live.remove(me)
                node.kil(me, "chaos")
                worker(node)
            # else: never answers

        port = node.port(job)
        node.db_reg(family, port, {"limit": 4})
        live.append(port)
        return port

    for node in (n0, n1, n0):
        worker(node)
    pool = Pool("chaos", node=caller, retry_after=0.02)
    await pool.wait_for_workers(3, timeout=5)
    before = set(lowlevel.ports(caller))
    ended: dict[int, list[Any]] = {}
    promised = (aemp.RemoteError, aemp.CallTimeout, aemp.PortDead, AllBusy, BadReply)

    def record(i: int, outcome: Any) -> None:
        ended.setdefault(i, []).append(outcome)

    async def one(i: int) -> None:
        await asyncio.sleep(rnd.random() * 0.3)
        timeout = 0.05 + rnd.random() * 0.2
        idempotent = rnd.random() < 0.5
        if rnd.random() < 0.3:  # the callback form
            pool.call(
                i,
                timeout=timeout,
                idempotent=idempotent,
                cb=lambda v: record(i, v),
                err=lambda e: record(i, e),
            )
            return
        call = pool.call(i, timeout=timeout, idempotent=idempotent)
        if rnd.random() < 0.1:
            await asyncio.sleep(rnd.random() * 0.05)
            call.cancel()
        try:
            record(i, await call)
        except (asyncio.CancelledError, *promised) as e:
            record(i, e)

    await asyncio.gather(*(one(i) for i in range(400)))
    await until(lambda: len(ended) == 400, what="every call ended")
    await asyncio.sleep(0.4)  # the late answers come, and are dropped
    for i, outcomes in ended.items():
        assert len(outcomes) == 1, (i, outcomes)  # once
        (o,) = outcomes
        assert o == i or isinstance(o, (asyncio.CancelledError, *promised)), (i, o)
    kinds = {type(o).__name__ for (o,) in ended.values()}
    assert {"int", "RemoteError", "CallTimeout", "BadReply", "PortDead"} <= kinds, kinds
    assert pool.moved > 0 and pool.busy_answers > 0  # deaths and busy answers moved calls
    assert set(lowlevel.ports(caller)) == before
    assert all(n == 0 for n in pool.outstanding().values())
    assert all(monitors(caller, port) <= 1 for port in live)
    pool.close()
    assert [monitors(caller, port) for port in live] == [0] * len(live)
