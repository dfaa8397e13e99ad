"""aemp.blocking and aemp.run_blocking: blocking and CPU-bound work from a
port, in a thread of the node's pool or in a process pool, with the rules
of a port kept (one message at a time, a failure kills the port, close
leaves nothing behind) and the node's heartbeats going on meanwhile."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder

import aemp
from aemp import lowlevel

BLOCKING_PROC = Path(__file__).resolve().parent / "blocking_proc.py"
SECRET = "blocking-secret"
LIMIT = 5.0  # the longest any single wait of these tests may take


async def until(done: Callable[[], bool], limit: float = LIMIT) -> None:
    """Wait, bounded, until done() holds (a condition a thread makes true)."""
    async with asyncio.timeout(limit):
        while not done():
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------- heartbeats


@pytest.fixture
async def blocker() -> AsyncIterator[dict[str, str]]:
    """tests/blocking_proc.py: a node with monitor_timeout=1 whose ports block."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BLOCKING_PROC),
        "127.0.0.1:0",
        SECRET,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    finally:
        if proc.returncode is None:
            proc.kill()  # by its own PID
        await proc.wait()


async def test_work_through_the_helper_keeps_the_node_alive_a_blocked_loop_does_not(
    blocker: dict[str, str],
) -> None:
    async with aemp.Node(
        nodeid="watcher", seeds=[blocker["listener"]], secret=SECRET, monitor_timeout=1
    ) as me:
        await until(lambda: me.node_is_up("blk"))
        links = Recorder()
        me.mon_nodes(links)

        # 3 x monitor_timeout of work in a thread: the link stays up, no monitor fires
        helper = Recorder()
        me.mon(blocker["helper"], helper)
        start = time.monotonic()
        me.snd(blocker["helper"], "sleep", 3.0)
        # the ping waits in the port's backlog behind the work, as for an async callback
        assert await me.cal(blocker["helper"], "ping", timeout=LIMIT) == ("pong",)
        assert time.monotonic() - start >= 3.0
        assert helper.calls == [] and links.calls == []
        assert me.node_is_up("blk")

        # the same work on the event loop: every peer declares the node dead
        plain = Recorder()
        me.mon(blocker["plain"], plain)
        start = time.monotonic()
        me.snd(blocker["plain"], "sleep", 3.0)
        (reason,) = await plain.wait(1, limit=2.5)  # within the sleep, not after it
        assert reason == ("transport_error", "blk", "heartbeat timeout"), reason
        assert time.monotonic() - start < 3.0
        assert ("blk", False, "transport_error", "blk", "heartbeat timeout") in links.calls


# ---------------------------------------------------------------- the port's rules


async def test_messages_run_one_at_a_time_in_order_each_in_a_thread(node: aemp.Node) -> None:
    n = 20
    gate = threading.Event()
    lock = threading.Lock()
    running: list[int] = []
    done: list[tuple[int, str, Any]] = []
    overlaps: list[tuple[int, list[int]]] = []

    def work(i: int) -> None:
        with lock:
            if running:
                overlaps.append((i, list(running)))
            running.append(i)
        if i == 1:
            gate.wait(LIMIT)
        time.sleep(0.002)
        with lock:
            running.remove(i)
            done.append((i, threading.current_thread().name, aemp.SELF.get()))

    p = node.port(work=aemp.blocking(work))
    for i in range(1, n + 1):
        node.snd(p, "work", i)
    await until(lambda: running == [1])
    # the first runs; the others wait in the port's backlog, not in the pool
    await until(lambda: (lowlevel.port_info(node, p) or {}).get("backlog") == n - 1)
    gate.set()
    await until(lambda: len(done) == n)
    assert [i for i, _, _ in done] == list(range(1, n + 1))
    assert overlaps == []
    assert all(name.startswith("aemp-blocking") for _, name, _ in done)
    assert {self for _, _, self in done} == {None}  # a thread is outside any port
    assert lowlevel.port_alive(node, p)


@pytest.mark.parametrize("form", ["blocking", "run_blocking"])
async def test_a_failure_kills_the_port_with_its_type_and_text(node: aemp.Node, form: str) -> None:
    def parse(text: str, *_reply: str) -> int:
        return int(text)

    if form == "blocking":
        p = node.port(parse=aemp.blocking(parse))
    else:

        async def parse_and_answer(text: str, reply: str) -> None:
            node.snd(reply, await aemp.run_blocking(parse, text))

        p = node.port(parse=parse_and_answer)
    died = Recorder()
    node.mon(p, died)
    after = Recorder()
    node.snd(p, "parse", "7", node.port(after))
    node.snd(p, "parse", "seven", node.port(after))
    node.snd(p, "parse", "8", node.port(after))  # waits behind the failure: never runs
    (reason,) = await died.wait()
    assert reason == ("die", "ValueError: invalid literal for int() with base 10: 'seven'")
    assert not lowlevel.port_alive(node, p)
    assert after.calls == ([] if form == "blocking" else [(7,)])


