"""Flood benchmark: a sender process floods a receiver process over TCP.

    PYTHONPATH=$PWD python bench/bench_flood.py [--seconds 15] [KIND ...]

KIND is fast (a handler that only counts), sync (a 50 us handler), relay
(a fast handler relaying to a 50 us local port) or async (an ``async def``
handler). The sender sends small messages for --seconds, awaiting
``drain`` every 100, then tells the receiver how many it sent; the
receiver checks that it got every one, in order. Printed per kind, one
JSON line: messages, throughput, the receiver's own rate (its handler
alone, measured in the same process first), peak RSS of both sides (MB),
the receiver's longest timer gap, and whether its link was dropped. Each
flood is bounded by --seconds plus a drain of at most 60 s. Not part of
bench/run.py, whose figures are ratios to a reference without aemp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aemp  # noqa: E402
from aemp import lowlevel  # noqa: E402

SECRET = "bench-flood"
KINDS = ["fast", "sync", "relay", "async"]


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def receiver(kind: str) -> None:
    async with aemp.Node(nodeid="floodrcv", binds=["127.0.0.1:0"], secret=SECRET) as node:
        state = {"got": 0, "next": 0, "in_order": True}

        def count(i: int) -> None:
            if i != state["next"]:
                state["in_order"] = False
            state["next"] = i + 1
            state["got"] += 1

        def slow(i: int) -> None:
            busy(50e-6)
            count(i)

        async def async_m(i: int) -> None:
            await asyncio.sleep(0)
            count(i)

        if kind == "fast":
            port = node.port(m=count)
        elif kind == "sync":
            port = node.port(m=slow)
        elif kind == "relay":
            slow_port = node.port(m=slow)
            port = node.port(m=lambda i: node.snd(slow_port, "m", i))
        else:
            port = node.port(m=async_m)
        # the receiver's own rate: its port alone, fed from this node
        n = 20_000 if kind == "fast" else 5_000
        t0 = time.perf_counter()
        for i in range(n):
            node.snd(port, "m", i)
        while state["got"] < n:  # noqa: ASYNC110 - polled: the handlers only count
            await asyncio.sleep(0)
        own = n / (time.perf_counter() - t0)
        state.update(got=0, next=0)
        idle_rss = peak_rss_mb()
        gap = [0.0, node.loop.time()]
        held = [0]

        def tick() -> None:
            now = node.loop.time()
            gap[0] = max(gap[0], now - gap[1])
            gap[1] = now
            s = lowlevel.statistics(node)
            held[0] = max(held[0], s["queued"] + s["inbound"] + s["backlog"])
            lowlevel.timer(node, 0.01, tick)

        lowlevel.timer(node, 0.01, tick)
        done: asyncio.Future[int] = node.loop.create_future()
        node.rcv(port, done=lambda sent, reply: (done.set_result(sent), node.snd(reply, "ok")))
        print(json.dumps({"addr": node.listeners[0], "port": port}), flush=True)
        sent = await done
        t_end = time.perf_counter() + 60
        while state["got"] < sent and time.perf_counter() < t_end:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        print(json.dumps({
            "received": state["got"], "in_order": state["in_order"], "own_rate": round(own),
            "rcv_peak_rss_mb": round(peak_rss_mb(), 1), "rcv_idle_rss_mb": round(idle_rss, 1),
            "max_timer_gap_s": round(gap[0], 3), "max_held": held[0],
        }), flush=True)  # fmt: skip


async def sender(addr: str, port: str, seconds: float) -> None:
    async with aemp.Node(nodeid="floodsnd", seeds=[addr], secret=SECRET) as node:
        lost: list[Any] = []
        node.mon(port, lambda *r: lost.append(r))
        async with asyncio.timeout(10):
            while not node.node_is_up("floodrcv"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        sent = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end and not lost:
            for _ in range(100):
                node.snd(port, "m", sent)
                sent += 1
            await node.drain(port)
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - t0
        await node.cal(port, "done", sent, timeout=90)  # behind every message
        print(json.dumps({
            "sent": sent, "send_rate": round(sent / elapsed), "lost": [list(x) for x in lost],
            "snd_peak_rss_mb": round(peak_rss_mb(), 1),
        }), flush=True)  # fmt: skip


def run_kind(kind: str, seconds: float) -> dict[str, Any]:
    me = [sys.executable, __file__]
    rcv = subprocess.Popen([*me, "--role", "rcv", kind], stdout=subprocess.PIPE, text=True)
    try:
        assert rcv.stdout is not None
        hello = json.loads(rcv.stdout.readline())
        t0 = time.perf_counter()
        out = subprocess.run(
            [*me, "--role", "snd", "--seconds", str(seconds), hello["addr"], hello["port"]],
            capture_output=True, text=True, timeout=seconds + 120, check=True,
        )  # fmt: skip
        result = {"kind": kind, **json.loads(out.stdout.splitlines()[-1])}
        result.update(json.loads(rcv.stdout.readline()))
        result["throughput"] = round(result["received"] / (time.perf_counter() - t0))
        return result
    finally:
        rcv.kill()
        rcv.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["rcv", "snd"])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.role == "rcv":
        aemp.run(receiver(a.args[0]))
    elif a.role == "snd":
        aemp.run(sender(a.args[0], a.args[1], a.seconds))
    else:
        for kind in a.args or KINDS:
            print(json.dumps(run_kind(kind, a.seconds)), flush=True)


if __name__ == "__main__":
    main()
