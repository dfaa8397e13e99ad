# eg/bus_client.py: call functions on the bus with aemp.pool (docs/intro.md, part 10).
# python eg/bus_client.py [JOBS]: squares JOBS numbers over every worker of "square".
import collections
import os
import sys

import aemp
from aemp.pool import Pool

SEED = os.environ.get("AEMP_SEED", "127.0.0.1:4040")
SECRET = os.environ.get("AEMP_SECRET", "tutorial-secret")


def progress(done: int, total: int | None) -> None:
    if done % 100 == 0 or done == total:
        print(f"{done}/{total} done")


async def main(jobs: int) -> None:
    node = await aemp.configure("bus_client", seeds=[SEED], secret=SECRET)
    async with node, Pool("square") as squares, Pool("digest") as digests, Pool("root") as roots:
        await squares.wait_for_workers(1, timeout=10)
        print("digest:", await digests.call("hello"))
        try:
            await roots.call(-1)
        except aemp.RemoteError as e:
            print(f"root(-1) raised {e.type}: {e.message}")
        results = await squares.map(
            range(jobs), concurrency=12, idempotent=True, timeout=10, progress=progress
        )
        assert [r for r, _ in results] == [n * n for n in range(jobs)]
        by = collections.Counter(who for _, who in results)
        print(f"all {jobs} jobs answered by {len(by)} workers, {squares.moved} moved")


if __name__ == "__main__":
    aemp.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
