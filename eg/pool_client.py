# eg/pool_client.py: spread jobs over the pool's workers (docs/intro.md, part 6).
# python eg/pool_client.py [JOBS]: every job gets exactly one answer, even when
# workers die while it runs; a job whose worker is lost is sent to another one.
import asyncio
import itertools
import os
import sys
from collections.abc import Mapping
from typing import Any

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")
IN_FLIGHT = 6  # jobs under way at once
TRIES = 5  # sends of one job before the client gives up


class Pool:
    def __init__(self) -> None:
        self.workers: list[str] = []  # as the database lists them, minus the ones that failed us
        self.changed = asyncio.Event()
        self.turn = itertools.count()
        self.resent = 0

    def update(
        self, family: Mapping[str, Any], added: list[str], changed: list[str], deleted: list[str]
    ) -> None:
        self.workers = [w for w in self.workers if w not in deleted] + added
        self.changed.set()

    async def pick(self) -> str:
        async with asyncio.timeout(10):  # no worker for 10 s: give up
            while not self.workers:
                self.changed.clear()
                await self.changed.wait()
        return self.workers[next(self.turn) % len(self.workers)]

    async def run(self, job: int) -> None:
        for _ in range(TRIES):
            worker = await self.pick()
            try:
                result, by = await aemp.cal(worker, "square", job, timeout=5)
            except aemp.PortDead as e:  # the worker died, or its node is unreachable
                print(f"job {job}: worker lost ({e.reason[0]}), sending the job again")
                if worker in self.workers:
                    self.workers.remove(worker)
                self.resent += 1
                continue
            except aemp.CallTimeout:
                print(f"job {job}: no answer in time, sending the job again")
                self.resent += 1
                continue
            print(f"job {job} -> {result} from {by}")
            return
        raise RuntimeError(f"job {job} failed {TRIES} times")


async def main(jobs: int) -> None:
    node = await aemp.configure("pool_client", seeds=[SEED], secret=SECRET)
    async with node:
        pool = Pool()
        aemp.db_mon("eg_pool", pool.update)
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one(job: int) -> None:
            async with slots:
                await pool.run(job)

        await asyncio.gather(*(one(job) for job in range(jobs)))
        print(f"all {jobs} jobs answered, {pool.resent} sent again")


if __name__ == "__main__":
    aemp.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
