# eg/logs.py: the log of every node in one place (docs/intro.md, part 12).
# Needs no seed: python eg/logs.py
import logging
from typing import Any

import aemp
from aemp.logcatch import LogCatcher, forward

log = logging.getLogger("shop")
stock = {"apples": 5}


def sell(item: str, n: int) -> None:
    try:
        stock[item] -= n
    except KeyError:
        log.exception("no %s in stock", item)
        return
    log.info("sold %d %s, %d left", n, item, stock[item])


async def main() -> None:
    logging.getLogger().setLevel(logging.INFO)  # let INFO records reach the handlers
    keys: dict[str, Any] = {"secret": "s3cret", "binds": ["127.0.0.1:0"]}
    async with (
        aemp.Node(nodeid="office", **keys) as office,
        aemp.Node(nodeid="shop", seeds=office.listeners, **keys) as shop,
    ):
        forward(node=shop)  # the shop's log goes to whoever catches it
        till = shop.port(sell=sell)
        shop.snd(till, "sell", "apples", 3)  # nobody catches yet: the shop keeps it
        shop.snd(till, "sell", "pears", 1)

        catcher = LogCatcher(node=office, loggers="shop", level="INFO")
        await catcher.wait_synced({"shop"}, 5)  # the shop handed over what it kept
        shop.snd(till, "sell", "apples", 1)  # now sent at once
        async for entry in catcher:
            print(entry.node, entry.levelname, entry.logger, entry.message)
            if entry.exc:
                print("   ", entry.exc.splitlines()[-1])
            if "1 left" in entry.message:
                catcher.cancel()  # ends the loop


if __name__ == "__main__":
    aemp.run(main())
