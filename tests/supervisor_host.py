"""A host node for the supervisor tests, in its own process.

``python tests/supervisor_host.py SPEC`` where SPEC is a JSON object:
"nodeid", "seed", "secret", optionally "family" (db_set the node's ID
there, as a host of a supervisor), "load" (false: do not load the
tests' spawnable functions), "supervise" (run a Supervisor here: its
keyword arguments, "children" as [id, target, args, restart] lists; each
event is printed as a JSON line {"event": [kind, child, port, node]}).
Prints {"id", "pid"} first, then serves until stdin closes or it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aemp
from aemp.supervisor import Child, Event, Supervisor


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def main(spec: dict[str, Any]) -> None:
    if spec.get("load", True):
        import supervised  # (loaded: other nodes may spawn its functions)

        globals()["worker"] = supervised.worker  # "__main__:worker": found on hosts only
    async with aemp.Node(
        nodeid=spec["nodeid"],
        binds=["127.0.0.1:0"],
        seeds=[spec["seed"]],
        secret=spec["secret"],
        monitor_timeout=2,
    ) as node:
        emit({"id": node.id, "pid": os.getpid()})
        if "family" in spec:
            node.db_set(spec["family"], node.id)
        if "supervise" in spec:
            keys = dict(spec["supervise"])
            children = [Child(*c) for c in keys.pop("children")]

            def show(ev: Event) -> None:
                emit({"event": [ev.kind, ev.child, ev.port, ev.node]})

            Supervisor(children, on_event=show, node=node, **keys)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(json.loads(sys.argv[1])))
