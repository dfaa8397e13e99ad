"""The aemp demo: ports, messages, spawn, cal, monitors and a supervisor.

Run with ``python3 dev.py demo``. Everything here happens on one node for
now; the same calls work across processes once nodes are networked.
"""

from __future__ import annotations

import asyncio
import time

import aemp

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.3f}s] {text}", flush=True)


async def main() -> None:
    node = await aemp.configure(nodeid="demo/%u")
    say(f"node {node.id} is up")

    # 1. two ports play ping-pong
    done = asyncio.Event()

    def pong_side(n: int, reply: str) -> None:
        aemp.snd(reply, "pong", n)

    def ping_side(n: int) -> None:
        say(f"ping port got pong {n}")
        if n < 3:
            aemp.snd(ponger, "ping", n + 1, pinger)
        else:
            done.set()

    ponger = aemp.port(ping=pong_side)
    pinger = aemp.port(pong=ping_side)
    say(f"ports {pinger} and {ponger} exchange messages")
    aemp.snd(ponger, "ping", 1, pinger)
    await done.wait()

    # 2. spawn a worker by name and call it
    worker = aemp.spawn(node.id, "workers:squarer", "worker-1")
    say(f"spawned {worker}")
    (result, who) = await aemp.cal(worker, "square", 12)
    say(f"cal square(12) -> {result} (answered by {who})")

    # 3. monitor it: a crash is reported with its reason
    gone = asyncio.get_running_loop().create_future()
    aemp.mon(worker, lambda *reason: gone.set_result(reason))
    try:
        await aemp.cal(worker, "square", -1, timeout=5)
    except aemp.PortDead as e:
        say(f"cal square(-1) failed: {e}")
    say(f"monitor saw the worker die with {await gone}")

    # 4. a supervisor restarts a worker each time it dies
    restarts = 0
    current: dict[str, str] = {}

    def start_worker() -> None:
        nonlocal restarts
        wid = aemp.spawn(node.id, "workers:squarer", f"worker-{restarts + 2}")
        current["id"] = wid
        aemp.mon(wid, on_death)

    def on_death(*reason: object) -> None:
        nonlocal restarts
        if not reason:
            say("supervisor: worker exited normally, not restarting it")
            return
        restarts += 1
        say(f"supervisor: worker died {reason}, restarting (restart #{restarts})")
        start_worker()

    start_worker()
    for x in (3, -2, 4, -5, 6):
        try:
            (r, who) = await aemp.cal(current["id"], "square", x, timeout=5)
            say(f"square({x}) = {r} from {who}")
        except aemp.PortDead:
            say(f"square({x}) lost its worker; the supervisor has already started a new one")
        await asyncio.sleep(0)

    # 5. a clean stop: a normal kill gives an empty reason
    last = current["id"]
    stopped = asyncio.get_running_loop().create_future()
    aemp.mon(last, lambda *reason: stopped.set_result(reason))
    aemp.kil(last)
    say(f"killed {last} normally, monitor reason: {await stopped} (empty means normal)")
    await node.close()
    say("node closed, bye")


if __name__ == "__main__":
    aemp.run(main())