async def test_a_cal_service_answers_with_the_result(node: aemp.Node) -> None:
    async def checksum(data: bytes, reply: str) -> None:
        import hashlib

        node.snd(reply, await aemp.run_blocking(lambda: hashlib.sha256(data).hexdigest()))

    p = node.port(checksum=checksum)
    (digest,) = await node.cal(p, "checksum", b"abc")
    assert digest.startswith("ba7816bf")


async def test_close_while_a_thread_runs_is_prompt_and_leaves_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    started: list[str] = []
    finished: list[str] = []

    def work(name: str) -> None:
        started.append(name)
        release.wait(LIMIT)
        finished.append(name)

    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        node = await aemp.Node(nodeid="closing", blocking_threads=1).start()
        busy = node.port(work=aemp.blocking(work))
        queued = node.port(work=aemp.blocking(work))  # all threads busy: it waits in the pool
        node.snd(busy, "work", "busy")
        node.snd(queued, "work", "queued")
        await until(lambda: started == ["busy"])
        assert lowlevel.statistics(node)["tasks"] == 2
        start = time.monotonic()
        await node.close()
        assert time.monotonic() - start < 0.5, "close does not wait for the thread"
        assert lowlevel.statistics(node)["tasks"] == 0
        release.set()
        await until(lambda: finished == ["busy"])
        # the node's pool was shut down: its thread ends once its work is done
        await until(lambda: not [t for t in threading.enumerate() if "closing" in t.name])
        with pytest.raises(aemp.NodeClosed):
            lowlevel.extension(node, "new", dict)
    assert started == ["busy"], "work not yet started is cancelled by close"
    assert caught == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_the_thread_limit_queues_work_until_a_thread_is_free() -> None:
    release = threading.Event()
    lock = threading.Lock()
    active: list[int] = []
    most = [0]
    done: list[int] = []

    def work(i: int) -> None:
        with lock:
            active.append(i)
            most[0] = max(most[0], len(active))
        release.wait(LIMIT)
        with lock:
            active.remove(i)
            done.append(i)

    async with aemp.Node(blocking_threads=2) as node:
        ticks = Recorder()
        ports = [node.port(work=aemp.blocking(work)) for _ in range(5)]
        for i, p in enumerate(ports):
            node.snd(p, "work", i)
        await until(lambda: len(active) == 2)
        # the other three wait in the pool's queue; the loop runs on
        for _ in range(3):
            node.after(0.01, ticks)
        await ticks.wait(3)
        assert len(active) == 2
        release.set()
        await until(lambda: len(done) == 5)
        assert most[0] == 2
        assert sorted(done) == list(range(5))


@pytest.mark.parametrize("bad", [0, 1025, True, "4", 2.0])
def test_blocking_threads_is_checked(bad: Any) -> None:
    from aemp._config import Config

    with pytest.raises(aemp.ConfigError, match=r"'blocking_threads' must be an int from 1 to 1024"):
        Config.from_keys({"blocking_threads": bad})


# ---------------------------------------------------------------- processes


async def test_cpu_bound_work_in_a_process_pool(node: aemp.Node) -> None:
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:

        async def power(a: int, b: int, reply: str) -> None:
            node.snd(reply, await aemp.run_blocking(pow, a, b, executor=pool))

        p = node.port(power=power, local=aemp.blocking(lambda: None, executor=pool))
        assert await node.cal(p, "power", 3, 40) == (3**40,)
        # a function that cannot be pickled cannot go to another process
        died = Recorder()
        node.mon(p, died)
        node.snd(p, "local")
        (reason,) = await died.wait(1, limit=LIMIT)
        assert reason[0] == "die" and "pickle" in reason[1], reason


# ---------------------------------------------------------------- bad arguments


async def test_bad_arguments_are_named(node: aemp.Node) -> None:
    with pytest.raises(aemp.InvalidArgument, match="blocking function must be callable"):
        aemp.blocking(3)  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidArgument, match=r"executor must be a concurrent.futures"):
        aemp.blocking(print, executor="threads")  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidArgument, match="run_blocking function must be callable"):
        aemp.run_blocking(None)  # type: ignore[arg-type]
    with pytest.raises(aemp.InvalidArgument, match="extension: name must be a non-empty str"):
        lowlevel.extension(node, "", dict)
    assert lowlevel.extension(node, "t", dict) is lowlevel.extension(node, "t", list)
