"""local: snd -> rcv delivery on one node, against a bare dict-dispatch loop.

A sender port sends batches of 1,000 messages ``("ping", i, "x" * 32)`` and
then a message to itself to send the next batch, so the run queue stays
short as it does in a real program. The receiver counts in a tagged
callback (``rcv(p, ping=cb)``) or in a default callback. The reference does
the same per message without aemp: build the tuple, look the handler up in
a dict, call it with the rest of the message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aemp

BATCH = 1000
LIMIT_S = 30.0


async def _aemp_rate(n: int, tagged: bool) -> float:
    async with aemp.Node() as node:
        done = node.loop.create_future()
        count = 0

        def got(*_: Any) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set_result(None)

        rcv = node.port(ping=got) if tagged else node.port(got)
        sent = 0
        deadline = time.monotonic() + LIMIT_S

        def go() -> None:
            nonlocal sent
            snd = aemp.snd
            x = "x" * 32
            for i in range(sent, sent + BATCH):
                snd(rcv, "ping", i, x)
            sent += BATCH
            if sent < n and time.monotonic() < deadline:
                snd(sender, "go")

        sender = node.port(go=go)
        t0 = time.perf_counter()
        node.snd(sender, "go")
        await asyncio.wait_for(done, LIMIT_S + 5)
        return n / (time.perf_counter() - t0)


def _reference_rate(n: int) -> float:
    count = 0

    def got(*_: Any) -> None:
        nonlocal count
        count += 1

    handlers = {"ping": got}
    x = "x" * 32
    t0 = time.perf_counter()
    for i in range(n):
        msg = ("ping", i, x)
        handlers[msg[0]](*msg[1:])
    return n / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 100_000 if quick else 1_000_000
    repeats = 1 if quick else 3
    ref = max(_reference_rate(n) for _ in range(repeats))
    out = []
    for tagged in (True, False):
        value = max(aemp.run(_aemp_rate(n, tagged)) for _ in range(repeats))
        out.append(
            {
                "bench": "local_tagged" if tagged else "local_default",
                "value": round(value),
                "unit": "msgs/s",
                "reference": "dict lookup + function call",
                "reference_value": round(ref),
                "ratio": round(value / ref, 3),
            }
        )
    return out
