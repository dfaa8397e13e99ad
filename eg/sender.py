# eg/sender.py: greet a receiver (docs/intro.md, parts 1 and 3).
# python eg/sender.py PORT greets that port; without PORT it greets every
# receiver the database knows, waiting up to 10 s for the first one.
import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")


async def find_receivers() -> list[str]:
    found: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

    def watch(
        family: Mapping[str, Any], added: list[str], changed: list[str], deleted: list[str]
    ) -> None:
        if family and not found.done():
            found.set_result(list(family))

    with aemp.db_mon("eg_receivers", watch):
        return await asyncio.wait_for(found, 10)


async def main(ports: list[str]) -> None:
    node = await aemp.configure("sender", seeds=[SEED], secret=SECRET)
    async with node:
        for port in ports or await find_receivers():
            aemp.snd(port, "hello", "hello, world", aemp.NODE())
            # messages between two nodes arrive in the order sent, so once the
            # receiver's node has answered this request, it had the greeting
            await aemp.cal(aemp.node_of(port), "time", timeout=10)
            print(f"sender: greeted {port}")


if __name__ == "__main__":
    aemp.run(main(sys.argv[1:]))
