"""A host node for bench_supervisor.py, run as its own process.

``python bench/sup_host.py NODEID SEED``: a node that joins through SEED
and offers ``sup_host:worker`` (spawnable) to the supervisor, whose
children answer ("ping", reply) and crash on ("crash",). Prints one JSON
line, then serves until stdin closes or it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aemp

SECRET = "bench-secret"


@aemp.spawnable
def worker() -> None:
    def crash() -> None:
        raise RuntimeError("asked to crash")

    aemp.rcv(aemp.SELF.get() or "", ping=lambda reply: aemp.snd(reply, "pong"), crash=crash)


async def main(nodeid: str, seed: str) -> None:
    import sup_host  # noqa: F401  (this file as a module of its own: the spawn target)

    async with aemp.Node(
        nodeid=nodeid, binds=["127.0.0.1:0"], seeds=[seed], secret=SECRET, monitor_timeout=2
    ) as node:
        print(json.dumps({"id": node.id, "pid": os.getpid()}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(sys.argv[1], sys.argv[2]))
