"""db_propagation and mesh_20: the distributed database between processes.

db_propagation: a db_set on the bench process reaches a db_mon callback in
another process through a global node in a third; the latency is measured
on the clock all processes share (time.monotonic). The reference is a plain
cal round trip between the same two nodes, in the same run.

mesh_20: 20 node processes, two of them seeds; every node registers itself
in one family and watches it. The figure is the time from the start of the
last process until every node has seen all 20 members; the reference is the
time a bare Python process takes to start with the same imports (a floor
the figure includes). RSS per node is compared with such a bare process.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import Peer, free_port

import aemp

PEER = Path(__file__).resolve().parent / "db_peer.py"
SECRET = "bench-secret"
LIMIT_S = 60.0


class Proc(Peer):
    """A db_peer.py node process started with `spec` (see db_peer.py)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.started = time.monotonic()
        super().__init__(PEER, json.dumps({"secret": SECRET, **spec}))

    def readline(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"node process {self.proc.pid} ended early")
        return dict(json.loads(line))

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1e6


async def propagation(seed: str, watcher: Proc, n: int) -> tuple[list[float], list[float]]:
    async with aemp.Node(nodeid="bench/%u", seeds=[seed], secret=SECRET) as node:
        acks: asyncio.Queue[None] = asyncio.Queue()
        ack = node.port(lambda *m: acks.put_nowait(None))
        target = watcher.info["port"]
        known = asyncio.Event()  # set once the watcher's address is in the database
        with node.db_mon("'l", lambda fam, *_: watcher.info["id"] in fam and known.set()):
            await asyncio.wait_for(known.wait(), 10)
        await node.cal(target, "echo", 0, timeout=10)
        for _ in range(20):  # warm up: connections, subscriptions
            node.db_set("bench", "k", [time.monotonic(), ack])
            await asyncio.wait_for(acks.get(), 10)
        await node.cal(target, "report", timeout=10)
        for _ in range(n):
            node.db_set("bench", "k", [time.monotonic(), ack])
            await asyncio.wait_for(acks.get(), 10)
        (lat,) = await node.cal(target, "report", timeout=10)
        lat = lat[20:]
        cal = []
        for i in range(n):
            t0 = time.perf_counter()
            await node.cal(target, "echo", i)
            cal.append(time.perf_counter() - t0)
        return lat, cal


def run_propagation(quick: bool) -> list[dict[str, Any]]:
    addr = f"127.0.0.1:{free_port()}"
    seed = Proc({"nodeid": "seed", "binds": [addr], "seeds": [addr]})
    watcher = Proc(
        {"nodeid": "watcher/%u", "binds": ["127.0.0.1:0"], "seeds": [addr], "watch": "bench"}
    )
    try:
        n = 1000 if quick else 5000
        lat, cal = aemp.run(asyncio.wait_for(propagation(addr, watcher, n), LIMIT_S))
    finally:
        watcher.stop()
        seed.stop()
    p50, ref = _p(lat, 50), _p(cal, 50)
    return [
        {
            "bench": "db_propagation",
            "value": round(p50, 1),
            "unit": "us p50 (lower is better)",
            "p99": round(_p(lat, 99), 1),
            "reference": "aemp cal round trip between the same two nodes",
            "reference_value": round(ref, 1),
            "reference_p99": round(_p(cal, 99), 1),
            "ratio": round(ref / p50, 3),
        }
    ]


BARE = (
    "import asyncio, json, sys, msgpack, uvloop, cryptography; "
    "print('{}', flush=True); sys.stdin.read()"
)


def run_mesh(quick: bool) -> list[dict[str, Any]]:
    count = 10 if quick else 20
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    procs: list[Proc] = []
    try:
        for i, addr in enumerate(addrs):
            procs.append(
                Proc({"nodeid": f"seed{i}", "binds": [addr], "seeds": addrs, "reg": "mesh",
                      "watch": "mesh", "expect": count})
            )  # fmt: skip
        for i in range(count - 2):
            procs.append(
                Proc({"nodeid": f"n{i}/%u", "binds": ["127.0.0.1:0"], "seeds": addrs,
                      "reg": "mesh", "watch": "mesh", "expect": count})
            )  # fmt: skip
        last_start = procs[-1].started
        ready = [p.readline()["ready"] for p in procs]
        formed = max(ready) - last_start
        rss = [p.rss_mb() for p in procs]
    finally:
        for p in procs:
            p.stop()
    t0 = time.monotonic()
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert bare.stdout is not None
        bare.stdout.readline()
        bare_start = time.monotonic() - t0
        with open(f"/proc/{bare.pid}/status") as f:
            bare_rss = next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith("VmRSS:"))
    finally:
        assert bare.stdin is not None
        bare.stdin.close()
        bare.wait(10)
    return [
        {
            "bench": f"mesh_{count}",
            "value": round(formed, 3),
            "unit": "s until every node sees all members (lower is better)",
            "reference": "start of a bare python with the same imports",
            "reference_value": round(bare_start, 3),
            "ratio": round(bare_start / formed, 3),
            "target": 2.0,
        },
        {
            "bench": f"mesh_{count}_rss",
            "value": round(statistics.mean(rss), 1),
            "max": round(max(rss), 1),
            "unit": "MB RSS per node (lower is better)",
            "reference": "bare python with the same imports",
            "reference_value": round(bare_rss, 1),
            "ratio": round(bare_rss / statistics.mean(rss), 3),
            "target": 40.0,
        },
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    return [*run_propagation(quick), *run_mesh(quick)]
