"""Functions the supervisor tests start as children (marked spawnable).

A child answers ("ping", reply) with ("pong", name, its node ID), dies
with ("die", "RuntimeError: ...") on ("crash",) and ends normally on
("quit",).
"""

from __future__ import annotations

from typing import Any

import aemp


@aemp.spawnable
def worker(name: str, family: str | None = None) -> None:
    """A child; with a family, registered there once it runs (db_reg)."""
    me = aemp.SELF.get()
    assert me is not None
    if family is not None:
        aemp.db_reg(family, me, name)

    def crash() -> None:
        raise RuntimeError(f"{name} was asked to crash")

    aemp.rcv(
        me,
        ping=lambda reply: aemp.snd(reply, "pong", name, aemp.NODE()),
        crash=crash,
        quit=lambda: aemp.kil(me),
    )


@aemp.spawnable
def failing(name: str) -> Any:
    raise ValueError(f"{name} fails in its init")


def unmarked(name: str) -> None:
    """Not spawnable: another node refuses it."""
    worker(name)
