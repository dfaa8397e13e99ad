"""A service for `aemp run`: a port that adds, registered in the database.

docs/cli.md runs it as the worker profile's service
``["adder:start", "jobs"]`` (with ``eg/`` on ``PYTHONPATH``). Any node can
then find the port with ``aemp db jobs`` or ``db_keys("jobs")`` and call
it: ``aemp cal PORT add 2 3`` prints ``[5]``. Another node may also spawn
it on a node that can import this module: ``aemp spawn seed adder:start jobs``.
"""

from __future__ import annotations

import aemp


@aemp.spawnable  # `aemp spawn NODE adder:start FAMILY` may start it too
def start(family: str = "adder") -> None:
    """Answer ("add", a, b, reply) with a + b; list the port in `family` while it lives."""

    def add(a: float, b: float, reply: str) -> None:
        aemp.snd(reply, a + b)

    me = aemp.port(add=add)
    aemp.db_reg(family, me, aemp.NODE())  # the entry goes when the port or its node does
