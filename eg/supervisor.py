# eg/supervisor.py: restart workers on other nodes when they die (docs/intro.md, part 8).
# Start host nodes first, then: python eg/supervisor.py host1 host2
import asyncio
import collections
import os
import sys
import time
from typing import Any

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")
WORKERS = 2
MAX_RESTARTS = 3  # more restarts than this within PERIOD seconds: give up
PERIOD = 10.0


@aemp.spawnable  # other nodes may start it with spawn()
def worker(name: str, supervisor: str) -> None:
    """Runs on a host, as the spawned port: doubles numbers, crashes when asked to."""
    aemp.mon(supervisor)  # a worker does not outlive its supervisor

    def work(n: int, reply: str) -> None:
        aemp.snd(reply, name, n * 2)

    def crash() -> None:
        raise RuntimeError(f"{name} was asked to crash")

    me = aemp.rcv(aemp.self_port(), work=work, crash=crash)
    aemp.db_reg("eg_supervised", me, name)  # so that others can find it


class Supervisor:
    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.port = aemp.port(print)  # what the workers watch
        self.restarts: collections.deque[float] = (
            collections.deque()
        )  # when the recent restarts were
        self.gave_up = asyncio.Event()

    def start(self, name: str, where: int) -> None:
        host = self.hosts[where % len(self.hosts)]
        worker = aemp.spawn(host, "eg.supervisor:worker", name, self.port)
        aemp.mon(worker, lambda *reason: self.died(name, where, reason))
        print(f"supervisor: {name} started on {host} as {worker}")

    def died(self, name: str, where: int, reason: tuple[Any, ...]) -> None:
        if not reason:
            print(f"supervisor: {name} ended normally")
            return
        now = time.monotonic()
        self.restarts.append(now)
        while self.restarts[0] < now - PERIOD:
            self.restarts.popleft()
        if len(self.restarts) > MAX_RESTARTS:
            print(f"supervisor: {name} died, too many restarts, giving up")
            self.gave_up.set()
            return
        if reason[0] == "transport_error":
            where += 1  # its node is gone: try the next host
        print(f"supervisor: {name} died with {reason[:2]}, restarting it")
        self.start(name, where)


async def main(hosts: list[str]) -> None:
    node = await aemp.configure("supervisor", seeds=[SEED], secret=SECRET)
    async with node:
        supervisor = Supervisor(hosts)
        for i in range(WORKERS):
            supervisor.start(f"w{i + 1}", i)
        await supervisor.gave_up.wait()  # or Ctrl-C


if __name__ == "__main__":
    try:
        aemp.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
