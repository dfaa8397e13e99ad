"""A node process for the database benchmarks.

``python bench/db_peer.py SPEC`` where SPEC is a JSON object of node
configuration keys plus:

- "watch": a family to db_mon. Each change whose value is
  [monotonic_time, ack_port] records time.monotonic() - monotonic_time (the
  clock is shared by every process on the machine) and acknowledges to
  ack_port; "report" on the printed port answers with those latencies.
- "reg": a family to db_reg the node's port in.
- "expect": print {"ready": monotonic_time} once the watched family has
  that many members.

Prints {"id", "listener", "port", "pid"} first, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aemp


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def main(spec: dict[str, Any]) -> None:
    watch, reg, expect = spec.pop("watch", None), spec.pop("reg", None), spec.pop("expect", 0)
    async with aemp.Node(**spec) as node:
        latencies: list[float] = []
        port = node.port(
            report=lambda reply: node.snd(reply, latencies[:]),
            echo=lambda *a: node.snd(a[-1], *a[:-1]),
        )
        listener = node.listeners[0] if node.listeners else None
        emit({"id": node.id, "listener": listener, "port": port, "pid": os.getpid()})
        if reg:
            node.db_reg(reg, port, node.id)
        if watch:
            ready = False

            def changed(fam: Any, added: list[str], changed: list[str], deleted: list[str]) -> None:
                nonlocal ready
                now = time.monotonic()
                for k in (*added, *changed):
                    v = fam[k]
                    if isinstance(v, list) and len(v) == 2:
                        latencies.append(now - v[0])
                        node.snd(v[1], "ack")
                if expect and not ready and len(fam) >= expect:
                    ready = True
                    emit({"ready": now})

            node.db_mon(watch, changed)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(json.loads(sys.argv[1])))
