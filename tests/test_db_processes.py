"""The database across real processes: seeds killed with SIGKILL and restarted, nodes killed.

Every node runs tests/db_proc.py in its own process, registers one port in
the family "svc" and watches that family; the test reads what each one
reports. monitor_timeout is short, so that every wait here is short too.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

DB_PROC = Path(__file__).resolve().parent / "db_proc.py"
SECRET = "db-proc-secret"
TIMEOUT = 2.0  # monitor_timeout of every node


class Proc:
    """One node process; stopped by its own PID only."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.info: dict[str, Any] = {}
        self.view: set[str] = set()
        self.added: set[str] = set()
        self.deleted: set[str] = set()
        self.master: str | None = None
        self.changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, **spec: Any) -> Proc:
        spec.setdefault("secret", SECRET)
        spec.setdefault("monitor_timeout", TIMEOUT)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(DB_PROC),
            json.dumps(spec),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        p = cls(proc)
        await p.until(lambda: "id" in p.info, 20)
        return p

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            ev = json.loads(line)
            if "id" in ev:
                self.info = ev
            elif "master" in ev:
                self.master = ev["master"]
            else:
                self.view = set(ev["view"])
                self.added.update(ev["added"])
                self.deleted.update(ev["deleted"])
            self.changed.set()

    async def until(self, cond: Callable[[], Any], limit: float = 10.0) -> None:
        async with asyncio.timeout(limit):
            while not cond():
                self.changed.clear()
                await self.changed.wait()

    @property
    def port(self) -> str:
        return str(self.info["port"])

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def procs() -> AsyncIterator[Callable[..., Any]]:
    started: list[Proc] = []

    async def start(**spec: Any) -> Proc:
        p = await Proc.start(**spec)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            await p.stop()


async def all_until(procs: list[Proc], cond: Callable[[Proc], Any], limit: float = 10.0) -> None:
    await asyncio.gather(*(p.until(lambda p=p: cond(p), limit) for p in procs))


async def test_one_seed_killed_and_restarted(procs: Callable[..., Any]) -> None:
    addr = f"127.0.0.1:{free_port()}"
    seed_spec = {"nodeid": "seed", "binds": [addr], "seeds": [addr]}
    seed = await procs(**seed_spec)
    nodes = [
        await procs(nodeid=f"n{i}/%u", seeds=[addr], binds=["127.0.0.1:0"], reg="svc", watch="svc")
        for i in range(4)
    ]
    ports = {n.port for n in nodes}
    await all_until(nodes, lambda p: p.view == ports)
    seed.kill9()
    await all_until(nodes, lambda p: p.master is None, limit=TIMEOUT + 3)
    assert all(n.view == ports for n in nodes), "the views are kept while masterless"
    await procs(**seed_spec)
    await all_until(nodes, lambda p: p.view == ports and p.master == "seed", limit=15)


async def test_two_seeds_one_killed(procs: Callable[..., Any]) -> None:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    seeds = {
        "s1": await procs(nodeid="s1", binds=[addrs[0]], seeds=addrs),
        "s2": await procs(nodeid="s2", binds=[addrs[1]], seeds=addrs),
    }
    nodes = [
        await procs(
            nodeid=f"n{i}/%u",
            seeds=addrs if i % 2 else addrs[::-1],
            binds=["127.0.0.1:0"],
            reg="svc",
            watch="svc",
        )
        for i in range(6)
    ]
    ports = {n.port for n in nodes}
    await all_until(nodes, lambda p: p.view == ports and p.master)
    masters = [n.master for n in nodes]
    victim = max(set(masters), key=masters.count)  # the seed with the most nodes
    survivor = "s2" if victim == "s1" else "s1"
    t0 = time.monotonic()
    seeds[victim].kill9()
    await all_until(nodes, lambda p: p.master == survivor, limit=TIMEOUT + 3)
    await all_until(nodes, lambda p: p.view == ports, limit=TIMEOUT + 3)
    moved = time.monotonic() - t0
    assert moved < TIMEOUT + 3


async def test_killed_node_leaves_every_view(procs: Callable[..., Any]) -> None:
    addr = f"127.0.0.1:{free_port()}"
    await procs(nodeid="seed", binds=[addr], seeds=[addr])
    nodes = [
        await procs(nodeid=f"n{i}/%u", seeds=[addr], binds=["127.0.0.1:0"], reg="svc", watch="svc")
        for i in range(3)
    ]
    ports = {n.port for n in nodes}
    await all_until(nodes, lambda p: p.view == ports)
    victim, live = nodes[0], nodes[1:]
    t0 = time.monotonic()
    victim.kill9()
    await all_until(live, lambda p: victim.port not in p.view, limit=TIMEOUT)
    assert time.monotonic() - t0 < TIMEOUT
    for p in live:
        assert victim.port in p.deleted
