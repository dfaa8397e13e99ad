"""A node in its own process, for the multi-process tests.

``python tests/node_proc.py NODEID BIND SECRET [KEYS]`` starts a node listening on
BIND with a "sink" port that counts ("n", i) messages and answers
("count", reply). It prints {"listener": ..., "sink": ...} as one JSON line
and serves until stdin closes or it is killed. KEYS is an optional JSON
object of more configuration keys (framing_format, cert, ...).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import spawn_targets  # noqa: F401  (loaded, so that other nodes may spawn its functions)

import aemp


async def main(nodeid: str, bind: str, secret: str, keys: str = "{}") -> None:
    async with aemp.Node(
        nodeid=nodeid, binds=[bind], secret=secret, monitor_timeout=5, **json.loads(keys)
    ) as node:
        seen: list[int] = []
        sink = node.port(n=seen.append, count=lambda reply: node.snd(reply, len(seen), seen[-1:]))
        print(json.dumps({"listener": node.listeners[0], "sink": sink}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(*sys.argv[1:5]))
