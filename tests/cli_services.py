"""Services the configuration tests and the aemp command tests start on a node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aemp

started: list[Any] = []


def record(*args: Any) -> None:
    """Note which node it ran on, and with what."""
    started.append(("record", aemp.NODE(), args))


async def record_async(tag: str) -> None:
    await asyncio.sleep(0.01)
    started.append(("record_async", aemp.NODE(), tag))


def fail() -> None:
    raise RuntimeError("this service refuses to start")


def echo_service(path: str) -> None:
    """A port that answers ("echo", *args, reply) with args and dies on ("quit", *reason).

    Its port ID goes into the file `path`, for the test to read.
    """

    def quit(*reason: Any) -> None:
        aemp.kil(me, *reason)

    me = aemp.port(echo=lambda *a: aemp.snd(a[-1], *a[:-1]), quit=quit)
    tmp = Path(path + ".tmp")
    tmp.write_text(me)
    tmp.rename(path)


def adder_service(family: str) -> None:
    """A port that answers ("add", a, b, reply) with a + b, registered in the database
    family `family` with its node ID as the value."""
    me = aemp.port(add=lambda a, b, reply: aemp.snd(reply, a + b))
    aemp.db_reg(family, me, aemp.NODE())


def calc_service(path: str) -> None:
    """A service port (aemp.service) that answers ("add", a, b, reply) with a + b:
    a malformed request gets an error reply, and the port lives on. Its port
    ID goes into the file `path`."""
    from aemp.service import service

    me = service(add=lambda a, b: a + b)
    tmp = Path(path + ".tmp")
    tmp.write_text(me)
    tmp.rename(path)
