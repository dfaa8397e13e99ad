# Sending, the run queue and the dispatch: the hot paths, side by side.
#
# Every local delivery goes through one FIFO run queue per node, drained by
# a callback the event loop schedules, so a handler never runs inside the
# stack of the code that sent to it (a port that sends to itself does not
# recurse) and messages from this node to a port arrive in the order sent.
# post() puts a call in the same queue (on the pseudo-port SYS), so the
# kernel's own steps, such as firing monitors, keep that order too.
#
# The dispatch. Speed matters here, so a message is delivered by one of
# three copies of the same steps, all in this module, side by side below:
# the loop body of _drain (messages from this node), the loop body of
# _receive (packets from another node, delivered at once when the run
# queue is empty) and _deliver (the slow path: a busy port's backlog).
# Each: SELF is the port; a str tag with a tag callback calls it with the
# rest, else the default callback gets the whole message, else the port
# dies with unhandled_message; an awaitable result runs as the port's task;
# an exception kills the port with ("die", ...). Everything unusual (dead,
# busy or system entries) takes the slow path through the port's `gate`.
# tests/test_kernel.py checks that the three agree; change them together.
# The send side has its copies here too, also to be changed together:
# Kernel.snd, Kernel.send and make_snd (aemp.snd); a send that none of
# them can finish at once (a port on a node not yet routed, a node
# request, a closed node) takes _send_slow. A cal's reply comes through
# these copies like any message, to its reply port's default callback
# (Call._on_reply in aemp/_call.py).
#
# May import the leaves and, of the kernel, _state.py, _port.py, _remote.py
# (for its type) and _requests.py (handle_node_request).

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._ids import check_port_id
from .._message import check_message
from .._runtime import CURRENT, SELF
from ._port import BUSY, RESUME, SYS, Port
from ._requests import handle_node_request
from ._state import KernelState

if TYPE_CHECKING:
    from ._remote import Remote

log = logging.getLogger("aemp.node")

_BUDGET = 2048  # deliveries per drain before the loop gets a turn
# Remote ports whose route is cached. Small on purpose: a server answers
# each call's reply port once, and a cache that stays in the CPU's cache
# made such a server 1.5 times faster than one of 100,000 entries.
MAX_ROUTES = 1024


