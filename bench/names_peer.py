"""A holder of one name for bench_names.py: ``python bench/names_peer.py SPEC``.

SPEC is JSON: {"url", "ttl", "family", "name", "seeds"?, "secret"?}. It
try_holds the name, prints {"token": t} and holds it until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aemp
from aemp import names


async def main(spec: dict[str, object]) -> None:
    node = None
    if "seeds" in spec:
        node = await aemp.Node(
            nodeid="holder/%u", seeds=spec["seeds"], secret=spec["secret"], monitor_timeout=2
        ).start()
        while node.master is None:  # noqa: ASYNC110  (no event for it)
            await asyncio.sleep(0.01)
    extra = {"node": node} if node else {}
    m = await names.open(str(spec["url"]), ttl=spec["ttl"], **extra)
    held = await m.try_hold(str(spec["family"]), str(spec["name"]))
    print(json.dumps({"token": held.token}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(json.loads(sys.argv[1])))
