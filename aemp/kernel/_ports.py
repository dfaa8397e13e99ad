# The port table: making ports, setting their callbacks (rcv), gated ports
# and their release, the reply ports of cal, and dropping a port nobody
# watches.
#
# A port lives in two dicts of the node (KernelState): by its full ID for
# sends from this node, by its name alone for packets from other nodes
# (they carry only the name). A gated port (gated_port) waits from its
# birth until release(): its messages queue in its backlog, as those of a
# port whose async callback runs do; spawn runs its init so. Killing is
# _monitors.py's; delivering is _dispatch.py's.
#
# May import the leaves and, of the kernel, _state.py and _port.py.

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Mapping
from typing import Any

from .._errors import InvalidArgument, NotLocalPort, PortDead
from .._ids import check_port_id
from .._runtime import SELF
from ._port import BUSY, DEAD, Port
from ._state import Callback, KernelState, check_callback


class _Keep:
    """rcv's marker for "leave the default callback as it is"."""


_KEEP = _Keep()


class Ports(KernelState):
    """The port table (a part of Kernel)."""

    def port(self, default: Callback | None = None, /, **tags: Callback) -> str:
        """Create a local port, optionally with callbacks as for rcv; return its ID."""
        self.check_open()
        pid = next(self._names)
        self._ports[pid] = self._by_name[pid[self._prefix_len :]] = Port(pid)
        if default is not None or tags:
            self.rcv(pid, default, **tags)
        return pid

    def rcv(
        self,
        port: str,
        default: Callback | Mapping[str, Callback | None] | _Keep | None = _KEEP,
        /,
        **tags: Callback | None,
    ) -> str:
        """Set a port's callbacks and return the port ID.

        ``rcv(port, cb)`` replaces the default callback, which gets the whole
        message; ``rcv(port, tag=cb)`` or ``rcv(port, {"any tag": cb})`` sets
        per-tag callbacks, called with the message minus its tag. ``None``
        removes the default callback or a tag.
        """
        p = self._local_port(port, "rcv")
        if isinstance(default, Mapping):
            tags = {**default, **tags}
        elif not isinstance(default, _Keep):
            p.default = None if default is None else check_callback("rcv callback", default)
        for tag, cb in tags.items():
            if not isinstance(tag, str):
                raise InvalidArgument(f"rcv tags must be str (got {tag!r}, a {type(tag).__name__})")
            if cb is None:
                if p.tags is not None:
                    p.tags.pop(tag, None)
            else:
                if p.tags is None:
                    p.tags = {}
                p.tags[tag] = check_callback(f"rcv callback for tag {tag!r}", cb)
        if p.tags is not None and not p.tags:
            p.tags = None
        return port

    def _local_port(self, port: str, what: str) -> Port:
        p = self._ports.get(port)
        if p is not None:
            return p
        self.check_open()
        check_port_id(port)
        node, _, name = port.partition("#")
        if node != self.id:
            raise NotLocalPort(
                f"{what} needs a port of this node ({self.id!r}), got {port!r} of node {node!r}"
            )
        if not name:
            raise NotLocalPort(f"{what} needs a port, got the node port {port!r}")
        raise PortDead(port, ("no_such_port", f"{what}: port is dead or never existed"))

    def port_is_local(self, port: str) -> bool:
        """True if the port (or node) ID belongs to this node."""
        check_port_id(port)
        return port.partition("#")[0] == self.id

    def port_alive(self, port: str) -> bool:
        """True if `port` is a live port of this node."""
        return port in self._ports

    def ports(self) -> list[str]:
        """The IDs of this node's live ports, oldest first."""
        return list(self._ports)

    def port_info(self, port: str) -> dict[str, Any] | None:
        """What the kernel holds for a live local port (None for any other):
        ``monitors``, the local monitors on it; ``watchers``, the other nodes
        that monitor it (sorted); ``backlog``, the messages waiting in it."""
        p = self._ports.get(port)
        if p is None:
            return None
        return {
            "monitors": len(p.monitors or ()),
            "watchers": sorted(p.watchers or ()),
            "backlog": len(p.backlog or ()),
        }

    def port_task(self, port: str) -> asyncio.Future[Any] | None:
        """The task running the async callback (or async init) of the live
        local port `port` now, None if none runs or for any other port."""
        p = self._ports.get(port)
        return p.task if p is not None else None

    def take_name(self, kind: str) -> str:
        """Take the next port ID of a kind ("local" or "reply") out of its
        counter: an ID this node will never give a port (for tests of names)."""
        if kind == "local":
            return next(self._names)
        if kind == "reply":
            return next(self._reply_names)
        raise ValueError(f"take_name: kind must be 'local' or 'reply' (got {kind!r})")

    def gated_port(self, port: str | None = None) -> str:
        """Create a port whose messages wait until release(port); return its ID.

        `port` is the ID to give it (a fresh one of this node if None).
        """
        self.check_open()
        if port is None:
            port = next(self._names)
        elif port in self._ports or port.partition("#")[0] != self.id:
            raise InvalidArgument(f"gated_port: {port!r} is taken or not a port ID of this node")
        p = Port(port)
        p.gate = BUSY
        p.backlog = deque()
        self._ports[port] = self._by_name[port[self._prefix_len :]] = p
        return port

    def release(self, port: str, fn: Callback | None = None, *args: Any) -> None:
        """Run fn(*args) in the gated port's context, then deliver what waited.

        If fn returns an awaitable, it runs as the port's task and the port
        stays gated until it ends; if fn raises, the port dies with
        ("die", ...). Nothing if the port is dead.
        """
        p = self._ports.get(port)
        if p is None or p.gate is not BUSY or p.task is not None:
            if p is not None and p.gate is None:
                raise InvalidArgument(f"release: port {port!r} is not gated")
            return
        if fn is not None:
            token = SELF.set(p.id)
            try:
                r = fn(*args)
                if r is not None and inspect.isawaitable(r):
                    self._start_async(p, r)
                    return
            except Exception as e:
                self._die(p, e)
                return
            finally:
                SELF.reset(token)
        if p.gate is not DEAD:  # fn may have ended its own port
            self._resume(p)

    def call_out(self, port: str, msg: tuple[Any, ...], cb: Callback) -> Port:
        """cal's start in one step: a fresh port with an unguessable name and
        default callback cb, made without port()'s checks (the node is known
        to be open), and msg plus its ID sent to `port`. If the send raises,
        the port is gone again."""
        pid = next(self._reply_names)
        p = self._ports[pid] = self._by_name[pid[self._prefix_len :]] = Port(pid)
        p.default = cb
        try:
            route = self._routes.get(port)  # send(), inlined for a cached route
            link = route[0].link if route is not None else None
            if link is not None:
                link.send_message(route[1], (*msg, pid))  # type: ignore[index]
            else:
                self.send(port, (*msg, pid))
        except BaseException:
            self.drop_port(p)
            raise
        return p

    def drop_port(self, p: Port) -> None:
        """Kill a port with no reason; quick for one nobody watches (a reply port)."""
        if p.monitors or p.watchers or p.gate is not None:
            self._kill(p, ())
        else:
            p.gate = DEAD
            p.default = None
            del self._ports[p.id]
            del self._by_name[p.id[self._prefix_len :]]
