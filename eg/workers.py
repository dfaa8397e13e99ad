"""The other processes of the demo: a seed node and worker nodes.

eg/demo.py runs this file once per node, in a process of its own::

    python eg/workers.py seed 127.0.0.1:PORT       # the seed, listening there
    python eg/workers.py worker-1 127.0.0.1:PORT   # a worker that joins through it

with the network's secret in the environment variable AEMP_DEMO_SECRET
(the environment, unlike the command line, is private to the user). Each
prints "ready" once it is up and serves until SIGTERM, or until its
standard input closes, which happens when the demo ends or dies.

A worker registers one port in the database family "workers"; that port
answers ("whoami", reply) with the worker's name and process ID. The
demo also spawns ``workers:squarer`` ports on the workers by name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import aemp


def squarer(name: str) -> None:
    """A spawned port: ("square", x, reply) -> x*x; a negative x crashes it."""
    me = aemp.SELF.get()
    assert me is not None
    print(f"started {name} as port {me}", flush=True)

    def square(x: int, reply: str) -> None:
        if x < 0:
            raise ValueError(f"{name} refuses negative numbers like {x}")
        aemp.snd(reply, x * x, f"{name} in process {os.getpid()}")

    aemp.rcv(me, square=square)


async def serve(name: str, seed: str) -> None:
    keys: dict[str, Any] = {"nodeid": name, "secret": os.environ["AEMP_DEMO_SECRET"]}
    if name == "seed":
        # a node with no seeds of its own is a global node: it holds the database
        node = await aemp.configure(norc=True, binds=[seed], **keys)
    else:
        # a worker listens on any free port; other nodes may spawn one function
        # here (this file runs as __main__, so the entry lets them import it)
        node = await aemp.configure(
            norc=True,
            binds=["127.0.0.1:0"],
            seeds=[seed],
            spawn_allow=["workers:squarer"],
            **keys,
        )
        info = aemp.port(whoami=lambda reply: aemp.snd(reply, name, os.getpid()))
        aemp.db_reg("workers", info, {"pid": os.getpid()})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # nobody writes: readable means closed
    print("ready", flush=True)
    await stop.wait()
    await node.close()


if __name__ == "__main__":
    aemp.run(serve(*sys.argv[1:3]))
