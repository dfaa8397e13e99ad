# eg/bus_worker.py: offer functions on the bus (docs/intro.md, part 10).
# Start as many as you like: python eg/bus_worker.py
import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

import aemp
from aemp.pool import blocking_job, offer

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")


async def square(n: int) -> list[object]:
    await asyncio.sleep(0.05)  # pretend to work; other jobs run meanwhile
    return [n * n, aemp.NODE()]


def digest(text: str) -> str:  # CPU-bound: it runs in a thread, the node stays alive
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def root(n: float) -> float:
    if n < 0:
        raise ValueError(f"no square root of {n}")
    return float(n**0.5)


async def main() -> None:
    node = await aemp.configure("bus_worker", binds=["127.0.0.1:0"], seeds=[SEED], secret=SECRET)
    async with node:
        functions: dict[str, Callable[..., Any]] = {
            "square": square,
            "digest": blocking_job(digest),
            "root": root,
        }
        worker = offer(functions, limit=4)
        print(f"bus worker: ready at {worker.port}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        aemp.run(main())
    except KeyboardInterrupt:
        pass
