"""Workers that each hold a worker number, with aemp.names on aemp://.

A seed (a global node) serves the lease table; three workers join the
network and each holds the smallest free number of the family "workers",
kept alive in the background. One worker stops and gives its number back;
a new worker gets that number again. Each prints its fencing token, which
grows with every grant of a number.

    python eg/names_workers.py
"""

from __future__ import annotations

import asyncio

import aemp
from aemp import names

SECRET = "names-example"


class Worker:
    def __init__(self, label: str, seeds: list[str]) -> None:
        self.label = label
        self.node = aemp.Node(nodeid=f"{label}/%u", seeds=seeds, secret=SECRET)

    async def start(self) -> None:
        await self.node.start()
        while self.node.master is None:  # noqa: ASYNC110  (the first master)
            await asyncio.sleep(0.01)
        self.manager = await names.open("aemp://", node=self.node, ttl=3)
        self.held = await self.manager.hold("workers", on_error=self.trouble)
        print(f"{self.label} is worker {self.held.name} (token {self.held.token})")

    def trouble(self, exc: Exception) -> None:
        print(f"{self.label}: {type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        await self.held.release()  # the number is free again at once
        await self.manager.aclose()
        await self.node.close()
        print(f"{self.label} stopped")


async def main() -> None:
    async with aemp.Node(nodeid="seed", binds=["127.0.0.1:0"], secret=SECRET) as seed:
        names.serve(seed)  # every global node serves the lease table
        workers = [Worker(label, seed.listeners) for label in ("ann", "bob", "cat")]
        for w in workers:
            await w.start()
        await workers[1].stop()
        dan = Worker("dan", seed.listeners)
        await dan.start()  # gets bob's number back
        async with await names.open("aemp://", node=seed) as admin:
            for n in await admin.list("workers"):
                print(f"number {n.name}: {'free' if n.free else 'held'}, token {n.token}")
        for w in (workers[0], workers[2], dan):
            await w.stop()


if __name__ == "__main__":
    aemp.run(main())
