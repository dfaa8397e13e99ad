"""A worker process for tests/test_pool_processes.py.

``python tests/pool_proc.py SEED``: a node seeded at SEED that offers "job"
from two pool workers (limit 50 each). job(x, seconds) sleeps, then
returns [node ID, x]. Prints {"id", "workers"} once both are registered,
then serves until stdin closes (or it is killed).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aemp
from aemp.pool import offer


async def job(x: int, seconds: float) -> list[object]:
    await asyncio.sleep(seconds)
    return [aemp.NODE(), x]


async def main(seed: str) -> None:
    async with aemp.Node(
        nodeid="pw/%u", binds=["127.0.0.1:0"], seeds=[seed], secret="pool-proc", monitor_timeout=2.0
    ) as node:
        workers = [offer({"job": job}, limit=50, node=node) for _ in range(2)]
        print(json.dumps({"id": node.id, "workers": [w.port for w in workers]}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(sys.argv[1]))
