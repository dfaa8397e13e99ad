"""A process that uses aemp.names, for the multi-process tests.

``python tests/names_proc.py MODE URL OPTIONS`` (each argument JSON):
- ``"contend" URL {"family", "name", "tasks", "seeds"?, "secret"?}``: run
  `tasks` tasks that each try_acquire the name at once; print
  {"won": [...], "in_use": n}, then wait for stdin to close.
- ``"hold" URL {"family", "name", "ttl", "seeds"?, "secret"?}``: try_hold the
  name; print {"token": t}, then {"error": text} for each keep-alive error;
  keep it until killed or stdin closes.
- ``"global" "" {"nodeid", "bind", "seeds", "secret"}``: a global node that
  serves the aemp:// lease table; prints {"listener": ...}.
With "seeds", the process runs a node with those seeds (aemp://).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import aemp
from aemp import names


async def work(mode: str, url: str, opts: dict[str, Any], node: aemp.Node | None) -> None:
    extra: dict[str, Any] = {"node": node} if node is not None else {}
    manager = await names.open(url, ttl=opts.get("ttl", 10), **extra)
    if mode == "contend":
        start = asyncio.Event()

        async def one(i: int) -> str:
            await start.wait()
            try:
                lease = await manager.try_acquire(opts["family"], opts["name"])
            except names.NameInUse:
                return "in_use"
            return f"{i}:{lease.token}"

        tasks = [asyncio.create_task(one(i)) for i in range(opts["tasks"])]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)
        won = [r for r in results if r != "in_use"]
        print(json.dumps({"won": won, "in_use": len(results) - len(won)}), flush=True)
    elif mode == "hold":
        holding = await manager.try_hold(
            opts["family"],
            opts["name"],
            on_error=lambda e: print(
                json.dumps({"error": f"{type(e).__name__}: {e}", "at": time.monotonic()}),
                flush=True,
            ),
        )
        print(json.dumps({"token": holding.token}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    with contextlib.suppress(Exception):
        await manager.aclose()


async def main(mode: str, url: str, opts: dict[str, Any]) -> None:
    if mode == "global":
        async with aemp.Node(
            nodeid=opts["nodeid"], binds=[opts["bind"]], seeds=opts["seeds"],
            secret=opts["secret"], monitor_timeout=2,
        ) as node:  # fmt: skip
            names.serve(node)
            print(json.dumps({"listener": node.listeners[0]}), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    elif "seeds" in opts:
        async with aemp.Node(
            nodeid="w/%u", seeds=opts["seeds"], secret=opts["secret"], monitor_timeout=2
        ) as node:
            while node.master is None:
                await asyncio.sleep(0.01)
            await work(mode, url, opts, node)
    else:
        await work(mode, url, opts, None)


if __name__ == "__main__":
    aemp.run(main(*[json.loads(a) for a in sys.argv[1:4]]))
