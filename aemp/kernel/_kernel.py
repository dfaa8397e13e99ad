# The node kernel: ports, the run queue, the dispatch, kills and monitors,
# port context, node-owned tasks and timers, the remote-node table and the
# open registry of node requests.
#
# Every local delivery goes through one FIFO run queue per node, drained by
# a callback the event loop schedules, so a handler never runs inside the
# stack of the code that sent to it (a port that sends to itself does not
# recurse) and messages from this node to a port arrive in the order sent.
# Kills take effect at once (later sends are dropped) but monitors fire from
# the run queue, behind every message sent before the kill.
#
# A port whose callback is an `async def` runs it as a task the node owns;
# the port receives nothing else until that task ends (its later messages
# wait in the port's backlog), so an actor still sees one message at a
# time. Other ports go on meanwhile. A gated port (gated_port) waits the
# same way from its birth until release(): spawn runs its init so.
#
# The dispatch. Speed matters here, so a message is delivered by one of
# three copies of the same steps, all in this module, side by side below
# ("the dispatch"): the loop body of _drain (messages from this node), the
# loop body of _receive (packets from another node, delivered at once when
# the run queue is empty) and _deliver (the slow path: a busy port's
# backlog). Each: SELF is the port; a str tag with a tag callback calls it
# with the rest, else the default callback gets the whole message, else the
# port dies with unhandled_message; an awaitable result runs as the port's
# task; an exception kills the port with ("die", ...). Everything unusual
# (dead, busy or system entries) takes the slow path through the port's
# `gate`. tests/test_kernel.py checks that the three agree; change them
# together. The send side has its copies here too: Kernel.snd, Kernel.send
# and make_snd (aemp.snd).
#
# What the kernel offers the layers above it (aemp/_call.py, _spawn.py,
# the database, aemp.lowlevel) are its methods without a leading
# underscore; the rest is its own. It never imports the network: it talks
# to it through the Protocols of aemp/_seam.py (it is the LinkOwner of its
# links, and dials through a Connector).

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from .._errors import (
    InvalidArgument,
    InvalidID,
    NodeClosed,
    NotLocalPort,
    OutOfRange,
    PortDead,
)
from .._ids import (
    check_port_id,
    counter_names,
    local_prefix,
    reply_prefix,
    secret_names,
    spawn_prefix,
)
from .._message import check_message
from .._runtime import CURRENT, SELF
from .._seam import Connector, Link
from ._handles import MON_CALL, MON_KILL, MON_SEND, Monitor, NodeWatch, Timer
from ._port import BUSY, DEAD, SYS, Port
from ._remote import Remote, State
from ._requests import CORE_REQUESTS, handle_node_request

log = logging.getLogger("aemp.node")

_BUDGET = 2048  # deliveries per drain before the loop gets a turn
# Remote ports whose route is cached. Small on purpose: a server answers
# each call's reply port once, and a cache that stays in the CPU's cache
# made such a server 1.5 times faster than one of 100,000 entries.
MAX_ROUTES = 1024
# A node that could not be reached (no known address, or no connection
# within connect_interval) is not tried again at once: the next attempt
# waits BACKOFF_FIRST after the failure, doubling with each failure in a
# row up to BACKOFF_MAX (and at most half of monitor_timeout, so that
# guarantee 3 holds). Packets and monitors wait meanwhile; the monitors
# fire when that attempt fails. A monitor re-armed from its own callback
# thus costs a lookup a second, not one per run-queue turn. A connection
# from the node, or a failure longer than BACKOFF_FORGET ago, starts over.
BACKOFF_FIRST = 0.05  # seconds
BACKOFF_MAX = 1.0  # seconds
BACKOFF_FORGET = 30.0  # seconds
MAX_UNREACHABLE = 4096  # nodes remembered as unreachable; the oldest go first
_RESUME = ("resume",)  # posted to a busy port when its async callback ended

Callback = Callable[..., Any]
RequestHandler = Callable[..., None]


class _Keep:
    """rcv's marker for "leave the default callback as it is"."""


_KEEP = _Keep()


