# Kill and monitor: kil, mon and what they undo.
#
# A kill takes effect at once (the port leaves the table, later sends are
# dropped, an async callback still running is cancelled) but its monitors
# fire from the run queue, behind every message sent before the kill.
# Other nodes that watch the port (mon1, see _requests.py) hear of it with
# kil0 on their link. A monitor of a port on another node lives in that
# node's Remote (_remote.py), which fires it on kil0 or on loss of the
# link; a monitor of this node itself never fires (it never becomes
# unreachable to itself).
#
# May import the leaves and, of the kernel, _state.py, _port.py and
# _handles.py.

from __future__ import annotations

from typing import Any, overload

from .._errors import InvalidArgument, InvalidID
from .._ids import check_port_id
from .._message import check_message
from .._runtime import SELF, MonCallback
from ._handles import MON_CALL, MON_KILL, MON_SEND, Monitor
from ._port import DEAD, Port
from ._state import Callback, KernelState, check_callback


class Monitors(KernelState):
    """Kill and monitor (a part of Kernel)."""

    def kil(self, port: str, *reason: Any) -> None:
        """Kill a port: no reason is a normal exit, any reason an abnormal one."""
        p = self._ports.get(port)
        if p is None:
            self.check_open()
            check_port_id(port)
            node, _, name = port.partition("#")
            if not name:
                raise InvalidID(f"kil needs a port ID 'node#name', got the node port {port!r}")
            if reason:
                check_message(reason)
            if node != self.id:
                self._remote(node).send(["", "kil1", name, *reason])
            return
        if reason:
            check_message(reason)
        self._kill(p, reason)

    def _kill(self, p: Port, reason: tuple[Any, ...]) -> None:
        if p.gate is DEAD:
            return
        p.gate = DEAD
        if p.backlog:
            self._backlogged -= len(p.backlog)
            if self._reading_paused:
                self.post(self._unload)  # no _drain may come: look at the load from the queue
        p.backlog = None
        p.tags = p.default = None
        del self._ports[p.id]
        del self._by_name[p.id[self._prefix_len :]]
        if p.task is not None:
            p.task.cancel()
        if p.monitors:
            self.post(self._fire, tuple(p.monitors), tuple(reason))
        p.monitors = None
        if p.watchers:
            name = p.id[self._prefix_len :]
            for nodeid in p.watchers:
                remote = self._remotes.get(nodeid)
                if remote is not None and remote.link is not None:
                    remote.watched.discard(name)
                    remote.link.send(["", "kil0", name, *reason])
            p.watchers = None

    def _fire(self, monitors: tuple[Monitor, ...], reason: tuple[Any, ...]) -> None:
        for m in monitors:
            m._fire(reason)

    @overload
    def mon(self, port: str, /) -> Monitor: ...
    @overload
    def mon(self, port: str, cb: MonCallback, /) -> Monitor: ...
    @overload
    def mon(self, port: str, other: str, /, *msg: Any) -> Monitor: ...

    def mon(self, port: str, *action: Any) -> Monitor:
        """Watch a port; act once when it dies (see docs/api.md for the forms).

        ``mon(port, cb)`` calls ``cb(*reason)``; ``mon(port, other)`` kills the
        port ``other`` with the reason on abnormal death; ``mon(port)`` does
        that to SELF; ``mon(port, rcv_port, *msg)`` sends ``(*msg, *reason)``.
        """
        self.check_open()
        check_port_id(port)
        owner = SELF.get()
        if not action:
            if owner is None:
                raise InvalidArgument(
                    f"mon({port!r}) without a callback or port kills SELF on death, but no port "
                    "callback is running: pass a callback or a port to kill"
                )
            kind, args = MON_KILL, (owner,)
        elif callable(action[0]):
            if len(action) > 1:
                raise InvalidArgument("mon(port, callback) takes no further arguments")
            kind, args = MON_CALL, action
        elif isinstance(action[0], str):
            check_port_id(action[0])
            if len(action) > 1:
                check_message(action[1:])
                kind, args = MON_SEND, action
            else:
                kind, args = MON_KILL, action
        else:
            raise InvalidArgument(
                f"mon: second argument must be a callback or a port ID (got {action[0]!r})"
            )
        m = Monitor(self, port, kind, args, owner)
        p = self._ports.get(port)
        if p is not None:
            if p.monitors is None:
                p.monitors = {}
            p.monitors[m] = None
            return m
        node, _, name = port.partition("#")
        if node == self.id:
            if name:
                reason = ("no_such_port", "cannot monitor nonexistent port", port)
                self.post(self._fire, (m,), reason)
            else:
                self._node_monitors[m] = None  # this node never becomes unreachable to itself
        else:
            self._remote(node).monitor(name, m)
        return m

    def mon_name(self, nodeid: str, name: str, cb: Callback) -> Monitor:
        """mon(f"{nodeid}#{name}", cb) without checking the name: the mon1
        that a peer may send with any name (for tests of a node's answers)."""
        self.check_open()
        m = Monitor(self, f"{nodeid}#{name}", MON_CALL, (check_callback("mon_name", cb),), None)
        self._remote(nodeid).monitor(name, m)
        return m

    def _unmonitor(self, m: Monitor) -> None:
        p = self._ports.get(m.port)
        if p is not None:
            if p.monitors is not None:
                p.monitors.pop(m, None)
            return
        node, _, name = m.port.partition("#")
        if node == self.id:
            self._node_monitors.pop(m, None)
        else:
            remote = self._remotes.get(node)
            if remote is not None:
                remote.unmonitor(name, m)

    def mon_guard(self, port: str, *objs: Any) -> Monitor:
        """Keep objs alive until the port dies (or the handle is cancelled)."""
        return self.mon(port, lambda *reason: objs)

    def dead_port_reason(self, name: str, nodeid: str) -> tuple[Any, ...] | None:
        """Why this node's port `name` is gone, told to `nodeid` that monitors it
        (None: the usual no_such_port). aemp.Node says why a spawn failed."""
        return None
