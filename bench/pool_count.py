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

``python bench/pool_count.py --count [MODE ...]`` does that for each mode
(default: all) with valgrind's cache simulation on, and prints per call
the instructions, the first-level cache misses (instructions, data read,
data written) and a cost estimate, instructions + 10 per miss (a miss
that the second level answers costs about ten instructions' time, and
the workload fits that level), each with its ratio to ``cal`` (plain cal
over pool call: the issue's target for the wall-clock rate is 0.8).
It needs valgrind and takes about a minute per mode on two CPUs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import free_port
from bench_pool import SECRET, pipelined, start_peers

import aemp
from aemp.pool import Pool

MODES = ("cal", "spread", "least", "two")


async def main(n: int, mode: str) -> None:
    addr = f"127.0.0.1:{free_port()}"
    async with aemp.Node(nodeid="bench", binds=[addr], secret=SECRET) as node:
        peers = start_peers(addr)
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
            await pipelined(node, call, n, window=1000, limit=None)
            pool.close()
        finally:
            for p in peers:
                p.stop()


def _totals(out: str) -> list[int]:
    """The event totals (Ir Dr Dw I1mr D1mr D1mw ...) of callgrind_annotate's output."""
    line = next(x for x in out.splitlines() if "PROGRAM TOTALS" in x)
    return [int(x.replace(",", "")) for x in line.split() if x[0].isdigit() and "%" not in x]


def count(modes: list[str], n: int = 20_000) -> None:
    here = Path(__file__).resolve()
    env = {**os.environ, "PYTHONPATH": str(here.parent.parent)}
    per_call: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            runs = []
            for size in (0, n):  # side by side: the two CPUs
                out = f"{tmp}/{mode}.{size}"
                cmd = ["valgrind", "--tool=callgrind", "--cache-sim=yes"]
                cmd += [f"--callgrind-out-file={out}", sys.executable, str(here), str(size), mode]
                quiet = subprocess.DEVNULL
                proc = subprocess.Popen(cmd, env=env, cwd=here.parent, stdout=quiet, stderr=quiet)
                runs.append((proc, out))
            totals = []
            for proc, out in runs:
                if proc.wait() != 0:
                    sys.exit(f"valgrind failed for {mode} (is it installed?)")
                text = subprocess.run(
                    ["callgrind_annotate", out], capture_output=True, text=True, check=True
                ).stdout
                totals.append(_totals(text))
            zero, full = totals
            ir, _dr, _dw, i1, d1r, d1w = ((full[i] - zero[i]) / n for i in range(6))
            per_call[mode] = [ir, i1, d1r, d1w, ir + 10 * (i1 + d1r + d1w)]
    ref = per_call.get("cal")
    for mode, (ir, i1, d1r, d1w, est) in per_call.items():
        line = f"{mode:7} instructions {ir:8,.0f}  misses I1 {i1:6,.0f} D1r {d1r:6,.0f}"
        line += f" D1w {d1w:6,.0f}  estimate {est:8,.0f}"
        if ref is not None and mode != "cal":
            line += f"  ratio {ref[0] / ir:.3f} (estimate {ref[4] / est:.3f})"
        print(line, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--count"]:
        wanted = sys.argv[2:] or list(MODES)
        if not set(wanted) <= set(MODES):
            sys.exit(f"usage: pool_count.py --count [{' '.join(MODES)}]")
        count(sorted(wanted, key=MODES.index))
        sys.exit(0)
    if len(sys.argv) != 3 or not sys.argv[1].isdigit() or sys.argv[2] not in MODES:
        sys.exit(f"usage: pool_count.py N {{{'|'.join(MODES)}}}")
    aemp.run(main(int(sys.argv[1]), sys.argv[2]))
