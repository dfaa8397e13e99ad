"""Functions the spawn tests start on a node (imported by name, as spawn does)."""

from __future__ import annotations

import asyncio
from typing import Any

import aemp

events: list[Any] = []


def echo_init(tag: str) -> None:
    me = aemp.SELF.get()
    events.append(("init", me, tag))
    aemp.rcv(me, echo=lambda *a: aemp.snd(a[-1], tag, *a[:-1]))


async def slow_init(tag: str) -> None:
    me = aemp.SELF.get()
    await asyncio.sleep(0.01)
    aemp.rcv(me, echo=lambda *a: aemp.snd(a[-1], tag, *a[:-1]))


def failing_init() -> None:
    raise ValueError("init failed")


class Holder:
    @staticmethod
    def init() -> None:
        aemp.rcv(aemp.SELF.get(), ping=lambda reply: aemp.snd(reply, "pong"))


not_callable = 42
