"""aemp.logcatch: forwarders and catchers between real nodes over TCP, in one
process and across processes, and `aemp log` as a command of its own.

Filters, exception text, buffering while no catcher is reachable (bounded,
dropped records counted and reported once, no memory growth), no loop when
a catcher's own node logs, garbage sent to a catcher, and a catcher that
goes away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import until

import aemp
from aemp import lowlevel
from aemp.logcatch import (
    CATCHERS,
    FORWARDERS,
    LogCatcher,
    LogEntry,
    forward,
    forwarders,
    parse_level,
)

SECRET = "logcatch-test"
TESTS = Path(__file__).resolve().parent
KEYS: dict[str, Any] = {"secret": SECRET, "monitor_timeout": 2.0}
app = logging.getLogger("app")


@pytest.fixture(autouse=True)
def _debug_root() -> Any:
    """Let every record reach the handlers (the root logger's level is WARNING)."""
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    yield
    root.setLevel(saved)


@pytest.fixture
async def net() -> AsyncIterator[tuple[aemp.Node, aemp.Node, aemp.Node]]:
    """A seed, a node that forwards its log ("fw") and one that catches ("ct")."""
    async with (
        aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], **KEYS) as seed,
        aemp.Node(nodeid="fw", binds=["127.0.0.1:0"], seeds=seed.listeners, **KEYS) as fw,
        aemp.Node(nodeid="ct", binds=["127.0.0.1:0"], seeds=seed.listeners, **KEYS) as ct,
    ):
        yield seed, fw, ct


def say(node: aemp.Node, level: int, text: str, logger: logging.Logger = app) -> None:
    """Log in the node's context, as its own code would."""
    lowlevel.call_in(node, None, logger.log, level, text)


async def entries(catcher: LogCatcher, n: int, limit: float = 5.0) -> list[LogEntry]:
    got: list[LogEntry] = []
    async with asyncio.timeout(limit):
        async for e in catcher:
            got.append(e)
            if len(got) == n:
                break
    return got


# ---------------------------------------------------------------- forwarding


