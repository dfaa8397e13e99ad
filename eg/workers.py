"""Worker ports for the demo: spawned by name ("workers:squarer") on a node."""

from __future__ import annotations

import aemp


def squarer(name: str) -> None:
    """Answer ("square", x, reply) with x*x; a negative x crashes the worker."""
    me = aemp.SELF.get()
    assert me is not None

    def square(x: int, reply: str) -> None:
        if x < 0:
            raise ValueError(f"{name} refuses negative numbers like {x}")
        aemp.snd(reply, x * x, name)

    aemp.rcv(me, square=square)
