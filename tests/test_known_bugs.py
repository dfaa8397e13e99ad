"""Bugs found while writing the tutorial, kept as tests until they are fixed.

Each test is marked xfail(strict=True): it fails today, and the suite says so
the day it passes, so that the marker is removed together with the bug.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import Recorder

import aemp
from tests.test_db import free_port

SPAWN = "AnyEvent::MP::_spawn"


@pytest.mark.xfail(
    strict=True,
    reason="aemp/_node.py _receive: a message to a missing port is dropped at once, but the "
    "mon1 before it waits for the run queue; a spawn in between makes mon1 succeed, so the "
    "message is lost and no monitor ever fires (a silent hole)",
)
async def test_mon1_and_message_to_a_port_not_there_yet() -> None:
    """[mon1 X] [X msg] arrive, then X is spawned: the message cannot be delivered,
    so the mon1 before it must answer no_such_port (as the Perl node does, which
    handles both in arrival order). Seen in eg/supervisor.py: a cal to a worker
    that a supervisor had just spawned on a third node hung until its timeout
    instead of failing at once."""
    addr = f"127.0.0.1:{free_port()}"
    async with (
        aemp.Node(nodeid="b", binds=[addr], secret="s") as b,
        aemp.Node(nodeid="a", seeds=[addr], secret="s") as a,
    ):
        assert await a.cal("b", "time", timeout=5)  # connected both ways
        name = next(a._spawn_names).partition("#")[2]  # a name nobody has used
        port = f"b#{name}"
        died = Recorder()
        a.mon(port, died)
        replies = Recorder()
        reply = a.port(replies)
        # what b receives, in one batch: a's mon1 and message for port X, and
        # (from a third node, say) the spawn that creates X
        batch = [
            ["", "mon1", name],
            [name, "echo", "hello", reply],
            ["", SPAWN, name, "spawn_targets:echo_init", "T"],
        ]
        b._receive(b._remotes["a"], batch)
        async with asyncio.timeout(2):
            while not died.calls and not replies.calls:
                await asyncio.sleep(0.01)
