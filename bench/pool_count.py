"""A fixed workload for counting instructions: ``python bench/pool_count.py N MODE``.

Wall-clock rates on a loaded machine vary by tens of percent from run to
run; the instructions a workload executes repeat within 0.1%. This is
bench_pool's pipelined workload (N calls, 1,000 outstanding, each result
making the next call, the callback form) with a fixed N, for a counter
that sees only this process, the caller's: two peer processes
(bench/pool_peer.py, two workers each) answer, and are not counted.

MODE: ``cal`` (plain cal to the plain port of the first peer, bench_pool's
reference), ``spread`` (plain cal to the four worker ports in turn),
``least`` or ``two`` (pool.call with that choice). Count at N=20000 and
at N=0; the difference over 20,000 is the caller's instructions per call:

    valgrind --tool=callgrind --callgrind-out-file=OUT python bench/pool_count.py 20000 least
    callgrind_annotate OUT | grep "PROGRAM TOTALS"
"""

from __future__ import annotations

import sys
from typing import Any

from bench_pool import SECRET, Peer, _free_port

import aemp
from aemp.pool import Pool

MODES = ("cal", "spread", "least", "two")


async def main(n: int, mode: str) -> None:
    addr = f"127.0.0.1:{_free_port()}"
    async with aemp.Node(nodeid="bench", binds=[addr], secret=SECRET) as node:
        peers = [Peer(addr, 2), Peer(addr, 2)]
        try:
            plain = peers[0].info["plain"]
            ports = peers[0].info["workers"] + peers[1].info["workers"]
            pool = Pool("echo", choice="two" if mode == "two" else "least", node=node)
            await pool.wait_for_workers(4, timeout=60)
            for port in (plain, *ports):  # every link and route made before counting
                await node.cal(port, "echo", 0, timeout=60)
            await pool.call(0, timeout=60.0)
            call: Any
            if mode == "cal":
                call = lambda i, got: node.cal(plain, "echo", i, cb=got, timeout=60.0)  # noqa: E731
            elif mode == "spread":
                call = lambda i, got: node.cal(ports[i % 4], "echo", i, cb=got, timeout=60.0)  # noqa: E731
            else:
                call = lambda i, got: pool.call(i, cb=got, timeout=60.0)  # noqa: E731
            finished = node.loop.create_future()
            sent = done = 0

            def got(*_: Any) -> None:
                nonlocal sent, done
                done += 1
                if sent < n:
                    call(sent, got)
                    sent += 1
                elif done == n:
                    finished.set_result(None)

            for i in range(min(1000, n)):
                call(i, got)
                sent += 1
            if n:
                await finished
            pool.close()
        finally:
            for p in peers:
                p.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1].isdigit() or sys.argv[2] not in MODES:
        sys.exit(f"usage: pool_count.py N {{{'|'.join(MODES)}}}")
    aemp.run(main(int(sys.argv[1]), sys.argv[2]))
