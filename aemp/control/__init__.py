"""aemp.control: the control socket of the nodes on this host.

A node started with the ``control`` key (``aemp run`` sets it) listens on
a unix socket in a private per-user runtime directory, named after its
node ID; the ``aemp`` command (``aemp ps``, ``status``, ``ports``,
``stop``, and ``nodes``, ``db``, ``trace`` through the local node) and any
program of the same user talk to it there in JSON lines, without the
network's secret. docs/control.md describes the directory, the checks
and the protocol.

    server = await aemp.control.serve(node)       # a Node made directly
    async with await aemp.control.connect("seed") as c:
        print(await c.request("status"))
"""

from __future__ import annotations

from ._client import Client, connect, local_nodes
from ._paths import ControlError, clean_stale, runtime_dir, socket_files, socket_path
from ._server import MAX_LINE, PROTOCOL, ControlServer, serve

__all__ = [
    "MAX_LINE",
    "PROTOCOL",
    "Client",
    "ControlError",
    "ControlServer",
    "clean_stale",
    "connect",
    "local_nodes",
    "runtime_dir",
    "serve",
    "socket_files",
    "socket_path",
    "start",
]


async def start() -> None:
    """The service the ``control`` key starts: serve() for the node being configured."""
    from .._runtime import CURRENT

    node = CURRENT.get()
    if node is None:  # pragma: no cover - configure() sets it
        raise ControlError("aemp.control.start runs as a service of a node being configured")
    await serve(node)
