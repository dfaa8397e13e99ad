"""A worker process of bench/bench_pool.py: ``python bench/pool_peer.py SEED N``.

Starts a node seeded at SEED (host:port) that offers the function "echo"
from N pool workers and has one plain port answering "echo" the same way
(the plain cal reference). Prints one JSON line, {"id", "plain",
"workers"}, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aemp
from aemp.pool import offer

SECRET = "bench-secret"


def echo(x: Any) -> Any:
    return x


async def main(seed: str, n: int) -> None:
    async with aemp.Node(
        nodeid="pool-peer/%u", binds=["127.0.0.1:0"], seeds=[seed], secret=SECRET
    ) as node:
        workers = [offer({"echo": echo}, limit=4, node=node) for _ in range(n)]
        plain = node.port(echo=lambda x, reply: node.snd(reply, x))
        info = {"id": node.id, "plain": plain, "workers": [w.port for w in workers]}
        print(json.dumps(info), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(sys.argv[1], int(sys.argv[2])))