class Dispatch(KernelState):
    """Sending, the run queue and the dispatch (a part of Kernel)."""

    # ---------------------------------------------------------------- sending

    def snd(self, port: str, *msg: Any) -> None:
        """Send a message; returns at once and never blocks."""
        # send, inlined: this is the hottest call in aemp
        p = self._ports.get(port)
        if p is not None and msg:
            check_message(msg)
            self._queue.append((p, msg))
            if self._drain_handle is None:
                self._drain_handle = self.loop.call_soon(self._drain)
            return
        route = self._routes.get(port)
        if route is not None and msg:
            link = route[0].link
            if link is not None:
                link.send_message(route[1], msg)  # the encoder checks the message
                return
        self._send_slow(port, msg)

    def send(self, port: str, msg: tuple[Any, ...]) -> None:
        """snd(port, *msg) with the message as a tuple."""
        p = self._ports.get(port)
        if p is not None and msg:
            check_message(msg)
            self._queue.append((p, msg))
            if self._drain_handle is None:
                self._drain_handle = self.loop.call_soon(self._drain)
            return
        route = self._routes.get(port)
        if route is not None and msg:
            link = route[0].link
            if link is not None:
                link.send_message(route[1], msg)  # the encoder checks the message
                return
        self._send_slow(port, msg)

    def _send_slow(self, port: str, msg: tuple[Any, ...]) -> None:
        if self.closed:
            self.check_open()
        check_port_id(port)
        node, _, name = port.partition("#")
        if node != self.id:
            remote = self._remotes.get(node) or self._remote(node)
            if name:
                routes = self._routes
                if len(routes) >= MAX_ROUTES:
                    routes.clear()  # reply ports pass through once; the hot ones return
                routes[port] = (remote, name)
            link = remote.link
            if link is not None and msg:
                link.send_message(name, msg)  # the encoder checks the message
            else:
                check_message(msg)
                remote.send([name, *msg])
            return
        check_message(msg)
        if not name:
            self.post(self._node_request, None, list(msg))
        # else: a dead local port; the message is dropped like any other to it

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) from the run queue, in FIFO order with the messages.

        An exception from fn is logged; it harms nothing else.
        """
        self._queue.append((self._sys, (fn, *args)))
        if self._drain_handle is None:
            self._drain_handle = self.loop.call_soon(self._drain)

    # ---------------------------------------------------------------- the dispatch

    def _drain(self) -> None:
        self._drain_handle = None
        q = self._queue
        CURRENT.set(self)
        set_self = SELF.set
        cur = None
        left = _BUDGET
        while q:
            p, msg = q.popleft()
            if p.gate is not None:
                self._gated(p, msg)
                cur = None
                continue
            if p is not cur:
                cur = p
                set_self(p.id)
            try:
                tags = p.tags
                cb = None
                if tags is not None:
                    tag = msg[0]
                    if type(tag) is str:
                        cb = tags.get(tag)
                if cb is not None:
                    r = cb(*msg[1:])
                else:
                    cb = p.default
                    if cb is None:
                        self._unhandled(p, msg)
                        continue
                    r = cb(*msg)
                if r is not None and inspect.isawaitable(r):
                    self._start_async(p, r)
            except Exception as e:
                self._die(p, e)
            left -= 1
            if not left:
                if q:
                    self._drain_handle = self.loop.call_soon(self._drain)
                return

    def _receive(self, remote: Remote, packets: Any, queued: bool = False) -> None:
        """Packets [portname, *message] from another node: messages to our
        ports and node requests (Remote.receive, the node's Inbox).

        The network calls this from the event loop, never from inside a
        callback. With the run queue empty the packets are delivered at
        once, each as it is decoded; else they wait behind what is queued,
        in one entry (run with queued=True), so that a node's packets never
        overtake each other. Node requests are handled in stream order.
        """
        if not queued:
            if self._queue:
                self.post(self._receive, remote, list(packets), True)
                return
            if CURRENT.get() is not self:  # the network's context is this node's
                CURRENT.set(self)
        ports = self._by_name
        set_self = SELF.set
        cur = None
        try:
            for pkt in packets:
                try:
                    tag = pkt[1]
                except IndexError:
                    continue  # [] and [name]: nothing to deliver (a keepalive at most)
                p = ports.get(pkt[0])
                if p is None:
                    if not pkt[0]:
                        set_self(None)
                        cur = None
                        try:
                            handle_node_request(self, remote, pkt[1:])
                        except Exception:
                            log.exception("node %s: node request %.60r failed", self.id, tag)
                    continue  # else: no such port; dropped as the protocol says
                if p.gate is not None:
                    self._gated(p, pkt[1:])  # the backlog takes the list's tail
                    continue
                if p is not cur:
                    cur = p
                    set_self(p.id)
                try:
                    tags = p.tags
                    cb = tags.get(tag) if tags is not None and type(tag) is str else None
                    if cb is not None:
                        r = cb(*pkt[2:])
                    else:
                        cb = p.default
                        if cb is None:
                            self._unhandled(p, pkt[1:])
                            continue
                        r = cb(*pkt[1:])
                    if r is not None and inspect.isawaitable(r):
                        self._start_async(p, r)
                except Exception as e:
                    self._die(p, e)
        finally:
            if cur is not None and not queued:
                set_self(None)

    def _deliver(self, p: Port, msg: tuple[Any, ...]) -> None:
        """The slow-path twin of the loop bodies of _drain and _receive."""
        try:
            cb = p.tags.get(msg[0]) if p.tags is not None and type(msg[0]) is str else None
            if cb is not None:
                r = cb(*msg[1:])
            elif p.default is not None:
                r = p.default(*msg)
            else:
                self._unhandled(p, msg)
                return
            if r is not None and inspect.isawaitable(r):
                self._start_async(p, r)
        except Exception as e:
            self._die(p, e)

    def _gated(self, p: Port, msg: tuple[Any, ...]) -> None:
        gate = p.gate
        if gate is SYS:
            fn, *args = msg
            try:
                fn(*args)
            except Exception:
                log.exception("node %s: internal call %r failed", self.id, fn)
        elif gate is BUSY:
            if msg is RESUME:
                self._resume(p)
            else:
                assert p.backlog is not None
                p.backlog.append(msg)
        # DEAD: dropped

    def _unhandled(self, p: Port, msg: tuple[Any, ...]) -> None:
        self._kill(p, ("unhandled_message", f"no callback found for message {msg[0]!r}"))


def make_snd(current: Callable[[], Dispatch]) -> Callable[..., None]:
    """aemp.snd: Kernel.snd on the current node, inlined (the hottest call in aemp)."""
    get = CURRENT.get

    def snd(port: str, *msg: Any) -> None:
        """Send a message to a port; returns at once, never blocks."""
        node = get() or current()
        p = node._ports.get(port)
        if p is not None and msg:
            check_message(msg)
            node._queue.append((p, msg))
            if node._drain_handle is None:
                node._drain_handle = node.loop.call_soon(node._drain)
            return
        route = node._routes.get(port)
        if route is not None and msg:
            link = route[0].link
            if link is not None:
                link.send_message(route[1], msg)  # the encoder checks the message
                return
        node._send_slow(port, msg)

    return snd
