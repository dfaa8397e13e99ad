# The node kernel: Kernel, composed of its parts, with its lifecycle.
#
# Kernel is everything of a node but its network and the layers above it
# (aemp.Node adds those, in aemp/_node.py). Its parts, one job and one
# module each, share the state declared in _state.py:
#
#   _ports.py     the port table: port, rcv, gated ports, reply ports
#   _dispatch.py  sending, the run queue and the three copies of the
#                 dispatch, side by side (the hot paths; make_snd too)
#   _context.py   port context and the callback-failure policy, async
#                 callbacks, node-owned tasks and timers
#   _monitors.py  kil and mon
#   _links.py     other nodes: the remote-node table, link events, back-off
#   _requests.py  the node requests: the open registry and the core ones
#
# Here are only what concerns all of them: building the state, close()
# (which ends every part in order) and statistics().
#
# What the kernel offers the layers above it (aemp/_call.py, _spawn.py,
# the database, aemp.lowlevel) are its methods without a leading
# underscore; the rest is its own. It never imports the network: it talks
# to it through the Protocols of aemp/_seam.py (it is the LinkOwner of its
# links, and dials through a Connector).
#
# May import the leaves, aemp/_seam.py and every module of the kernel.

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from .._seam import Connector
from ._context import Context
from ._dispatch import MAX_ROUTES as MAX_ROUTES  # tests read it here
from ._dispatch import Dispatch
from ._links import Links
from ._monitors import Monitors
from ._port import DEAD
from ._ports import Ports
from ._requests import CORE_REQUESTS, Requests

log = logging.getLogger("aemp.node")


class Kernel(Ports, Dispatch, Context, Monitors, Links, Requests):
    """A node's kernel: everything of a node but its network and the layers above.

    aemp.Node is a Kernel with a network, a database, spawn and cal.
    """

    def __init__(self, nodeid: str, monitor_timeout: float, queue_limit: int = 10_000) -> None:
        super().__init__(nodeid, monitor_timeout, queue_limit)
        for tag, fn in CORE_REQUESTS.items():
            self._requests[tag] = functools.partial(fn, self)

    # ---------------------------------------------------------------- lifecycle

    def set_connector(self, connector: Connector | None) -> None:
        """Dial other nodes through `connector` (None: no network, nobody is reachable)."""
        self._connector = connector

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call fn() when the node closes, after its timers stopped and before its ports die."""
        self._closers.append(fn)

    async def close(self) -> None:
        """Stop the kernel: every port dies silently, every task and timer ends."""
        self.closed = True
        if self._down:
            return
        self._down = True
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        self._queue.clear()
        self._inbound = self._backlogged = 0
        waiters, self._load_waiters = self._load_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)  # drain() never hangs on a closed node
        for timer in list(self._timers):
            timer.cancel()
        for fn in self._closers:
            try:
                fn()
            except Exception:
                log.exception("node %s: closing %r failed", self.id, fn)
        for p in self._ports.values():
            p.gate = DEAD
            p.monitors = None
        self._ports.clear()
        self._by_name.clear()
        self._routes.clear()
        self._node_monitors.clear()
        self._node_watchers.clear()
        self._remotes.clear()
        me = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # ---------------------------------------------------------------- statistics

    def statistics(self) -> dict[str, Any]:
        """Counts of the kernel's state (see aemp.lowlevel.statistics)."""
        return {
            "ports": len(self._ports),
            "queued": len(self._queue),
            "backlog": sum(len(p.backlog) for p in self._ports.values() if p.backlog),
            "inbound": self._inbound,
            "held": self._held,
            "reading_paused": self._reading_paused,
            "tasks": len(self._tasks),
            "timers": len(self._timers),
            "routes": len(self._routes),
            "remotes": {r.id: r.state.value for r in self._remotes.values()},
            "unreachable": len(self._unreachable),
            "backoffs": len(self._connect_waits),
        }
