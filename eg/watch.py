# eg/watch.py: print every change of a database family (docs/intro.md, part 3).
# python eg/watch.py eg_receivers   (Ctrl-C to stop)
import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")


def show(
    family: Mapping[str, Any], added: list[str], changed: list[str], deleted: list[str]
) -> None:
    print(f"now {len(family)}: added {added}, changed {changed}, deleted {deleted}")


async def main(family: str) -> None:
    node = await aemp.configure("watch", seeds=[SEED], secret=SECRET)
    async with node:
        aemp.db_mon(family, show)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        aemp.run(main(sys.argv[1]))
    except KeyboardInterrupt:
        pass
