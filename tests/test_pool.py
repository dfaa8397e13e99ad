"""Worker pools over TCP: nodes in one process, a seed holding the database.

Workers offer functions (aemp.pool.offer), pools follow them through
db_mon and spread calls; busy answers, errors, deaths, slow and garbage
workers, fan-out and bad input. Worker processes killed with SIGKILL are
in tests/test_pool_processes.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import free_port, until

import aemp
from aemp import lowlevel
from aemp.pool import (
    BUSY_TYPE,
    AllBusy,
    BadReply,
    NoWorkers,
    Pool,
    PoolClosed,
    blocking_job,
    family_of,
    offer,
)

SECRET = "pool-secret"


async def start(stack: AsyncExitStack, **keys: Any) -> aemp.Node:
    node = aemp.Node(secret=SECRET, monitor_timeout=2.0, **keys)
    stack.push_async_callback(node.close)
    return await node.start()


async def bus(stack: AsyncExitStack, workers: int = 2) -> tuple[aemp.Node, list[aemp.Node]]:
    """A seed (also the caller) and worker nodes attached to it."""
    addr = f"127.0.0.1:{free_port()}"
    seed = await start(stack, nodeid="caller", binds=[addr])
    nodes = [
        await start(stack, nodeid=f"w{i}", binds=["127.0.0.1:0"], seeds=[addr])
        for i in range(workers)
    ]
    await until(lambda: all(seed.node_is_up(n.id) for n in nodes), what="workers attached")
    return seed, nodes


async def test_calls_spread_over_workers_of_several_functions(stack: AsyncExitStack) -> None:
    caller, (n0, n1) = await bus(stack)
    w0 = offer({"square": lambda x: x * x, "neg": lambda x: -x}, node=n0)
    w1 = offer({"square": lambda x: x * x}, node=n1)
    squares = Pool("square", node=caller)
    neg = Pool("neg", choice="two", node=caller)
    assert sorted(await squares.wait_for_workers(2, timeout=5)) == sorted([w0.port, w1.port])
    assert await neg.wait_for_workers(1, timeout=5) == [w0.port]
    calls = [squares.call(i) for i in range(100)]
    assert set(squares.outstanding().values()) == {50}  # the fewest outstanding: even
    assert await asyncio.gather(*calls) == [i * i for i in range(100)]
    assert await neg.call(3) == -3
    assert squares.outstanding() == {w0.port: 0, w1.port: 0}
    assert family_of("square") == "fn:square"
    db = await caller.db_family("fn:square", timeout=5)
    assert db == {w0.port: {"limit": 1}, w1.port: {"limit": 1}}


async def test_an_application_error_is_raised_once_and_never_retried(stack: AsyncExitStack) -> None:
    caller, (n0, n1) = await bus(stack)
    ran = []

    def fail(x: int) -> None:
        ran.append(x)
        raise KeyError(x)

    for n in (n0, n1):
        offer({"fail": fail}, node=n)
    pool = Pool("fail", node=caller)
    await pool.wait_for_workers(2, timeout=5)
    with pytest.raises(aemp.RemoteError) as e:
        await pool.call(7, idempotent=True)
    assert e.value.type == "KeyError" and e.value.message == "7"
    assert ran == [7]
    with pytest.raises(aemp.RemoteError):  # the workers live on
        await pool.call(8)
    assert ran == [7, 8]
    # a result that cannot cross the wire is an error reply too, not a dead worker
    w = offer({"odd": lambda kind: {"set": {1}, "ok": 1}[kind]}, node=n0)
    odd = Pool("odd", node=caller)
    await odd.wait_for_workers(1, timeout=5)
    with pytest.raises(aemp.RemoteError) as e:
        await odd.call("set")
    assert e.value.type.endswith("MessageError")
    assert await odd.call("ok") == 1
    assert w.in_flight == 0 and lowlevel.port_alive(n0, w.port)


async def test_a_busy_worker_answers_at_once_and_the_call_moves_on(stack: AsyncExitStack) -> None:
    caller, (n0, n1) = await bus(stack)
    gate = asyncio.Event()

    async def job(x: int) -> str:
        await gate.wait()
        return f"{x} done"

    w0 = offer({"job": job}, limit=1, node=n0)
    pool = Pool("job", node=caller)
    await pool.wait_for_workers(1, timeout=5)
    first = pool.call(1)
    await until(lambda: w0.in_flight == 1, what="the first job running")
    # the worker is at its limit: a plain cal gets the busy answer at once
    with pytest.raises(aemp.RemoteError) as e:
        await caller.cal(w0.port, "job", 2, timeout=5)
    assert e.value.type == BUSY_TYPE and "limit 1" in e.value.message
    # a pool call waits while the only worker is busy, and ends with AllBusy
    with pytest.raises(AllBusy, match="stayed busy"):
        await pool.call(3, timeout=0.3)
    # a second worker: the next call goes there (possibly after one busy answer)
    w1 = offer({"job": job}, limit=1, node=n1)
    await pool.wait_for_workers(2, timeout=5)
    second = pool.call(4)
    await until(lambda: w1.in_flight == 1, what="the second job on the other worker")
    gate.set()
    assert await first == "1 done" and await second == "4 done"
    assert w0.busy_answers >= 2 and w0.in_flight == 0


async def test_a_call_waits_for_a_worker_and_an_unknown_function_says_so(
    stack: AsyncExitStack,
) -> None:
    caller, (n0,) = await bus(stack, 1)
    pool = Pool("late", node=caller)
    waiting = pool.call(2, timeout=10)
    await asyncio.sleep(0.1)
    offer({"late": lambda x: x + 1}, node=n0)
    assert await waiting == 3
    nobody = Pool("no_such_function", node=caller)
    with pytest.raises(NoWorkers, match="no worker offers 'no_such_function'") as e:
        await nobody.call(1, timeout=0.2)
    assert isinstance(e.value, aemp.CallTimeout) and "fn:no_such_function" in str(e.value)
    with pytest.raises(NoWorkers, match="only 1 of 3 workers offer 'late'"):
        await pool.wait_for_workers(3, timeout=0.2)


async def test_a_slow_worker_is_benched_after_a_timeout_and_taken_back(
    stack: AsyncExitStack,
) -> None:
    caller, (n0,) = await bus(stack, 1)
    delays = [1.0]

    async def work(x: int) -> int:
        await asyncio.sleep(delays.pop() if delays else 0)
        return x

    w = offer({"work": work}, limit=4, node=n0)
    pool = Pool("work", retry_after=0.3, node=caller)
    await pool.wait_for_workers(1, timeout=5)
    with pytest.raises(aemp.CallTimeout) as e:
        await pool.call(1, timeout=0.2)
    assert e.value.port == w.port
    # benched: the next call waits for it instead of going out at once
    t0 = asyncio.get_running_loop().time()
    assert await pool.call(2, timeout=5) == 2
    assert asyncio.get_running_loop().time() - t0 >= 0.2
    assert await pool.call(3, timeout=5) == 3  # forgiven
    # three calls that time out together are one failure: benched for
    # retry_after, not doubled per call (0.3 * 2**2 = 1.2 s); the fourth
    # of the worker's four slots stays free
    delays.extend([1.0] * 3)
    burst = [pool.call(x, timeout=0.2) for x in range(3)]
    for call in burst:
        with pytest.raises(aemp.CallTimeout):
            await call
    t0 = asyncio.get_running_loop().time()
    assert await pool.call(4, timeout=5) == 4
    assert 0.05 <= asyncio.get_running_loop().time() - t0 < 1.0


async def test_a_worker_that_leaves_mid_call(stack: AsyncExitStack) -> None:
    caller, (n0, n1) = await bus(stack)
    gate = asyncio.Event()

    async def job(x: int) -> tuple[str, int]:
        await gate.wait()
        return aemp.NODE(), x

    w0 = offer({"job": job}, limit=10, node=n0)
    pool = Pool("job", node=caller)
    await pool.wait_for_workers(1, timeout=5)
    safe = pool.call(1, idempotent=True, timeout=10)
    unsafe = pool.call(2, timeout=10)
    await until(lambda: w0.in_flight == 2, what="both jobs running")
    offer({"job": job}, limit=10, node=n1)
    await pool.wait_for_workers(2, timeout=5)
    w0.close()  # the worker leaves while its jobs run
    with pytest.raises(aemp.PortDead):
        await unsafe  # it may have run: not repeated
    gate.set()
    assert await safe == ["w1", 1]  # repeated on the worker that is left
    await until(
        lambda: pool.workers == [p for p in pool.workers if p.startswith("w1#")], what="w0 gone"
    )


async def test_map_and_imap_unordered_bound_the_calls_and_report_progress(
    stack: AsyncExitStack,
) -> None:
    caller, nodes = await bus(stack)
    running = peak = 0

    async def slow(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return x * 10

    for n in nodes:
        offer({"slow": slow}, limit=8, node=n)
    pool = Pool("slow", node=caller)
    await pool.wait_for_workers(2, timeout=5)
    seen: list[tuple[int, int | None]] = []
    out = await pool.map(range(50), concurrency=5, progress=lambda d, t: seen.append((d, t)))
    assert out == [x * 10 for x in range(50)]
    assert seen[-1] == (50, 50) and len(seen) == 50 and peak <= 5
    got = [x async for x in pool.imap_unordered((x for x in range(30)), concurrency=3)]
    assert sorted(got) == [x * 10 for x in range(30)] and peak <= 5
    assert await pool.map([(1,), (2,)], star=True) == [10, 20]


async def test_map_stops_at_the_first_error(stack: AsyncExitStack) -> None:
    caller, (n0,) = await bus(stack, 1)

    def check(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    offer({"check": check}, node=n0)
    pool = Pool("check", node=caller)
    await pool.wait_for_workers(1, timeout=5)
    with pytest.raises(aemp.RemoteError, match="three"):
        await pool.map(range(1000), concurrency=2)
    with pytest.raises(ZeroDivisionError):  # progress's own failure stops it too
        await pool.map(range(5), progress=lambda d, t: 1 / 0)
    assert await pool.map(range(3)) == [0, 1, 2]
    # or each failure in its place, and the others go on
    out = await pool.map(range(6), return_exceptions=True)
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5]
    assert isinstance(out[3], aemp.RemoteError) and out[3].message == "three"
    got = [x async for x in pool.imap_unordered(range(5), return_exceptions=True)]
    assert sorted(x for x in got if isinstance(x, int)) == [0, 1, 2, 4] and len(got) == 5
    # bad items: a clear error from the iteration, never from a callback
    with pytest.raises(aemp.InvalidArgument, match="items must be iterable"):
        await pool.map(None)  # type: ignore[arg-type]
    items: list[Any] = [(1,), (2,), "45", (6,)]  # a str is not a tuple of arguments
    with pytest.raises(aemp.InvalidArgument, match=r"item 2 must be a tuple or list .*'45'"):
        await pool.map(items, star=True, concurrency=1)

    def broken() -> Any:
        yield 1
        raise OSError("the source failed")

    with pytest.raises(OSError, match="the source failed"):
        await pool.map(broken(), concurrency=1)
    assert await pool.map([[1], (2,)], star=True) == [1, 2]


async def test_a_worker_that_answers_garbage(
    stack: AsyncExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    caller, (n0, n1) = await bus(stack)
    # not an aemp worker: replies two values, and a non-port key in the family
    liar = n0.port(lambda *m: n0.snd(m[-1], "two", "values"))
    n0.db_reg("fn:echo", liar, {"limit": "many"})
    n0.db_set("fn:echo", "not-a-port", 1)
    pool = Pool("echo", node=caller, retry_after=5.0)
    with caplog.at_level(logging.WARNING, logger="aemp.pool"):
        await pool.wait_for_workers(1, timeout=5)
        await until(lambda: "not a port ID" in caplog.text, what="the bad key noticed")
    assert pool.workers == [liar]
    with pytest.raises(BadReply, match="answered 2 values") as e:
        await pool.call(1)
    assert e.value.worker == liar and e.value.reply == ("two", "values")
    real = offer({"echo": lambda x: x}, node=n1)
    await pool.wait_for_workers(2, timeout=5)
    assert [await pool.call(i) for i in range(5)] == list(range(5))  # the liar is benched
    assert pool.outstanding() == {liar: 0, real.port: 0}


async def test_closing_the_pool_and_bad_arguments(stack: AsyncExitStack) -> None:
    caller, (n0,) = await bus(stack, 1)
    pool = Pool("closing", node=caller)
    waiting = pool.call(1)
    pool.close()
    with pytest.raises(PoolClosed):
        await waiting
    with pytest.raises(PoolClosed):
        pool.call(2)
    with pytest.raises(aemp.InvalidArgument):
        Pool(5, node=caller)  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidFamily, match="'bad name' is not valid"):
        Pool("bad name", node=caller)
    with pytest.raises(aemp.InvalidArgument, match="choice"):
        Pool("x", choice="best", node=caller)  # type: ignore[arg-type]
    with pytest.raises(aemp.OutOfRange):
        Pool("x", retry_after=0, node=caller)
    with pytest.raises(aemp.OutOfRange, match="limit"):
        offer({"x": lambda: 1}, limit=0, node=n0)
    with pytest.raises(aemp.InvalidArgument):
        offer({"x": 1}, node=n0)  # type: ignore[dict-item]
    with pytest.raises(aemp.InvalidArgument):
        offer({}, node=n0)
    other = Pool("x", node=caller)
    for bad in (-1, 0.0, math.inf, math.nan, 10**400):
        with pytest.raises(aemp.OutOfRange, match=r"pool\.call: timeout"):
            other.call(1, timeout=bad)
    for wrong in (True, "5", [5]):
        with pytest.raises(aemp.InvalidArgument, match=r"pool\.call: timeout"):
            other.call(1, timeout=wrong)  # type: ignore[arg-type]
    with pytest.raises(aemp.OutOfRange, match="retry_after"):
        Pool("x", retry_after=10**400, node=caller)
    with pytest.raises(aemp.InvalidArgument, match="cb must be callable"):
        other.call(1, cb=5)  # type: ignore[arg-type]
    assert not other.outstanding()  # nothing of the refused calls stays
    with pytest.raises(aemp.MessageError):
        other.call(object())  # never went anywhere
    with pytest.raises(aemp.InvalidArgument):
        await other.wait_for_workers(0)
    # an unknown function on a live worker: an error reply, the worker lives
    w = offer({"known": lambda: 1}, node=n0)
    with pytest.raises(aemp.RemoteError, match="not 'unknown'"):
        await caller.cal(w.port, "unknown", timeout=5)
    assert await caller.cal(w.port, "known", timeout=5) == (1,)


async def test_closing_the_node_closes_its_pools() -> None:
    node = await aemp.Node(nodeid="alone").start()
    pool = Pool("nothing", node=node)
    waiting = pool.call(1)
    await node.close()
    assert pool.closed
    with pytest.raises(PoolClosed):
        await waiting


async def test_blocking_jobs_run_in_threads_and_the_worker_stays_responsive(
    stack: AsyncExitStack,
) -> None:
    caller, (n0,) = await bus(stack, 1)
    started = threading.Event()
    release = threading.Event()

    def wait_in_thread(x: int) -> str:
        started.set()
        release.wait(5)
        return f"{x} from {threading.current_thread().name.split()[0]}"

    offer({"block": blocking_job(wait_in_thread), "quick": lambda: "quick"}, limit=2, node=n0)
    block, quick = Pool("block", node=caller), Pool("quick", node=caller)
    await block.wait_for_workers(1, timeout=5)
    await quick.wait_for_workers(1, timeout=5)
    pending = block.call(1)
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    assert await quick.call(timeout=5) == "quick"  # the node is not blocked
    release.set()
    assert await pending == "1 from aemp-blocking"
    with pytest.raises(aemp.InvalidArgument):
        blocking_job(5)  # type: ignore[arg-type]


async def test_leaving_imap_unordered_early_cancels_the_rest(stack: AsyncExitStack) -> None:
    caller, (n0,) = await bus(stack, 1)
    gate = asyncio.Event()

    async def job(x: int) -> int:
        if x:
            await gate.wait()
        return x

    w = offer({"job": job}, limit=10, node=n0)
    pool = Pool("job", node=caller)
    await pool.wait_for_workers(1, timeout=5)
    results = pool.imap_unordered(range(100), concurrency=4)
    async for value in results:
        assert value == 0
        break
    await results.aclose()
    assert pool.outstanding() == {w.port: 0}  # the three others were cancelled
    await until(lambda: w.in_flight == 3, what="the worker still runs them")  # sent, they run
    gate.set()
    await until(lambda: w.in_flight == 0, what="the worker done")
    assert await pool.call(0) == 0


async def test_the_two_choice_spreads_too(stack: AsyncExitStack) -> None:
    caller, nodes = await bus(stack, 2)
    for n in nodes:
        for _ in range(2):
            offer({"who": lambda: aemp.SELF.get()}, node=n)
    pool = Pool("who", choice="two", node=caller)
    await pool.wait_for_workers(4, timeout=5)
    calls = [pool.call() for _ in range(400)]
    counts = pool.outstanding()
    assert sum(counts.values()) == 400 and min(counts.values()) >= 60, counts
    assert set(await asyncio.gather(*calls)) == set(pool.workers)


async def test_a_pool_made_in_a_port_outlives_that_port(stack: AsyncExitStack) -> None:
    caller, (n0,) = await bus(stack, 1)
    made: asyncio.Future[Pool] = asyncio.get_running_loop().create_future()
    maker = caller.port(lambda *_: made.set_result(Pool("outlive", node=caller)))
    caller.snd(maker, "make")
    pool = await asyncio.wait_for(made, 5)
    caller.kil(maker)
    offer({"outlive": lambda: "still here"}, node=n0)
    assert await pool.call(timeout=5) == "still here"
