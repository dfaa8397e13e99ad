"""A node in its own process whose ports block, for tests/test_blocking.py.

``python tests/blocking_proc.py BIND SECRET`` starts the node "blk" with
monitor_timeout=1, listening on BIND, with two ports: "plain" sleeps in
its callback (``time.sleep`` on the event loop), "helper" sleeps through
``aemp.blocking`` (in a thread). Each answers ("ping", reply) with "pong".
It prints {"listener": ..., "plain": ..., "helper": ...} as one JSON line
and serves until stdin closes or it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aemp


async def main(bind: str, secret: str) -> None:
    async with aemp.Node(nodeid="blk", binds=[bind], secret=secret, monitor_timeout=1) as node:

        def pong(reply: str) -> None:
            node.snd(reply, "pong")

        ports = {
            "plain": node.port(sleep=time.sleep, ping=pong),
            "helper": node.port(sleep=aemp.blocking(time.sleep), ping=pong),
        }
        print(json.dumps({"listener": node.listeners[0], **ports}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(*sys.argv[1:3]))
