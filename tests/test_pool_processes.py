"""Pools across real processes: a worker process killed with SIGKILL mid-call.

Two worker processes (tests/pool_proc.py) offer "job" from two workers
each; the test's node is their seed and the caller. Calls marked
idempotent that were running on the killed process finish on the other
one; calls not so marked end with PortDead; the pool goes on with the
workers that are left.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, until

import aemp
from aemp.pool import Pool

PROC = Path(__file__).resolve().parent / "pool_proc.py"


class Proc:
    """One worker process; stopped by its own PID only."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info

    @classmethod
    async def start(cls, seed: str) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROC),
            seed,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        return cls(proc, json.loads(line))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


@pytest.fixture
async def caller() -> AsyncIterator[tuple[aemp.Node, list[Proc]]]:
    addr = f"127.0.0.1:{free_port()}"
    node = aemp.Node(nodeid="caller", binds=[addr], secret="pool-proc", monitor_timeout=2.0)
    await node.start()
    procs: list[Proc] = []
    try:
        procs.append(await Proc.start(addr))
        procs.append(await Proc.start(addr))
        yield node, procs
    finally:
        for p in procs:
            await p.stop()
        await node.close()


async def test_sigkill_mid_call_moves_the_idempotent_calls(
    caller: tuple[aemp.Node, list[Proc]],
) -> None:
    node, (keep, victim) = caller
    pool = Pool("job", node=node)
    assert len(await pool.wait_for_workers(4, timeout=20)) == 4
    # 40 calls of each kind: the fewest-outstanding choice puts 10 on each worker
    safe = [pool.call(i, 1.0, idempotent=True, timeout=20) for i in range(40)]
    unsafe = [pool.call(100 + i, 1.0, timeout=20) for i in range(40)]
    on_victim = [p for p in pool.workers if p.startswith(victim.info["id"] + "#")]
    assert len(on_victim) == 2
    assert all(n == 20 for n in pool.outstanding().values())
    await asyncio.sleep(0.2)  # the jobs run
    await victim.kill9()
    results = await asyncio.gather(*safe)
    assert sorted(x for _, x in results) == list(range(40))  # every one, once
    assert {who for who, _ in results} == {keep.info["id"]}  # the survivors ran them
    outcomes = await asyncio.gather(*unsafe, return_exceptions=True)
    dead = [o for o in outcomes if isinstance(o, aemp.PortDead)]
    done = [o for o in outcomes if isinstance(o, list)]
    assert len(dead) == 20 and {d.port for d in dead} == set(on_victim)
    assert len({x for _, x in done}) == 20 and all(100 <= x < 140 for _, x in done)
    assert {who for who, _ in done} == {keep.info["id"]} and len(done) == 20
    # the database drops the dead workers; calls go on with the others
    await until(lambda: len(pool.workers) == 2, limit=10, what="the dead workers dropped")
    assert await pool.map([(i, 0) for i in range(20)], star=True) == [
        [keep.info["id"], i] for i in range(20)
    ]
