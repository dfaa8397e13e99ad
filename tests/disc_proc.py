"""A node with discovery and no seeds, for the network-namespace tests.

``ip netns exec NS python tests/disc_proc.py KEYS`` runs
aemp.configure(norc=True, **KEYS) (which starts discovery, as `aemp run`
does), sets ("host", <node ID>) in the database, and prints one JSON line
every 0.1 s while something changed: the seconds since the process
started, the nodes it is connected to, the subkeys of "host" it sees and
discovery's statistics (none for a node given seeds instead, as
bench/bench_discovery.py's reference is). It runs until it is killed or stdin closes.
Only ever run inside a network namespace: discovery sends multicast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

STARTED = time.monotonic()

import aemp  # noqa: E402  (after STARTED: the figure counts the imports too)
import aemp.discovery  # noqa: E402
import aemp.lowlevel  # noqa: E402


async def main(keys: dict[str, Any]) -> None:
    if os.environ.get("DISC_PROC_LOG"):  # for debugging: the node's log on stderr
        fmt = f"%(relativeCreated)6d {keys['nodeid']} %(name)s %(message)s"
        logging.basicConfig(level=logging.DEBUG, format=fmt)
    node = await aemp.configure(norc=True, **keys)
    node.db_set("host", node.id, keys.get("binds"))
    view: dict[str, Any] = {}
    node.db_mon("host", lambda fam, *_: view.update(fam=sorted(fam)))
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    last = None
    while not stdin_closed.done():
        has = aemp.discovery.of(node) is not None  # bench/bench_discovery.py: seeds instead
        stats = aemp.discovery.statistics(node) if has else {"peers": {}}
        line = {
            "up": sorted(aemp.up_nodes()),
            "db": view.get("fam", []),
            "stats": {k: v for k, v in stats.items() if k != "peers"},
            "peers": sorted(stats["peers"]),
            "globals": aemp.lowlevel.database(node)["globals"],
            "merged": sorted(aemp.lowlevel.database(node)["merged"].get("host", {})),
        }
        if line != last:
            last = line
            print(json.dumps({"t": round(time.monotonic() - STARTED, 3), **line}), flush=True)
        await asyncio.sleep(0.1)
    await node.close()


if __name__ == "__main__":
    aemp.run(main(json.loads(sys.argv[1])))
