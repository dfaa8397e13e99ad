# Other nodes: the remote-node table, link events, and the back-off for
# nodes that could not be reached.
#
# Each node this one talks to has a Remote (_remote.py: its link, the
# packets waiting for one, the monitors of its ports), made on first use
# and forgotten when idle again. The network tells of links through the
# LinkOwner methods of aemp/_seam.py that are the kernel's (inbox,
# link_up, link_lost, unreachable); the kernel dials through a Connector.
# A link that comes up or is lost is told to the mon_nodes callbacks and
# then to the on_link subscribers (the database among them).
#
# A node that could not be reached (no known address, or no connection
# within connect_interval) is not tried again at once: the next attempt
# waits BACKOFF_FIRST after the failure, doubling with each failure in a
# row up to BACKOFF_MAX (and at most half of monitor_timeout, so that
# guarantee 3 holds). Packets and monitors wait meanwhile; the monitors
# fire when that attempt fails. A monitor re-armed from its own callback
# thus costs a lookup a second, not one per run-queue turn. A connection
# from the node, or a failure longer than BACKOFF_FORGET ago, starts over.
# The first failure of a run is logged (INFO), the others not: a node that
# stays unreachable is one line until it is reached again.
#
# May import the leaves, aemp/_seam.py and, of the kernel, _state.py,
# _handles.py and _remote.py.

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._runtime import SELF
from .._seam import Link
from ._handles import NodeWatch, Timer
from ._remote import Remote, State
from ._state import Callback, KernelState, check_callback

BACKOFF_FIRST = 0.05  # seconds
BACKOFF_MAX = 1.0  # seconds
BACKOFF_FORGET = 30.0  # seconds
MAX_UNREACHABLE = 4096  # nodes remembered as unreachable; the oldest go first

log = logging.getLogger("aemp.node")


