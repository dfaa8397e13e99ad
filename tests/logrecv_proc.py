"""A node in its own process for the log catcher and mailbox tests.

``python tests/logrecv_proc.py NODEID BIND SECRET SEEDS`` starts a node that
forwards its log (aemp.logcatch.forward) and has a port "talk": ("log",
level, text) logs text on the logger "proc" at that level, ("crash", text)
logs an exception. It loads the spawnable mailbox coroutine `box_echo`.
It prints {"listener": ..., "talk": ...} as one JSON line and serves until
stdin closes or it is killed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import aemp
from aemp.logcatch import forward
from aemp.mailbox import Mailbox, receiving

log = logging.getLogger("proc")


@aemp.spawnable
@receiving
async def box_echo(box: Mailbox) -> None:
    """("get", tag, reply): answers with the next message tagged `tag`, in order."""
    while True:
        _, tag, reply = await box.receive("get")
        aemp.snd(reply, *await box.receive(tag))


def talk(*msg: object) -> None:
    if msg[0] == "log":
        log.log(int(msg[1]), "%s", msg[2])  # type: ignore[call-overload]
    elif msg[0] == "crash":
        try:
            raise RuntimeError(str(msg[1]))
        except RuntimeError:
            log.exception("it broke")


async def main(nodeid: str, bind: str, secret: str, seeds: str) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    async with aemp.Node(
        nodeid=nodeid, binds=[bind], secret=secret, seeds=json.loads(seeds), monitor_timeout=5
    ) as node:
        forward(node=node)
        port = node.port(talk)
        print(json.dumps({"listener": node.listeners[0], "talk": port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    aemp.run(main(*sys.argv[1:5]))
