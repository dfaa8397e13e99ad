# eg/spawn_pair.py: a port started on another node, watching each other (docs/intro.md, part 7).
# Start a host node first, then: python eg/spawn_pair.py host1
import asyncio
import os
import sys
from typing import Any

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")


@aemp.spawnable  # other nodes may start it with spawn()
def pinger(parent: str) -> None:
    """Runs on the host, as the new port: SELF is the port spawn() made."""
    aemp.mon(parent)  # if the parent dies abnormally, this port dies with it

    def ping(n: int, reply: str) -> None:
        if n < 0:
            raise ValueError(f"cannot ping {n} times")
        aemp.snd(reply, "pong", n, aemp.NODE())

    aemp.rcv(aemp.self_port(), ping=ping)


async def main(host: str) -> None:
    node = await aemp.configure("spawn_pair", seeds=[SEED], secret=SECRET)
    async with node:
        parent = aemp.port(print)
        deaths: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        def start() -> str:
            child = aemp.spawn(host, "eg.spawn_pair:pinger", parent)
            aemp.mon(child, lambda *reason: deaths.put_nowait(reason))  # and we watch it
            return child

        child = start()
        print("ping 1:", await aemp.cal(child, "ping", 1))
        try:
            await aemp.cal(child, "ping", -1)  # the child raises, and dies
        except aemp.PortDead as e:
            print("ping -1 failed:", e.reason)
        print("first child died with", await asyncio.wait_for(deaths.get(), 10))

        child = start()
        print("ping 2:", await aemp.cal(child, "ping", 2))
        aemp.kil(parent, "shutdown", "the parent is done")  # the child follows its parent
        print("second child died with", await asyncio.wait_for(deaths.get(), 10))


if __name__ == "__main__":
    aemp.run(main(sys.argv[1]))