class Links(KernelState):
    """Other nodes and the links to them (a part of Kernel)."""

    def _remote(self, nodeid: str) -> Remote:
        remote = self._remotes.get(nodeid)
        if remote is None:
            remote = self._remotes[nodeid] = Remote(self, nodeid, self._connect_remote)
        return remote

    def connect(self, nodeid: str) -> None:
        """Start connecting to `nodeid` unless connected or connecting already."""
        self._remote(nodeid).start_connect()

    def _forget_remote(self, remote: Remote) -> None:
        """Drop an IDLE Remote that nothing waits on (see _remote.py)."""
        if self._remotes.get(remote.id) is not remote:
            return
        del self._remotes[remote.id]
        if self._connector is not None:
            self._connector.forget(remote.id)
        for name in remote.watched:  # mon1 that came in while its loss was reported
            p = self._by_name.get(name)
            if p is not None and p.watchers is not None:
                p.watchers.discard(remote.id)
        remote.watched = set()
        routes = self._routes
        for port in [port for port, route in routes.items() if route[0] is remote]:
            del routes[port]

    def _connect_remote(self, remote: Remote) -> None:
        """Start an attempt to reach `remote`, or wait out its back-off first."""
        failed = self._unreachable.get(remote.id)
        if failed is not None:
            wait = failed[0] + failed[1] - self.loop.time()
            if wait > 0:
                timer = Timer(self, wait, lambda: self._connect_waited(remote))
                self._timers.add(timer)
                self._connect_waits[remote.id] = timer
                return
        self._connect_now(remote)

    def _connect_waited(self, remote: Remote) -> None:
        self._connect_waits.pop(remote.id, None)
        if remote.state is State.CONNECTING and remote.link is None:
            self._connect_now(remote)

    def _connect_now(self, remote: Remote) -> None:
        if self._connector is None:
            remote.lost("no known address")
        else:
            self._connector.connect(remote.id)

    def _backoff(self, nodeid: str, why: str) -> None:
        """An attempt to reach nodeid failed: the next one waits (see BACKOFF_FIRST)."""
        now = self.loop.time()
        cap = min(BACKOFF_MAX, self._monitor_timeout / 2)
        last = self._unreachable.pop(nodeid, None)
        if last is None:  # the first failure since it was last reached: said once
            log.info("node %s: cannot reach node %s: %s", self.id, nodeid, why)
        if last is None or now - last[0] > BACKOFF_FORGET:
            delay = min(BACKOFF_FIRST, cap)
        else:
            delay = min(last[1] * 2, cap)
        self._unreachable[nodeid] = (now, delay)
        if len(self._unreachable) > MAX_UNREACHABLE:
            del self._unreachable[next(iter(self._unreachable))]

    # ---------------------------------------------------------------- the LinkOwner methods

    def inbox(self, nodeid: str) -> Remote:
        """Where packets from `nodeid` go (its Remote), before or after its link is up."""
        return self._remote(nodeid)

    def link_up(self, nodeid: str, link: Link) -> None:
        """`link` is now the one connection to `nodeid`; queued packets go out on it."""
        self._unreachable.pop(nodeid, None)
        waiting = self._connect_waits.pop(nodeid, None)
        if waiting is not None:
            waiting.cancel()
        remote = self._remote(nodeid)
        if remote in self._paused:
            link.pause_reading()  # the node holds too much of what it sent: this link waits too
        remote.up(link)
        for w in list(self._node_watchers):
            w._notify(nodeid, True, ())
        for fn in list(self._link_watchers):
            fn(nodeid, True)

    def link_lost(self, nodeid: str, link: Link, reason: str) -> None:
        """`link` broke or was closed; nothing if it is not the node's link."""
        remote = self._remotes.get(nodeid)
        if remote is not None and remote.link is link:
            remote.lost(reason)

    def unreachable(self, nodeid: str, reason: str) -> None:
        """A connect request for `nodeid` ended without a link."""
        remote = self._remotes.get(nodeid)
        if remote is not None and remote.link is None:
            remote.lost(reason)

    def _remote_lost(self, remote: Remote, why: str, was_up: bool, watched: set[str]) -> None:
        waiting = self._connect_waits.pop(remote.id, None)
        if waiting is not None:
            waiting.cancel()
        if not was_up:
            self._backoff(remote.id, why)
        for name in watched:
            p = self._ports.get(self._prefix + name)
            if p is not None and p.watchers is not None:
                p.watchers.discard(remote.id)
        if was_up:
            reason = ("transport_error", remote.id, why)
            for w in list(self._node_watchers):
                w._notify(remote.id, False, reason)
            for fn in list(self._link_watchers):
                fn(remote.id, False)

    # ---------------------------------------------------------------- who is up

    def link(self, nodeid: str) -> Link | None:
        """The live link to `nodeid`, None without one."""
        remote = self._remotes.get(nodeid)
        return remote.link if remote is not None else None

    def node_info(self, nodeid: str) -> dict[str, Any] | None:
        """What the kernel keeps about another node (None: nothing).

        ``state``: "idle", "connecting", "up", "firing" (None: no state kept,
        only a failed attempt remembered); ``monitors``: {port name: local
        monitors} for every port of it this node subscribed to ("" is the
        node itself; 0 is a subscription kept idle); ``routes``: cached
        routes to its ports; ``backoff``: seconds the next attempt to reach
        it waits after the last failure (None: no failure remembered);
        ``waiting``: an attempt waits out that back-off now.
        """
        remote = self._remotes.get(nodeid)
        failed = self._unreachable.get(nodeid)
        if remote is None and failed is None:
            return None
        return {
            "state": remote.state.value if remote is not None else None,
            "monitors": {n: len(m) for n, m in remote.monitors.items()} if remote else {},
            "routes": sum(1 for r, _ in self._routes.values() if r is remote),
            "backoff": failed[1] if failed is not None else None,
            "waiting": nodeid in self._connect_waits,
        }

    def up_nodes(self) -> list[str]:
        """The IDs of the nodes this node is connected to now."""
        return [r.id for r in self._remotes.values() if r.link is not None]

    def node_is_up(self, nodeid: str) -> bool:
        """True if this node has a live connection to `nodeid` (or it is this node)."""
        if nodeid == self.id:
            return True
        r = self._remotes.get(nodeid)
        return r is not None and r.link is not None

    def mon_nodes(self, cb: Callback) -> NodeWatch:
        """Call cb(nodeid, True) when a node connects, cb(nodeid, False, *reason) when lost."""
        self.check_open()
        w = NodeWatch(self, check_callback("mon_nodes callback", cb), SELF.get())
        self._node_watchers[w] = None
        return w

    def on_link(self, fn: Callable[[str, bool], None]) -> Callable[[], None]:
        """Call fn(nodeid, up) at once whenever a link to a node comes up or
        is lost, after the mon_nodes callbacks; returns what unsubscribes."""
        self._link_watchers[fn] = None

        def unsubscribe() -> None:
            self._link_watchers.pop(fn, None)

        return unsubscribe
