"""A database node in its own process, for the multi-process database tests.

``python tests/db_proc.py '{"nodeid": ..., "binds": [...], "seeds": [...], ...,
"reg": FAMILY, "watch": FAMILY}'`` starts a node with those configuration
keys. With "reg" it registers one port in that family (value: its node ID);
with "watch" it prints every db_mon call as a JSON line
{"view": [keys], "added": [...], "changed": [...], "deleted": [...]}.
It prints {"id": ..., "listeners": [...], "port": ...} first and
{"master": ...} whenever its master changes, and serves until stdin closes
or it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aemp


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def main(spec: dict[str, Any]) -> None:
    reg, watch = spec.pop("reg", None), spec.pop("watch", None)
    async with aemp.Node(**spec) as node:
        port = node.port(lambda *m: None)
        emit({"id": node.id, "listeners": node.listeners, "port": port})
        if reg:
            node.db_reg(reg, port, node.id)
        if watch:

            def show(fam: Any, added: list[str], changed: list[str], deleted: list[str]) -> None:
                emit({"view": sorted(fam), "added": added, "changed": changed, "deleted": deleted})

            node.db_mon(watch, show)
        master = node.master
        emit({"master": master})
        reader = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        while not reader.done():
            if node.master != master:
                master = node.master
                emit({"master": master})
            await asyncio.wait([reader], timeout=0.02)


if __name__ == "__main__":
    aemp.run(main(json.loads(sys.argv[1])))