async def test_records_reach_a_catcher_with_node_level_logger_and_exception(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    _, fw, ct = net
    forward(node=fw)
    catcher = LogCatcher(node=ct, loggers="app")  # in one process: aemp's own records come too
    await until(lambda: forward(node=fw).catchers == [catcher.port], what="the catcher found")
    say(fw, logging.INFO, "hello")

    def broken() -> None:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            app.exception("it broke")

    lowlevel.call_in(fw, None, broken)
    first, second = await entries(catcher, 2)
    assert (first.node, first.level, first.logger, first.message) == ("fw", 20, "app", "hello")
    assert first.exc is None and first.levelname == "INFO"
    assert abs(first.time - time.time()) < 10
    assert second.message == "it broke" and second.level == logging.ERROR
    assert second.exc is not None and "ZeroDivisionError" in second.exc
    assert "fw ERROR app: it broke\nTraceback" in second.format()


async def test_level_and_logger_filters_at_the_source(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    _, fw, ct = net
    fwd = forward(node=fw, logger="app")
    warn = LogCatcher(node=ct, level="WARNING")
    db = LogCatcher(node=ct, loggers=["app.db"])
    await until(lambda: len(fwd.catchers) == 2, what="both catchers found")
    sent = fwd.sent
    say(fw, logging.INFO, "info")
    say(fw, logging.WARNING, "warn")
    say(fw, logging.INFO, "db info", logging.getLogger("app.db"))
    say(fw, logging.INFO, "dbx", logging.getLogger("app.dbx"))  # not a child of app.db
    assert [e.message for e in await entries(warn, 1)] == ["warn"]
    assert [e.message for e in await entries(db, 1)] == ["db info"]
    assert fwd.sent - sent == 2  # the others were not sent at all


async def test_records_of_threads_are_forwarded(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    _, fw, ct = net
    fwd = forward(node=fw)
    catcher = LogCatcher(node=ct, loggers="thread")
    await until(lambda: fwd.catchers == [catcher.port], what="the catcher found")
    await asyncio.to_thread(logging.getLogger("thread").warning, "from a thread")
    (e,) = await entries(catcher, 1)
    assert e.message == "from a thread" and e.node == "fw"


async def test_kept_while_no_catcher_then_handed_over_with_a_sync(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    _, fw, ct = net
    fwd = forward(node=fw, logger="app", buffer=10)
    for i in range(3):
        say(fw, logging.INFO, f"early {i}")
    assert fwd.kept == 3 and fwd.dropped == 0
    assert await forwarders(ct, timeout=5) == {"fw"}
    catcher = LogCatcher(node=ct)
    assert await catcher.wait_synced({"fw"}, 5) == set()
    assert [e.message for e in catcher.take()] == ["early 0", "early 1", "early 2"]
    assert catcher.synced == {"fw": (3, 0)} and fwd.kept == 0


async def test_no_memory_growth_without_catchers_and_one_warning(
    net: tuple[aemp.Node, aemp.Node, aemp.Node], caplog: pytest.LogCaptureFixture
) -> None:
    _, fw, ct = net
    fwd = forward(node=fw, logger="app", buffer=100)
    lowlevel.call_in(fw, None, app.info, "warm up %d", 0)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(20_000):
            lowlevel.call_in(fw, None, app.info, "record %d of a flood", i)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # what the forwarder holds (pytest's caplog keeps every record, and the
    # argument tuples made for them, so the process itself grows)
    mine = [tracemalloc.Filter(True, str(Path(aemp.__file__).parent / "logcatch.py"))]
    diff = after.filter_traces(mine).compare_to(before.filter_traces(mine), "filename")
    growth = sum(s.size_diff for s in diff)
    assert growth < 100_000, f"{growth} bytes more after 20,000 records"
    assert fwd.kept == 100 and fwd.dropped == 20_001 - 100
    warnings = [r for r in caplog.records if "no log catcher reachable" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].name == "aemp.logcatch"
    # the next catcher hears how many were dropped, once
    catcher = LogCatcher(node=ct)
    assert await catcher.wait_synced({"fw"}, 5) == set()
    got = catcher.take()
    assert len(got) == 101 and got[-1].logger == "aemp.logcatch"
    assert "dropped 19901 log records" in got[-1].message
    assert catcher.synced["fw"] == (101, 19_901) and fwd.dropped == 0


async def test_a_catcher_that_goes_away_turns_buffering_on_again(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    _, fw, ct = net
    fwd = forward(node=fw)
    catcher = LogCatcher(node=ct)
    await until(lambda: fwd.catchers == [catcher.port], what="the catcher found")
    await ct.close()  # its node goes: the forwarder's monitor fires
    await until(lambda: fwd.catchers == [], what="the catcher forgotten")
    say(fw, logging.WARNING, "nobody listens")
    assert fwd.kept == 1


async def test_forward_as_a_configured_service() -> None:
    node = await aemp.configure(
        norc=True, nodeid="svc", services=[["aemp.logcatch:forward", "INFO", "app", 5]]
    )
    try:
        fwd = forward(node=node)  # the service's: one per node
        assert (fwd.level, fwd.buffer) == (logging.INFO, 5)
        for i in range(8):
            say(node, logging.INFO, f"r{i}")
        say(node, logging.DEBUG, "below the level")
        say(node, logging.INFO, "not app", logging.getLogger("other"))
        assert fwd.kept == 5 and fwd.dropped == 3
    finally:
        await node.close()
    assert fwd not in logging.getLogger("app").handlers  # it left with its node


async def test_closing_the_catchers_node_ends_its_iteration() -> None:
    node = await aemp.Node(nodeid="lonely").start()
    catcher = LogCatcher(node=node)
    waiting = asyncio.ensure_future(entries(catcher, 1))
    await asyncio.sleep(0.01)
    await node.close()
    assert await asyncio.wait_for(waiting, 2) == [] and not catcher.active


# ---------------------------------------------------------------- no loops


async def test_no_loop_when_the_catchers_own_node_forwards_and_logs(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    """A catcher on a forwarding node whose callback logs each record it catches."""
    _, fw, _ = net
    fwd = forward(node=fw)
    caught: list[LogEntry] = []

    def on_entry(e: LogEntry) -> None:
        caught.append(e)
        app.warning("caught %s from %s", e.message, e.node)  # logged on fw, about forwarding

    catcher = LogCatcher(on_entry, loggers="app", node=fw)
    await until(lambda: fwd.catchers == [catcher.port], what="the catcher found")
    sent = fwd.sent
    say(fw, logging.WARNING, "one")
    await until(lambda: len(caught) == 1, what="the record caught")
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert [e.message for e in caught] == ["one"] and fwd.sent - sent == 1
    # garbage sent to the catcher: its warning stays on fw too
    fw.snd(catcher.port, "junk")
    await until(lambda: catcher.garbage == 1, what="the garbage counted")
    await asyncio.sleep(0.05)
    assert len(caught) == 1 and fwd.sent - sent == 1


# ---------------------------------------------------------------- bad input


async def test_garbage_to_a_catcher_is_ignored_and_counted(
    net: tuple[aemp.Node, aemp.Node, aemp.Node], caplog: pytest.LogCaptureFixture
) -> None:
    seed, _, ct = net
    catcher = LogCatcher(node=ct)
    good = {"node": "x", "time": 1.0, "level": 30, "logger": "l", "message": "m", "exc": None}
    junk: list[tuple[Any, ...]] = [
        ("log",),
        ("log", "text"),
        ("log", [1, 2]),
        ("log", {**good, "level": "WARNING"}),
        ("log", {**good, "level": True}),
        ("log", {**good, "time": float("nan")}),
        ("log", {**good, "time": "now"}),
        ("log", {**good, "message": b"bytes"}),
        ("log", {**good, "exc": 5}),
        ("log", {**good, "node": None}),
        ("log", good, "extra"),
        ("log_sync", "fw", "3", 0),
        ("log_sync",),
        (None,),
        ({"a": 1},),
        ("x" * 100_000,),
    ]
    for msg in junk:
        seed.snd(catcher.port, *msg)
    seed.snd(catcher.port, "log", good)
    (e,) = await entries(catcher, 1)
    assert e == LogEntry("x", 1.0, 30, "l", "m", None)
    assert catcher.garbage == len(junk) and catcher.active
    assert len([r for r in caplog.records if "no log record" in r.getMessage()]) == 1


async def test_a_bad_catcher_entry_in_the_database_is_ignored(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    _, fw, ct = net
    fwd = forward(node=fw, logger="app")
    ct.db_set(CATCHERS, "not a port", {"level": 0})
    ct.db_set(CATCHERS, ct.port(), "no dict")
    ct.db_set(CATCHERS, ct.port(), {"level": -3, "loggers": []})
    ct.db_set(CATCHERS, ct.port(), {"level": 0, "loggers": [1, 2]})
    catcher = LogCatcher(node=ct)
    await until(lambda: fwd.catchers == [catcher.port], what="only the real catcher")
    say(fw, logging.INFO, "fine")
    assert [e.message for e in await entries(catcher, 1)] == ["fine"]


async def test_a_forwarder_sends_to_at_most_64_catchers(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    _, fw, ct = net
    fwd = forward(node=fw, logger="app")
    for _ in range(70):
        ct.db_set(CATCHERS, ct.port(lambda *msg: None), {"level": 0, "loggers": []})
    await until(lambda: len(fwd.catchers) == 64, what="64 catchers")
    await asyncio.sleep(0.1)
    assert len(fwd.catchers) == 64


async def test_bad_arguments_are_clear_errors(node: aemp.Node) -> None:
    with pytest.raises(aemp.InvalidArgument, match="level"):
        LogCatcher(node=node, level="LOUD")
    with pytest.raises(aemp.OutOfRange, match="level"):
        parse_level(-1)
    with pytest.raises(aemp.InvalidArgument, match="callable"):
        LogCatcher(5, node=node)  # type: ignore[arg-type]
    with pytest.raises(aemp.OutOfRange, match="queue"):
        LogCatcher(node=node, queue=0)
    with pytest.raises(aemp.InvalidArgument, match="logger names"):
        LogCatcher(node=node, loggers=[3])  # type: ignore[list-item]
    with pytest.raises(aemp.OutOfRange, match="buffer"):
        forward(node=node, buffer=0)
    assert parse_level("warning") == 30 and parse_level("15") == 15


# ---------------------------------------------------------------- other processes


class Proc:
    """tests/logrecv_proc.py: a forwarding node in a process of its own."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, str]) -> None:
        self.proc = proc
        self.info = info

    @classmethod
    async def start(cls, nodeid: str, seeds: list[str]) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(TESTS / "logrecv_proc.py"), nodeid, "127.0.0.1:0", SECRET,
            json.dumps(seeds), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        return cls(proc, json.loads(line))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()  # by its PID
        await self.proc.wait()


async def test_a_forwarder_in_another_process(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    seed, _, ct = net
    p = await Proc.start("other", seed.listeners)
    try:
        catcher = LogCatcher(node=ct, loggers="proc")
        assert await catcher.wait_synced({"other"}, 10) == set()
        ct.snd(p.info["talk"], "log", logging.WARNING, "across processes")
        ct.snd(p.info["talk"], "crash", "boom")
        first, second = await entries(catcher, 2, 10)
        assert (first.node, first.message) == ("other", "across processes")
        assert second.exc is not None and "RuntimeError: boom" in second.exc
        # the mailbox coroutine there, spawned from here
        box = ct.spawn("other", "__main__:box_echo")
        for i in range(5):
            ct.snd(box, "b" if i % 2 else "a", i)
        assert await ct.cal(box, "get", "b", timeout=10) == ("b", 1)
        assert await ct.cal(box, "get", "a", timeout=10) == ("a", 0)
        assert await ct.cal(box, "get", "b", timeout=10) == ("b", 3)
        assert await ct.cal(box, "get", "a", timeout=10) == ("a", 2)
    finally:
        await p.stop()


def _config(path: Path, seeds: list[str]) -> None:
    path.write_text(json.dumps({"profile": {"aemp": {"seeds": seeds, "secret": SECRET}}}))


async def _aemp_log(*args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aemp", "log", "--bind", "127.0.0.1:0", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_aemp_log_follow_in_its_own_process(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    seed, fw, _ = net
    _config(Path(os.environ["AEMP_CONFIG"]), seed.listeners)
    fwd = forward(node=fw)
    say(fw, logging.INFO, "kept before")
    args = ("--follow", "--json", "--level", "INFO", "--logger", "app,other", "--timeout", "60")
    proc = await _aemp_log(*args)
    try:
        await until(lambda: len(fwd.catchers) == 1, 20, "aemp log's catcher found")
        say(fw, logging.DEBUG, "too low")
        say(fw, logging.WARNING, "live")
        assert proc.stdout is not None
        lines = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 10)) for _ in range(2)]
        assert [(x["node"], x["message"]) for x in lines] == [("fw", "kept before"), ("fw", "live")]
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err
        assert b"too low" not in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_aemp_log_prints_what_was_kept_and_ends(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    seed, fw, _ = net
    _config(Path(os.environ["AEMP_CONFIG"]), seed.listeners)
    forward(node=fw, logger="app")
    say(fw, logging.INFO, "first")
    say(fw, logging.ERROR, "second")
    proc = await _aemp_log("--timeout", "10")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "fw INFO app: first",
        "fw ERROR app: second",
    ]

    proc = await _aemp_log("--level", "LOUD")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"--level" in err and b"LOUD" in err


async def test_aemp_log_names_a_forwarder_that_hands_nothing_over(
    net: tuple[aemp.Node, aemp.Node, aemp.Node],
) -> None:
    seed, _, ct = net
    _config(Path(os.environ["AEMP_CONFIG"]), seed.listeners)
    proc = await _aemp_log("--timeout", "3")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, out) == (0, b"") and b"no node forwards its log" in err
    ct.db_set(FORWARDERS, ct.port(lambda *msg: None))  # listed, but never answers
    await until(lambda: ct.node_is_up(seed.id), what="ct linked")
    proc = await _aemp_log("--timeout", "3")
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and out == b"", err
    assert b"no records from 1 forwarding node(s) within 3 s: ct" in err
