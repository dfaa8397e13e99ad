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
# Flow control: packets read while the run queue is busy wait in it as one
# NET entry per read (they count against _drain's budget packet by packet).
# Past queue_limit held messages (run queue entries, packets of NET
# entries, busy ports' backlogs, what code above keeps and counts with
# hold(), such as a mailbox's messages) a link whose packets added to them
# pauses reading (one feeding only ports that keep up reads on); _drain's end
# resumes them under half of it and wakes drain() of this node.
#
# May import the leaves and, of the kernel, _state.py, _port.py, _remote.py
# (for its type) and _requests.py (handle_node_request).

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import InvalidArgument
from .._ids import check_port_id, node_of
from .._message import check_message
from .._runtime import CURRENT, SELF
from ._port import BUSY, NET, RESUME, SYS, Port
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
                remote.offer([name, *msg])
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
                if p.gate is NET:  # packets read from a link: they cost what they hold
                    pkts = msg[1]
                    self._inbound -= len(pkts)
                    left -= len(pkts)
                    self._receive(msg[0], pkts, True)
                else:
                    self._gated(p, msg)
                    left -= 1
                cur = None
                if left <= 0:
                    break
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
                break
        if q and self._drain_handle is None:  # the budget is spent: the loop gets a turn
            self._drain_handle = self.loop.call_soon(self._drain)
        if self._reading_paused or self._load_waiters:
            self._unload()

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
            q = self._queue
            if q:
                pkts = packets if type(packets) is list else list(packets)
                self._inbound += len(pkts)
                q.append((self._netq, (remote, pkts)))
                if self._drain_handle is None:
                    self._drain_handle = self.loop.call_soon(self._drain)
                if len(q) + self._inbound + self._backlogged > self._queue_limit:
                    self._pause_link(remote)
                return
            if CURRENT.get() is not self:  # the network's context is this node's
                CURRENT.set(self)
        held = self._backlogged  # not queued: the run queue is empty, this is all it holds
        ports = self._by_name
        set_self = SELF.set
        cur = None
        n = 0  # packets taken, for statistics
        try:
            for pkt in packets:
                n += 1
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
            remote.packets_in += n
            if cur is not None and not queued:
                set_self(None)
        if not queued and (self._queue or self._backlogged):
            now = len(self._queue) + self._inbound + self._backlogged
            if now > self._queue_limit and now > held:  # these packets added to it
                self._pause_link(remote)

    # ---------------------------------------------------------------- flow control

    def _pause_link(self, remote: Remote) -> None:
        """The node holds more than queue_limit messages, and what `remote`
        sent added to them: stop reading its link. A link whose packets go
        to ports that keep up reads on."""
        if remote in self._paused:
            return
        self._paused[remote] = None
        self._reading_paused = True
        log.debug(
            "node %s: over queue_limit (%d): reading from %s paused",
            self.id,
            self._queue_limit,
            remote.id,
        )
        if remote.link is not None:
            remote.link.pause_reading()

    def _unload(self) -> None:
        """Under half of queue_limit: read again, wake drain() of this node."""
        if len(self._queue) + self._inbound + self._backlogged > self._queue_limit // 2:
            return
        if self._reading_paused:
            self._reading_paused = False
            paused, self._paused = self._paused, {}
            log.debug("node %s: under queue_limit/2: reading resumed", self.id)
            for r in paused:
                if r.link is not None:
                    r.link.resume_reading()
        waiters, self._load_waiters = self._load_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def hold(self, n: int) -> None:
        """Count n more messages (fewer, if negative) that code above the kernel
        keeps for this node's ports against queue_limit, as a busy port's
        backlog counts: past it the links whose packets add to it pause
        reading, under half it they resume."""
        self._backlogged += n
        self._held += n
        # more held: the link whose packets are being delivered pauses at the
        # end of their delivery (_receive), or at its next read if they were
        # queued; fewer: reading may resume
        if n < 0 and (self._reading_paused or self._load_waiters):
            self._unload()

    async def drain(self, target: str) -> None:
        """Wait until `target` (a port ID or a node ID) can take more.

        For another node: returns at once unless the link's unsent bytes
        passed send_buffer, then when they fall under a quarter of it (or
        the link is lost). For this node or its ports: when what the node
        holds (run queue, packets read, busy ports' backlogs) is under half
        of queue_limit. Never raises for a remote failure.
        """
        if not isinstance(target, str):
            raise InvalidArgument(f"drain: target must be a port or node ID (got {target!r})")
        node = node_of(target)
        if node == self.id:
            if len(self._queue) + self._inbound + self._backlogged <= self._queue_limit // 2:
                return
            fut: asyncio.Future[None] = self.loop.create_future()
            self._load_waiters.append(fut)
            if self._drain_handle is None and self._queue:
                self._drain_handle = self.loop.call_soon(self._drain)
            await fut
            return
        remote = self._remotes.get(node)
        link = remote.link if remote is not None else None
        if link is not None:
            waiter = link.drained()
            if waiter is not None:
                await waiter

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
                self._backlogged += 1
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