def die_reason(exc: BaseException) -> tuple[str, str]:
    """The kill reason for a port whose callback raised exc."""
    return ("die", f"{type(exc).__name__}: {exc}")


def check_callback(what: str, cb: object) -> Callback:
    """cb if it is callable, else InvalidArgument naming it."""
    if not callable(cb):
        raise InvalidArgument(
            f"{what} must be callable or None (got {cb!r}, a {type(cb).__name__})"
        )
    return cb


class Kernel:
    """A node's kernel: everything of a node but its network and the layers above.

    aemp.Node is a Kernel with a network, a database, spawn and cal.
    """

    def __init__(self, nodeid: str, monitor_timeout: float) -> None:
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "aemp.Node must be created inside a running event loop "
                "(for example in a coroutine run by aemp.run())"
            ) from None
        self.id: str = nodeid
        self.closed = False
        self._down = False  # close() has run
        self._monitor_timeout = monitor_timeout
        self._ports: dict[str, Port] = {}
        self._queue: deque[tuple[Port, Any]] = deque()  # msg: tuple, or list from the wire
        self._drain_handle: asyncio.Handle | None = None
        # the random prefixes of this incarnation's port names: local, spawn, reply
        self.prefixes = local_prefix(), spawn_prefix(), reply_prefix()
        self._names = counter_names(f"{self.id}#{self.prefixes[0]}")
        self._reply_names = secret_names(f"{self.id}#{self.prefixes[2]}")  # cal's: unguessable
        self._sys = Port(self.id)
        self._sys.gate = SYS
        self._tasks: set[asyncio.Future[Any]] = set()
        self._timers: set[Timer] = set()
        self._node_monitors: dict[Monitor, None] = {}
        self._prefix = self.id + "#"
        self._prefix_len = len(self._prefix)
        self._by_name: dict[str, Port] = {}  # the same ports, by name, for packets
        self._routes: dict[str, tuple[Remote, str]] = {}  # remote port ID -> (node, name)
        self._remotes: dict[str, Remote] = {}
        # node ID -> (loop time of the last failed attempt, wait after it), oldest first
        self._unreachable: dict[str, tuple[float, float]] = {}
        self._connect_waits: dict[str, Timer] = {}  # attempts waiting out their back-off
        self._connector: Connector | None = None
        self._node_watchers: dict[NodeWatch, None] = {}
        self._link_watchers: dict[Callable[[str, bool], None], None] = {}
        self._closers: list[Callable[[], None]] = []
        # the node requests: tag -> fn(remote, *args) (remote: None from this node)
        self._requests: dict[str, RequestHandler] = {
            tag: functools.partial(fn, self) for tag, fn in CORE_REQUESTS.items()
        }

    # ---------------------------------------------------------------- lifecycle

    def check_open(self) -> None:
        """Raise NodeClosed if the node is closed."""
        if self.closed:
            raise NodeClosed(f"node {self.id!r} is closed")

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

    # ---------------------------------------------------------------- ports

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

    def reply_port(self, cb: Callback) -> Port:
        """A fresh port with an unguessable name and default callback cb, made
        without port()'s checks (for cal: the node is known to be open)."""
        pid = next(self._reply_names)
        p = self._ports[pid] = self._by_name[pid[self._prefix_len :]] = Port(pid)
        p.default = cb
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
            if msg is _RESUME:
                self._resume(p)
            else:
                assert p.backlog is not None
                p.backlog.append(msg)
        # DEAD: dropped

    def _unhandled(self, p: Port, msg: tuple[Any, ...]) -> None:
        self._kill(p, ("unhandled_message", f"no callback found for message {msg[0]!r}"))

    def _die(self, p: Port, exc: Exception) -> None:
        # a crash somebody monitors is handled flow; one nobody watches must be seen
        level = logging.INFO if p.monitors or p.watchers else logging.WARNING
        log.log(level, "port %s died: %s: %s", p.id, type(exc).__name__, exc, exc_info=exc)
        self._kill(p, die_reason(exc))

    # ---------------------------------------------------------------- async callbacks

    def _start_async(self, p: Port, awaitable: Any) -> None:
        p.gate = BUSY
        if p.backlog is None:
            p.backlog = deque()
        task = asyncio.ensure_future(awaitable, loop=self.loop)
        p.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._async_done(p, t))

    def _async_done(self, p: Port, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if p.task is task:
            p.task = None
        if task.cancelled() or p.gate is DEAD or self.closed:
            return
        exc = task.exception()
        if isinstance(exc, Exception):
            self._die(p, exc)
        elif exc is not None:  # KeyboardInterrupt and friends are not ours to swallow
            self._kill(p, die_reason(exc))
        else:
            self._queue.append((p, _RESUME))
            if self._drain_handle is None:
                self._drain_handle = self.loop.call_soon(self._drain)

    def _resume(self, p: Port) -> None:
        """Deliver a busy port's backlog until it is empty or the port is busy again."""
        backlog = p.backlog
        assert backlog is not None
        token = SELF.set(p.id)
        try:
            while backlog:
                self._deliver(p, backlog.popleft())
                if p.task is not None or p.gate is DEAD:
                    return
            p.gate = None
            p.backlog = None
        finally:
            SELF.reset(token)

    def spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        """Run an awaitable as a task the node owns (cancelled and awaited by close())."""
        if self.closed:
            if inspect.iscoroutine(coro):
                coro.close()  # never to run: no "was never awaited" warning
            self.check_open()
        task: asyncio.Future[Any] = asyncio.ensure_future(coro, loop=self.loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def timer(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Call fn() after `delay` seconds on the loop's clock (close() cancels it)."""
        self.check_open()
        timer = Timer(self, delay, fn)
        self._timers.add(timer)
        return timer

    # ---------------------------------------------------------------- port context

    def call_in(self, owner: str | None, fn: Callback, args: tuple[Any, ...]) -> Any:
        """Call fn(*args) with SELF = owner; an exception kills owner (or is logged)."""
        p = self._ports.get(owner) if owner is not None else None
        t_self = SELF.set(owner if p is not None else None)
        t_node = CURRENT.set(self)
        try:
            r = fn(*args)
            if r is not None:
                return self.callback_result(owner, r)
            return r
        except Exception as e:
            self.callback_failed(owner, fn, e)
            return None
        finally:
            CURRENT.reset(t_node)
            SELF.reset(t_self)

    def callback_result(self, owner: str | None, r: Any) -> Any:
        """What a callback run for owner returned: an awaitable runs as a task."""
        if not inspect.isawaitable(r):
            return r
        task = self.spawn_task(r)  # type: ignore[arg-type]
        task.add_done_callback(lambda t: self._task_failed(owner, t))
        return None

    def callback_failed(self, owner: str | None, fn: Callback, e: Exception) -> None:
        """A callback run for owner raised e: owner dies, or it is logged."""
        p = self._ports.get(owner) if owner is not None else None
        if p is not None:
            self._die(p, e)
        else:
            log.exception("node %s: callback %r raised outside any port", self.id, fn)

    def _task_failed(self, owner: str | None, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        p = self._ports.get(owner) if owner is not None else None
        if p is not None and isinstance(exc, Exception):
            self._die(p, exc)
        else:
            log.error("node %s: task failed outside any port", self.id, exc_info=exc)

    def psub(self, fn: Callback) -> Callback:
        """Wrap fn so that it later runs in the context of the current port (SELF).

        An exception kills that port; once the port is dead, calls do nothing.
        """
        check_callback("psub argument", fn)
        owner = SELF.get()

        def in_port_context(*args: Any) -> Any:
            if owner is not None and owner not in self._ports:
                return None
            return self.call_in(owner, fn, args)

        return in_port_context

    def peval(self, port: str, fn: Callback, *args: Any) -> Any:
        """Run fn(*args) now in the context of a local port; return its result.

        An exception kills the port (and peval returns None).
        """
        self._local_port(port, "peval")
        return self.call_in(port, check_callback("peval function", fn), args)

    def after(self, seconds: float, target: str | Callback, *msg: Any) -> Timer:
        """After `seconds`, send msg to the port `target`, or call `target()`."""
        self.check_open()
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidArgument(f"after: seconds must be a number >= 0 (got {seconds!r})")
        if not seconds >= 0:  # NaN too
            raise OutOfRange(f"after: seconds must be a number >= 0 (got {seconds!r})")
        if callable(target):
            owner = SELF.get()
            return self.timer(seconds, lambda: self.call_in(owner, target, msg))
        check_port_id(target)
        check_message(msg)
        return self.timer(seconds, lambda: self.send(target, msg))

    # ---------------------------------------------------------------- kill and monitor

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

    # ---------------------------------------------------------------- node requests

    def handle(self, tag: str, fn: Callable[..., None]) -> None:
        """Handle the node request `tag`: fn(sender, *args) for each ["", tag, *args].

        sender is the node ID of the link it came in on, or None when this
        node's own code sent it to its own node port. A malformed request is
        answered by raising TypeError or ValueError (logged as such).
        ValueError if the tag is taken.
        """
        if type(tag) is not str or not tag:
            raise InvalidArgument(f"handle: tag must be a non-empty str (got {tag!r})")
        check_callback("handle callback", fn)
        if tag in self._requests:
            raise ValueError(f"handle: the node request {tag!r} is handled already")

        def handler(remote: Remote | None, *args: Any) -> None:
            fn(remote.id if remote is not None else None, *args)

        self._requests[tag] = handler

    def handles(self, tag: object) -> bool:
        """True if this node answers the node request `tag` (what `can` asks)."""
        return type(tag) is str and tag in self._requests and tag != "eval"

    def request(self, nodeid: str, tag: str, *args: Any) -> None:
        """Send the node request [tag, *args] to the node `nodeid` (this one included)."""
        check_port_id(nodeid)
        if "#" in nodeid:
            raise InvalidID(f"request needs a node ID, got the port ID {nodeid!r}")
        if type(tag) is not str:
            raise InvalidArgument(f"request: tag must be a str (got {tag!r})")
        self.send(nodeid, (tag, *args))

    def _node_request(self, remote: Remote | None, msg: list[Any]) -> None:
        handle_node_request(self, remote, msg)

    # ---------------------------------------------------------------- other nodes

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

    def _backoff(self, nodeid: str) -> None:
        """An attempt to reach nodeid failed: the next one waits (see BACKOFF_FIRST)."""
        now = self.loop.time()
        cap = min(BACKOFF_MAX, self._monitor_timeout / 2)
        last = self._unreachable.pop(nodeid, None)
        if last is None or now - last[0] > BACKOFF_FORGET:
            delay = min(BACKOFF_FIRST, cap)
        else:
            delay = min(last[1] * 2, cap)
        self._unreachable[nodeid] = (now, delay)
        if len(self._unreachable) > MAX_UNREACHABLE:
            del self._unreachable[next(iter(self._unreachable))]

    # the LinkOwner methods of aemp/_seam.py that are the kernel's

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
            self._backoff(remote.id)
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

    def mon_name(self, nodeid: str, name: str, cb: Callback) -> Monitor:
        """mon(f"{nodeid}#{name}", cb) without checking the name: the mon1
        that a peer may send with any name (for tests of a node's answers)."""
        self.check_open()
        m = Monitor(self, f"{nodeid}#{name}", MON_CALL, (check_callback("mon_name", cb),), None)
        self._remote(nodeid).monitor(name, m)
        return m

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

    # ---------------------------------------------------------------- statistics

    def statistics(self) -> dict[str, Any]:
        """Counts of the kernel's state (see aemp.lowlevel.statistics)."""
        return {
            "ports": len(self._ports),
            "queued": len(self._queue),
            "backlog": sum(len(p.backlog) for p in self._ports.values() if p.backlog),
            "tasks": len(self._tasks),
            "timers": len(self._timers),
            "routes": len(self._routes),
            "remotes": {r.id: r.state.value for r in self._remotes.values()},
            "unreachable": len(self._unreachable),
            "backoffs": len(self._connect_waits),
        }


def make_snd(current: Callable[[], Kernel]) -> Callable[..., None]:
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
