"""Shared fixtures: every async test runs on uvloop, the loop aemp uses in production,
but for tests marked virtual_time, which run on aemp.testing.VirtualTimeLoop."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import random
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import uvloop

import aemp
from aemp.testing import VirtualTimeLoop

# The loop of the async test running now, for the time limit below.
_test_loop: list[asyncio.AbstractEventLoop] = []


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
    virtual = item.get_closest_marker("virtual_time")  # docs/testing.md
    factory: Callable[[], asyncio.AbstractEventLoop] = (
        VirtualTimeLoop if virtual else uvloop.new_event_loop
    )

    def make() -> asyncio.AbstractEventLoop:
        loop = factory()
        _test_loop[:] = [loop]
        return loop

    return {"virtual" if virtual else "uvloop": make}


# A test that hangs fails instead of holding the whole run until CI's own
# limit. After TEST_LIMIT seconds the stacks of its threads and of its
# loop's tasks are printed and the tasks cancelled: the test fails and the
# run goes on. If it is still stuck a minute later (blocking code that
# cancelling cannot reach), the stacks are printed to the terminal and the
# run ends (exit status 1).
TEST_LIMIT = float(os.environ.get("AEMP_TEST_LIMIT", "300"))


def _cancel_tasks(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.print_stack(file=sys.stderr)
        task.cancel(f"the test's time limit of {TEST_LIMIT:g} s")


def _over_limit(nodeid: str) -> None:
    print(f"\n{nodeid}: still running after {TEST_LIMIT:g} s", file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for loop in _test_loop:
        if loop.is_running():
            loop.call_soon_threadsafe(_cancel_tasks, loop)


def _stuck(config: pytest.Config, nodeid: str) -> None:
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=False)
    print(f"\n{nodeid}: stuck after {TEST_LIMIT + 60:g} s; ending the run", file=sys.stderr)
    sys.stderr.flush()
    # faulthandler prints every thread's stack and ends the process (status 1)
    faulthandler.dump_traceback_later(0.01, exit=True, file=sys.stderr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    timers = [
        threading.Timer(TEST_LIMIT, _over_limit, (item.nodeid,)),
        threading.Timer(TEST_LIMIT + 60, _stuck, (item.config, item.nodeid)),
    ]
    for t in timers:
        t.daemon = True
        t.start()
    try:
        return (yield)
    finally:
        for t in timers:
            t.cancel()


@pytest.fixture(autouse=True)
def _no_user_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configure() and the aemp command never read the developer's own config file,
    nor meet the control sockets of nodes outside the test (aemp.control)."""
    path = tmp_path_factory.mktemp("config") / "config.json"
    monkeypatch.setenv("AEMP_CONFIG", str(path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))
    monkeypatch.delenv("AEMP_NODE", raising=False)


@pytest.fixture
async def node() -> AsyncIterator[aemp.Node]:
    async with aemp.Node(nodeid="test/%u") as n:
        yield n


def _below_ephemeral() -> tuple[int, int]:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (max(1024, low - 12000), low) if low > 2048 else (40000, 60000)


_FREE_RANGE = _below_ephemeral()


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, for a node started later.

    Taken below the kernel's ephemeral range, so that no outgoing
    connection of this process (or another) takes it in between: a port
    from bind(0) is one an outgoing connection may be given next.
    """
    low, high = _FREE_RANGE
    for _ in range(1000):
        port = random.randrange(low, high)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


async def until(cond: Callable[[], Any], limit: float = 5.0, what: str = "condition") -> None:
    """Wait until cond() is true; AssertionError naming `what` after `limit` seconds."""
    try:
        async with asyncio.timeout(limit):
            while not cond():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"after {limit} s: not {what}") from None


class Watch:
    """A db_mon callback that keeps the last view and each change as sets."""

    def __init__(self) -> None:
        self.view: dict[str, Any] = {}
        self.events: list[tuple[set[str], set[str], set[str]]] = []

    def __call__(self, fam: Any, added: list[str], changed: list[str], deleted: list[str]) -> None:
        self.view = dict(fam)
        self.events.append((set(added), set(changed), set(deleted)))


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    """Nodes pushed onto it are closed when the test ends."""
    async with AsyncExitStack() as s:
        yield s


async def settle(rounds: int = 5) -> None:
    """Let the event loop run queued callbacks a few times."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Recorder:
    """A callable that records what it was called with and can be awaited for a count."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)
        for n, fut in list(self._waiters):
            if len(self.calls) >= n and not fut.done():
                fut.set_result(None)

    async def wait(self, n: int = 1, limit: float = 2.0) -> list[tuple[Any, ...]]:
        if len(self.calls) < n:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            await asyncio.wait_for(fut, limit)
        return self.calls


@pytest.fixture(autouse=True)
def no_errors_logged(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Any:
    """An ERROR from aemp or asyncio (a callback that raised, a task nobody awaited) fails the test.

    Tests that provoke such an error on purpose are marked ``allow_error_log``.
    """
    yield
    if request.node.get_closest_marker("allow_error_log"):
        return
    bad = [
        r
        for r in caplog.get_records("call") + caplog.get_records("teardown")
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("aemp", "asyncio")
    ]
    assert not bad, "errors were logged:\n" + "\n".join(f"{r.name}: {r.getMessage()}" for r in bad)
