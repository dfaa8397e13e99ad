"""supervisor_restart and supervisor_host_kill: how fast aemp.supervisor restarts.

supervisor_restart: a child on a host process crashes (it is sent "crash");
the figure is the time from that send until the restarted child answers a
ping, as the supervisor's "restarted" event starts it. The reference, in
the same run and between the same nodes, is a bare spawn round trip: spawn
the same function on the same host and ping the new port. A restart is a
crash report (a kil0 coming back), a spawn and that ping, so the ratio
(reference / figure) says how much of the restart the supervisor adds.

supervisor_host_kill: the host process that runs a child is killed with
SIGKILL; the figure is the time from the kill until the child answers on
the other host. The reference is the monitor's detection time of the same
kill (until the child's "exited" event with its transport_error), measured
in the same run: the restart after it costs a spawn and a ping.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import free_port

import aemp
from aemp.supervisor import Child, Event, Supervisor

HOST = Path(__file__).resolve().parent / "sup_host.py"
SECRET = "bench-secret"
LIMIT_S = 120.0


class Host:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, nodeid: str, seed: str) -> Host:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HOST), nodeid, seed,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 30)
        return cls(proc)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


class Events:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[float, Event]] = asyncio.Queue()

    def __call__(self, ev: Event) -> None:
        self.queue.put_nowait((time.perf_counter(), ev))

    async def next(self, kind: str) -> tuple[float, Event]:
        while True:
            t, ev = await self.queue.get()
            if ev.kind == kind:
                return t, ev


async def measure(quick: bool) -> dict[str, list[float]]:
    n_crash = 50 if quick else 300
    n_kill = 3 if quick else 8
    addr = f"127.0.0.1:{free_port()}"
    out: dict[str, list[float]] = {"restart": [], "spawn": [], "host_kill": [], "detect": []}
    hosts: dict[str, Host] = {}
    async with aemp.Node(nodeid="bench", binds=[addr], secret=SECRET, monitor_timeout=2) as me:
        try:
            for h in ("h1", "h2"):
                hosts[h] = await Host.start(h, addr)
            events = Events()
            sup = Supervisor(
                max_restarts=10 * (n_crash + n_kill), period=1, hosts=["h1", "h2"],
                on_event=events, node=me,
            )  # fmt: skip
            await sup.wait_for_hosts(2)
            sup.start_child(Child("w", "sup_host:worker"))
            _, ev = await events.next("started")
            await me.cal(ev.port or "", "ping", timeout=10)
            for i in range(20 + n_crash):  # the first 20 warm up
                port = sup.children()[0].port or ""
                t0 = time.perf_counter()
                me.snd(port, "crash")
                _, ev = await events.next("restarted")
                await me.cal(ev.port or "", "ping", timeout=10)
                if i >= 20:
                    out["restart"].append(time.perf_counter() - t0)
                host = ev.node or ""
                t0 = time.perf_counter()
                bare = me.spawn(host, "sup_host:worker")
                await me.cal(bare, "ping", timeout=10)
                if i >= 20:
                    out["spawn"].append(time.perf_counter() - t0)
                me.kil(bare)
            for _ in range(n_kill):
                c = sup.children()[0]
                victim = c.node or ""
                t0 = time.perf_counter()
                hosts[victim].proc.kill()
                t_exit, _ = await events.next("exited")
                _, ev = await events.next("restarted")
                await me.cal(ev.port or "", "ping", timeout=10)
                out["host_kill"].append(time.perf_counter() - t0)
                out["detect"].append(t_exit - t0)
                await hosts[victim].stop()
                hosts[victim] = await Host.start(victim, addr)  # back, for the next round
                await sup.wait_for_hosts(2)
            sup.stop()
            await sup.wait_closed()
        finally:
            for h in hosts.values():
                await h.stop()
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    m = aemp.run(asyncio.wait_for(measure(quick), LIMIT_S))
    us = {k: statistics.median(v) * 1e6 for k, v in m.items()}
    return [
        {
            "bench": "supervisor_restart",
            "value": round(us["restart"], 1),
            "unit": "us p50 from a child's crash until its successor answers (lower is better)",
            "reference": "bare spawn on the same host and a ping of the new port",
            "reference_value": round(us["spawn"], 1),
            "ratio": round(us["spawn"] / us["restart"], 3),
        },
        {
            "bench": "supervisor_host_kill",
            "value": round(us["host_kill"] / 1000, 2),
            "unit": "ms p50 from SIGKILL of a child's host until it answers elsewhere"
            " (lower is better)",
            "reference": "the monitor's detection of the same kill",
            "reference_value": round(us["detect"] / 1000, 2),
            "ratio": round(us["detect"] / us["host_kill"], 3),
        },
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
