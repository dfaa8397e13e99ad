"""mailbox: messages taken with Mailbox.receive, next to a plain rcv callback.

The same sender as `local` (batches of 1,000 ``("ping", i, "x" * 32)`` and a
message to itself for the next batch) feeds, on one node, either a port
whose tagged callback counts them (the reference: plain rcv, measured in
the same run) or a Mailbox whose coroutine takes them with
``await box.receive("ping")``. A third figure interleaves two tags and
receives them alternately, so that every other receive skips a kept
message of the other tag.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aemp
from aemp.mailbox import Mailbox

BATCH = 1000
LIMIT_S = 30.0


async def _rate(n: int, kind: str) -> float:
    async with aemp.Node() as node:
        done = node.loop.create_future()

        if kind == "rcv":
            count = 0

            def got(*_: Any) -> None:
                nonlocal count
                count += 1
                if count == n:
                    done.set_result(None)

            target = node.port(ping=got)
        else:
            box = Mailbox(node=node)
            target = box.port

            async def take() -> None:
                receive = box.receive
                if kind == "mailbox":
                    for _ in range(n):
                        await receive("ping")
                else:
                    for _ in range(n // 2):
                        await receive("pong")
                        await receive("ping")
                done.set_result(None)

            box.run(take())
        sent = 0
        deadline = time.monotonic() + LIMIT_S
        tags = ("ping", "pong") if kind == "interleaved" else ("ping", "ping")

        def go() -> None:
            nonlocal sent
            snd = aemp.snd
            x = "x" * 32
            for i in range(sent, sent + BATCH):
                snd(target, tags[i & 1], i, x)
            sent += BATCH
            if sent < n and time.monotonic() < deadline:
                snd(sender, "go")

        sender = node.port(go=go)
        t0 = time.perf_counter()
        node.snd(sender, "go")
        await asyncio.wait_for(done, LIMIT_S + 5)
        return n / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 100_000 if quick else 1_000_000
    repeats = 1 if quick else 3
    kinds = ("rcv", "mailbox", "interleaved")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(repeats):  # taken in turn, so that the machine's load hits each alike
        for kind in kinds:
            rates[kind].append(aemp.run(_rate(n, kind)))
    ref = max(rates["rcv"])
    out = []
    for kind in kinds[1:]:
        value = max(rates[kind])
        out.append(
            {
                "bench": "mailbox_interleaved" if kind == "interleaved" else "mailbox_receive",
                "value": round(value),
                "unit": "msgs/s",
                "reference": "plain rcv (tagged callback), same sender",
                "reference_value": round(ref),
                "ratio": round(value / ref, 3),
            }
        )
    return out
