"""Shared fixtures: every async test runs on uvloop, the loop aemp uses in production,
but for tests marked virtual_time, which run on aemp.testing.VirtualTimeLoop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import uvloop

import aemp
from aemp.testing import VirtualTimeLoop


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
    if item.get_closest_marker("virtual_time"):
        return {"virtual": VirtualTimeLoop}  # docs/testing.md
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def _no_user_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configure() and the aemp command never read the developer's own config file."""
    path = tmp_path_factory.mktemp("config") / "config.json"
    monkeypatch.setenv("AEMP_CONFIG", str(path))


@pytest.fixture
async def node() -> AsyncIterator[aemp.Node]:
    async with aemp.Node(nodeid="test/%u") as n:
        yield n


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
