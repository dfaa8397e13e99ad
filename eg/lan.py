# eg/lan.py: nodes that find each other on a LAN, with no seeds (docs/intro.md, part 13).
# On each machine of one LAN segment: python eg/lan.py   (Ctrl-C to stop)
import asyncio
import os
from collections.abc import Mapping
from typing import Any

import aemp

SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")
CHANNEL = os.environ.get("AEMP_DISCOVERY", "multicast:239.255.65.77:4044")


def show(
    family: Mapping[str, Any], added: list[str], changed: list[str], deleted: list[str]
) -> None:
    for nodeid in added:
        print(f"lan: {nodeid} is here, at {family[nodeid]}")
    for nodeid in deleted:
        print(f"lan: {nodeid} left")


async def main() -> None:
    node = await aemp.configure(
        "lan", binds=["*:4040"], secret=SECRET, network="tutorial", discovery=[CHANNEL]
    )
    async with node:
        aemp.db_set("lan", node.id, node.listeners[0])
        aemp.db_mon("lan", show)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        aemp.run(main())
    except KeyboardInterrupt:
        pass
