# eg/pool_worker.py: one worker of a pool (docs/intro.md, part 6).
# Start as many as you like: python eg/pool_worker.py
import asyncio
import os

import aemp

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")
WORK_TIME = 0.05  # seconds each job pretends to take


def square(n: int, reply: str) -> None:
    # after() sends the answer later, so the port takes the next job meanwhile
    aemp.after(WORK_TIME, reply, n * n, aemp.NODE())


async def main() -> None:
    node = await aemp.configure("pool_worker", binds=["127.0.0.1:0"], seeds=[SEED], secret=SECRET)
    async with node:
        worker = aemp.port(square=square)
        aemp.db_reg("eg_pool", worker)
        print(f"pool worker: ready at {worker}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        aemp.run(main())
    except KeyboardInterrupt:
        pass
