"""Functions the spawn tests start on a node (imported by name, as spawn does).

Marked @aemp.spawnable so that other nodes may start them too, except
`unmarked`, which only this node's own code (or a spawn_allow entry) may.
"""

from __future__ import annotations

import asyncio
import os  # for the tests that try to reach os.system through this module
from typing import Any

import aemp

events: list[Any] = []


@aemp.spawnable
def echo_init(tag: str) -> None:
    me = aemp.SELF.get()
    events.append(("init", me, tag))
    aemp.rcv(me, echo=lambda *a: aemp.snd(a[-1], tag, *a[:-1]))


@aemp.spawnable
async def slow_init(tag: str) -> None:
    me = aemp.SELF.get()
    await asyncio.sleep(0.01)
    aemp.rcv(me, echo=lambda *a: aemp.snd(a[-1], tag, *a[:-1]))


@aemp.spawnable
def failing_init() -> None:
    raise ValueError("init failed")


@aemp.spawnable
async def slow_failing_init() -> None:
    await asyncio.sleep(0)
    raise ValueError("async init failed")


def unmarked(path: str) -> None:
    events.append(("unmarked ran", path))
    aemp.kil(aemp.SELF.get())  # done: the spawner's monitor learns it ran


class Holder:
    @staticmethod
    @aemp.spawnable
    def init() -> None:
        aemp.rcv(aemp.SELF.get(), ping=lambda reply: aemp.snd(reply, "pong"))

    @aemp.spawnable
    @classmethod
    def make(cls, tag: str) -> None:
        aemp.rcv(aemp.SELF.get(), ping=lambda reply: aemp.snd(reply, "pong", cls.__name__, tag))


not_callable = 42
system = os.system  # a name of this module that is not its own function
