# The node kernel: ports, the run queue, kills and monitors.
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
# time. Other ports go on meanwhile.
#
# Speed matters here: the delivery loop in _drain is the hot path, written
# flat on purpose; everything unusual (dead, busy or system entries) takes
# the slow path through the port's `gate`.

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from . import _runtime
from ._call import Call, CallTable
from ._config import Config
from ._errors import InvalidID, NodeClosed, NotLocalPort, PortDead
from ._handles import MON_CALL, MON_KILL, MON_SEND, Monitor, NodeWatch, Timer
from ._ids import (
    check_port_id,
    counter_names,
    expand_nodeid,
    local_prefix,
    reply_prefix,
    secret_names,
    spawn_prefix,
)
from ._message import check_message
from ._port import _BUSY, _DEAD, _SYS, _Port
from ._remote import Link, Remote, State
from ._requests import REQUESTS, handle_node_request, register
from ._runtime import CURRENT, SELF
from ._spawn import SpawnBook, SpawnPolicy, parse_spawn_target, resolve_spawn_target, show
from ._transport import Network, make_settings
from .db._client import Db, DbEntry, DbMonitor, Query

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


class _Keep:
    """rcv's marker for "leave the default callback as it is"."""


_KEEP = _Keep()


def _check_timeout(timeout: object, what: str) -> float | None:
    """timeout as a float, or None; raise unless it is a positive number
    (a bool is none here) or None."""
    if timeout is None:
        return None
    if not (isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0):
        raise TypeError(f"{what}: timeout must be a positive number or None (got {timeout!r})")
    return float(timeout)


def die_reason(exc: BaseException) -> tuple[str, str]:
    """The kill reason for a port whose callback raised exc."""
    return ("die", f"{type(exc).__name__}: {exc}")


def _check_callback(what: str, cb: object) -> Callback:
    if not callable(cb):
        raise TypeError(f"{what} must be callable or None (got {cb!r}, a {type(cb).__name__})")
    return cb


class Node:
    """One node: its ports, its run queue, its monitors and (later) its network.

    Use ``async with Node(...) as node`` or ``await Node(...).start()`` and
    ``await node.close()``. The keyword arguments are the configuration keys
    of DESIGN section 5; a Node reads no config file.
    """

    def __init__(self, *, _implicit: bool = False, **keys: Any) -> None:
        self.config = Config.from_keys(keys)
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "aemp.Node must be created inside a running event loop "
                "(for example in a coroutine run by aemp.run())"
            ) from None
        nodeid = self.config.nodeid
        self.id: str = expand_nodeid("anon/" if nodeid is None else nodeid)
        self.implicit = _implicit
        self.closed = False
        self._ports: dict[str, _Port] = {}
        self._queue: deque[tuple[_Port, Any]] = deque()  # msg: tuple, or list from the wire
        self._drain_handle: asyncio.Handle | None = None
        prefixes = local_prefix(), spawn_prefix(), reply_prefix()
        self._names = counter_names(f"{self.id}#{prefixes[0]}")
        self._spawn_names = counter_names(f"{self.id}#{prefixes[1]}")
        self._reply_names = secret_names(f"{self.id}#{prefixes[2]}")  # cal's: unguessable
        self._spawn_policy = SpawnPolicy(self.config.secure, self.config.spawn_allow)
        self._spawn_book = SpawnBook(prefixes)
        self._sys = _Port(self.id)
        self._sys.gate = _SYS
        self._tasks: set[asyncio.Future[Any]] = set()
        self._timers: set[Timer] = set()
        self._calls = CallTable(self)
        self._node_monitors: dict[Monitor, None] = {}
        self._prefix = self.id + "#"
        self._prefix_len = len(self._prefix)
        self._by_name: dict[str, _Port] = {}  # the same ports, by name, for packets
        self._routes: dict[str, tuple[Remote, str]] = {}  # remote port ID -> (node, name)
        self._remotes: dict[str, Remote] = {}
        # node ID -> (loop time of the last failed attempt, wait after it), oldest first
        self._unreachable: dict[str, tuple[float, float]] = {}
        self._connect_waits: dict[str, Timer] = {}  # attempts waiting out their back-off
        self._net: Network | None = None
        self._node_watchers: dict[NodeWatch, None] = {}
        self._handlers: dict[str, Callable[..., None]] = {}  # node requests: see _DbHost.handle
        self._db = Db(_DbHost(self))
        if not self.config.seeds:
            self._db.become_global()  # no seed to attach to: its own master

    def __repr__(self) -> str:
        return f"<aemp.Node {self.id!r}{' closed' if self.closed else ''}>"

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> Node:
        """Bring the node up: listen on its binds and connect to its seeds."""
        self._check_open()
        cfg = self.config
        if self._net is None and (cfg.binds or cfg.seeds or cfg.secret or cfg.cert):
            from . import __version__

            if self._spawn_policy.anything and not cfg.secure:
                log.warning("node %s: spawn_allow has '*': every node with the secret may "
                            "run any function here", self.id)  # fmt: skip
            self._net = Network(self, make_settings(self, __version__))
            await self._net.listen(cfg.binds)
            self._db.started(self._net.listeners)
            for seed in cfg.seeds:
                self._net.keep_seed(seed)
        return self

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def listeners(self) -> list[str]:
        """The "host:port" addresses this node really listens on."""
        return list(self._net.listeners) if self._net is not None else []

    async def close(self) -> None:
        """Stop the node: every port dies silently, every task and timer ends.

        Pending ``cal``s fail with NodeClosed (a callback-form call hears of
        it through its ``err``, if it has one). Monitors of local ports do
        not fire: there is nobody left on this node to tell.
        """
        if self.closed:
            return
        self.closed = True
        if self._net is not None:
            await self._net.close()
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        self._queue.clear()
        for timer in list(self._timers):
            timer.cancel()
        for call in list(self._calls):
            call._fail(NodeClosed(f"node {self.id!r} was closed"))
        self._db.close()
        for p in self._ports.values():
            p.gate = _DEAD
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
        if _runtime.process_node() is self:
            _runtime.set_process_node(None)

    def _check_open(self) -> None:
        if self.closed:
            raise NodeClosed(f"node {self.id!r} is closed")

    # ---------------------------------------------------------------- ports

    def port(self, default: Callback | None = None, /, **tags: Callback) -> str:
        """Create a local port, optionally with callbacks as for rcv; return its ID."""
        self._check_open()
        pid = next(self._names)
        self._ports[pid] = self._by_name[pid[len(self._prefix) :]] = _Port(pid)
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
            p.default = None if default is None else _check_callback("rcv callback", default)
        for tag, cb in tags.items():
            if not isinstance(tag, str):
                raise TypeError(f"rcv tags must be str (got {tag!r}, a {type(tag).__name__})")
            if cb is None:
                if p.tags is not None:
                    p.tags.pop(tag, None)
            else:
                if p.tags is None:
                    p.tags = {}
                p.tags[tag] = _check_callback(f"rcv callback for tag {tag!r}", cb)
        if p.tags is not None and not p.tags:
            p.tags = None
        return port

    def _local_port(self, port: str, what: str) -> _Port:
        p = self._ports.get(port)
        if p is not None:
            return p
        self._check_open()
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

    # ---------------------------------------------------------------- sending

    def snd(self, port: str, *msg: Any) -> None:
        """Send a message; returns at once and never blocks."""
        # _send, inlined: this is the hottest call in aemp
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

    def _send(self, port: str, msg: tuple[Any, ...]) -> None:
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
            self._check_open()
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
            self._post(self._node_request, None, list(msg))
        # else: a dead local port; the message is dropped like any other to it

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) from the run queue, in FIFO order with the messages."""
        self._queue.append((self._sys, (fn, *args)))
        if self._drain_handle is None:
            self._drain_handle = self.loop.call_soon(self._drain)

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

    def _deliver(self, p: _Port, msg: tuple[Any, ...]) -> None:
        """The slow-path twin of the loop body in _drain."""
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

    def _gated(self, p: _Port, msg: tuple[Any, ...]) -> None:
        gate = p.gate
        if gate is _SYS:
            fn, *args = msg
            try:
                fn(*args)
            except Exception:
                log.exception("node %s: internal call %r failed", self.id, fn)
        elif gate is _BUSY:
            if msg is _RESUME:
                self._resume(p)
            else:
                assert p.backlog is not None
                p.backlog.append(msg)
        # _DEAD: dropped

    def _unhandled(self, p: _Port, msg: tuple[Any, ...]) -> None:
        self._kill(p, ("unhandled_message", f"no callback found for message {msg[0]!r}"))

    def _die(self, p: _Port, exc: Exception) -> None:
        # a crash somebody monitors is handled flow; one nobody watches must be seen
        level = logging.INFO if p.monitors or p.watchers else logging.WARNING
        log.log(level, "port %s died: %s: %s", p.id, type(exc).__name__, exc, exc_info=exc)
        self._kill(p, die_reason(exc))

    # ---------------------------------------------------------------- async callbacks

    def _start_async(self, p: _Port, awaitable: Any) -> None:
        p.gate = _BUSY
        if p.backlog is None:
            p.backlog = deque()
        task = asyncio.ensure_future(awaitable, loop=self.loop)
        p.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._async_done(p, t))

    def _async_done(self, p: _Port, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if p.task is task:
            p.task = None
        if task.cancelled() or p.gate is _DEAD or self.closed:
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

    def _resume(self, p: _Port) -> None:
        """Deliver a busy port's backlog until it is empty or the port is busy again."""
        backlog = p.backlog
        assert backlog is not None
        token = SELF.set(p.id)
        try:
            while backlog:
                self._deliver(p, backlog.popleft())
                if p.task is not None or p.gate is _DEAD:
                    return
            p.gate = None
            p.backlog = None
        finally:
            SELF.reset(token)

    def spawn_task(self, coro: Any) -> asyncio.Future[Any]:
        """Run an awaitable as a task the node owns (cancelled and awaited by close())."""
        self._check_open()
        task: asyncio.Future[Any] = asyncio.ensure_future(coro, loop=self.loop)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- port context

    def _call_in(self, owner: str | None, fn: Callback, args: tuple[Any, ...]) -> Any:
        """Call fn(*args) with SELF = owner; an exception kills owner (or is logged)."""
        p = self._ports.get(owner) if owner is not None else None
        t_self = SELF.set(owner if p is not None else None)
        t_node = CURRENT.set(self)
        try:
            r = fn(*args)
            if r is not None:
                return self._awaited_in(owner, r)
            return r
        except Exception as e:
            self._failed_in(owner, fn, e)
            return None
        finally:
            CURRENT.reset(t_node)
            SELF.reset(t_self)

    def _awaited_in(self, owner: str | None, r: Any) -> Any:
        """What a callback run for owner returned: an awaitable runs as a task."""
        if not inspect.isawaitable(r):
            return r
        task = self.spawn_task(r)
        task.add_done_callback(lambda t: self._task_failed(owner, t))
        return None

    def _failed_in(self, owner: str | None, fn: Callback, e: Exception) -> None:
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
        _check_callback("psub argument", fn)
        owner = SELF.get()

        def in_port_context(*args: Any) -> Any:
            if owner is not None and owner not in self._ports:
                return None
            return self._call_in(owner, fn, args)

        return in_port_context

    def peval(self, port: str, fn: Callback, *args: Any) -> Any:
        """Run fn(*args) now in the context of a local port; return its result.

        An exception kills the port (and peval returns None).
        """
        self._local_port(port, "peval")
        return self._call_in(port, _check_callback("peval function", fn), args)

    def after(self, seconds: float, target: str | Callback, *msg: Any) -> Timer:
        """After `seconds`, send msg to the port `target`, or call `target()`."""
        self._check_open()
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise TypeError(f"after: seconds must be a number >= 0 (got {seconds!r})")
        if callable(target):
            owner = SELF.get()
            timer = Timer(self, seconds, lambda: self._call_in(owner, target, msg))
        else:
            check_port_id(target)
            check_message(msg)
            timer = Timer(self, seconds, lambda: self._send(target, msg))
        self._timers.add(timer)
        return timer

    # ---------------------------------------------------------------- kill and monitor

    def kil(self, port: str, *reason: Any) -> None:
        """Kill a port: no reason is a normal exit, any reason an abnormal one."""
        p = self._ports.get(port)
        if p is None:
            self._check_open()
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

    def _kill(self, p: _Port, reason: tuple[Any, ...]) -> None:
        if p.gate is _DEAD:
            return
        p.gate = _DEAD
        p.backlog = None
        p.tags = p.default = None
        del self._ports[p.id]
        del self._by_name[p.id[len(self._prefix) :]]
        if p.task is not None:
            p.task.cancel()
        if p.monitors:
            self._post(self._fire, tuple(p.monitors), tuple(reason))
        p.monitors = None
        if p.watchers:
            name = p.id[len(self._prefix) :]
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
        """Watch a port; act once when it dies (see DESIGN section 2 for the forms).

        ``mon(port, cb)`` calls ``cb(*reason)``; ``mon(port, other)`` kills the
        port ``other`` with the reason on abnormal death; ``mon(port)`` does
        that to SELF; ``mon(port, rcv_port, *msg)`` sends ``(*msg, *reason)``.
        """
        self._check_open()
        check_port_id(port)
        owner = SELF.get()
        if not action:
            if owner is None:
                raise TypeError(
                    f"mon({port!r}) without a callback or port kills SELF on death, but no port "
                    "callback is running: pass a callback or a port to kill"
                )
            kind, args = MON_KILL, (owner,)
        elif callable(action[0]):
            if len(action) > 1:
                raise TypeError("mon(port, callback) takes no further arguments")
            kind, args = MON_CALL, action
        elif isinstance(action[0], str):
            check_port_id(action[0])
            if len(action) > 1:
                check_message(action[1:])
                kind, args = MON_SEND, action
            else:
                kind, args = MON_KILL, action
        else:
            raise TypeError(
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
                self._post(self._fire, (m,), reason)
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

    # ---------------------------------------------------------------- other nodes

    def _remote(self, nodeid: str) -> Remote:
        remote = self._remotes.get(nodeid)
        if remote is None:
            remote = self._remotes[nodeid] = Remote(self, nodeid, self._connect_remote)
        return remote

    def _forget_remote(self, remote: Remote) -> None:
        """Drop an IDLE Remote that nothing waits on (see _remote.py)."""
        if self._remotes.get(remote.id) is not remote:
            return
        del self._remotes[remote.id]
        if self._net is not None:
            self._net.forget(remote.id)
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
        if self._net is None:
            remote.lost("no known address")
        else:
            self._net.connect(remote)

    def _backoff(self, nodeid: str) -> None:
        """An attempt to reach nodeid failed: the next one waits (see BACKOFF_FIRST)."""
        now = self.loop.time()
        cap = min(BACKOFF_MAX, self.config.monitor_timeout / 2)
        last = self._unreachable.pop(nodeid, None)
        if last is None or now - last[0] > BACKOFF_FORGET:
            delay = min(BACKOFF_FIRST, cap)
        else:
            delay = min(last[1] * 2, cap)
        self._unreachable[nodeid] = (now, delay)
        if len(self._unreachable) > MAX_UNREACHABLE:
            del self._unreachable[next(iter(self._unreachable))]

    def _link_up(self, nodeid: str, link: Link) -> Remote:
        self._unreachable.pop(nodeid, None)
        waiting = self._connect_waits.pop(nodeid, None)
        if waiting is not None:
            waiting.cancel()
        remote = self._remote(nodeid)
        remote.up(link)
        for w in list(self._node_watchers):
            w._notify(nodeid, True, ())
        self._db.node_up(nodeid)
        return remote

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
            self._db.node_down(remote.id)

    def _receive(self, remote: Remote, packets: Iterable[Any], queued: bool = False) -> None:
        """Packets [portname, *message] from another node: messages to our
        ports and node requests.

        The transport calls this from the event loop, never from inside a
        callback. With the run queue empty the packets are delivered at
        once, each as it is decoded; else they wait behind what is queued,
        in one entry (run with queued=True), so that a node's packets never
        overtake each other. Node requests are handled in stream order.
        """
        if not queued:
            if self._queue:
                self._post(self._receive, remote, list(packets), True)
                return
            if CURRENT.get() is not self:  # the transport's context is this node's
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
        self._check_open()
        w = NodeWatch(self, _check_callback("mon_nodes callback", cb), SELF.get())
        self._node_watchers[w] = None
        return w

    def _node_request(self, remote: Remote | None, msg: list[Any]) -> None:
        handle_node_request(self, remote, msg)

    # ---------------------------------------------------------------- spawn and cal

    def spawn(self, node: str, target: str, *args: Any) -> str:
        """Create a port on `node` and run target(*args) there in its context.

        Returns the new port ID at once; the function runs later, from the
        event loop. An exception in it kills the new port with ("die", ...).
        Another node runs only functions marked @spawnable or named by its
        spawn_allow; it kills a refused one with ("die", "SpawnRefused: ...").
        """
        self._check_open()
        parse_spawn_target(target)
        check_message((target, *args))
        node_id = node.partition("#")[0] if isinstance(node, str) else node
        check_port_id(node_id)
        pid = next(self._spawn_names)
        name = pid[len(self._prefix) :]
        if node_id != self.id:
            self._remote(node_id).send(["", "AnyEvent::MP::_spawn", name, target, *args])
            return f"{node_id}#{name}"
        self._spawn_port(pid, target, args)
        return pid

    def _spawn_request(
        self, remote: Remote | None, name: str, target: Any, args: tuple[Any, ...]
    ) -> None:
        """A spawn request to the node port, from `remote` (None: sent by this node).

        The name must be new (aemp/_spawn.py says what that means), and the
        function one the spawn policy allows, whoever sent the request: this
        node's own code spawns with spawn(), so a request that it sent to its
        own node port was a reply or relay that another node built. A refusal
        is remembered, so that the spawner's monitor learns the reason.
        """
        who = remote.id if remote is not None else self.id
        taken, why = self._spawn_book.take(name, who)
        if not taken:
            log.warning("node %s: refused spawn of %s as %r from %s: %s", self.id, show(target),
                        name, who, why or "the name was taken before")  # fmt: skip
            if why is not None:
                self._spawn_book.died(name, ("die", f"SpawnRefused: {why}"), who)
            return
        try:
            init = self._spawn_policy.resolve(target, self.id)
        except (Exception, SystemExit) as e:  # an allowed module may exit on import
            log.warning("node %s: refused spawn of %s from %s: %s: %s", self.id, show(target),
                        who, type(e).__name__, e)  # fmt: skip
            self._spawn_book.died(name, die_reason(e), who)
            return
        self._spawn_port(self._prefix + name, init, args)

    def _spawn_port(
        self, pid: str, init: Callback | str, args: tuple[Any, ...] | list[Any]
    ) -> None:
        p = _Port(pid)
        p.gate = _BUSY
        p.backlog = deque()
        self._ports[pid] = self._by_name[pid[len(self._prefix) :]] = p
        self._post(self._spawn_init, p, init, tuple(args))

    def _spawn_init(self, p: _Port, init: Callback | str, args: tuple[Any, ...]) -> None:
        if p.gate is _DEAD:
            return
        token = SELF.set(p.id)
        try:
            r = (resolve_spawn_target(init) if isinstance(init, str) else init)(*args)
            if r is not None and inspect.isawaitable(r):
                self._start_async(p, self._spawn_awaited(p, r))
                return
        except Exception as e:
            self._spawn_book.died(p.id[self._prefix_len :], die_reason(e))
            self._die(p, e)
            return
        finally:
            SELF.reset(token)
        if p.gate is not _DEAD:  # the init may have ended its own port
            self._resume(p)

    async def _spawn_awaited(self, p: _Port, init: Any) -> Any:
        """An async init: its failure is remembered as one of the init."""
        try:
            return await init
        except Exception as e:
            self._spawn_book.died(p.id[self._prefix_len :], die_reason(e))
            raise

    def cal(
        self,
        port: str,
        *msg: Any,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Call:
        """Send msg plus a fresh reply port to `port` and wait for one reply.

        ``await node.cal(...)`` gives the reply as a tuple, or raises
        CallTimeout, or PortDead when the target dies first. With ``cb``, the
        reply is passed as ``cb(*reply)`` and a failure as ``err(exc)``
        (without ``err`` a failure kills the calling port).
        """
        if self.closed:
            self._check_open()
        if port not in self._routes and port not in self._ports:  # else known good
            check_port_id(port)
        if not msg:
            check_message(msg)  # raises; the send checks the rest
        if timeout is not None and not (type(timeout) is float and timeout > 0):
            _check_timeout(timeout, "cal")
        if cb is not None and not callable(cb):
            raise TypeError(f"cal cb must be callable or None (got {cb!r}, a {type(cb).__name__})")
        pid = next(self._reply_names)  # the reply port, made here without port()'s checks
        reply = self._ports[pid] = self._by_name[pid[self._prefix_len :]] = _Port(pid)
        return Call(self, port, msg, timeout, cb, err, SELF.get(), reply)

    def NODE(self) -> str:
        return self.id

    # ---------------------------------------------------------------- the database

    def db_set(self, family: str, subkey: str, value: Any = None) -> DbEntry:
        """Set family/subkey to value; the handle's cancel() deletes it again."""
        self._check_open()
        return self._db.set(family, subkey, value)

    def db_del(self, family: str, *subkeys: str) -> None:
        """Delete entries this node set."""
        self._check_open()
        self._db.delete(family, *subkeys)

    def db_reg(self, family: str, port: str | None = None, value: Any = None) -> DbEntry:
        """Set family/port (default SELF) to value until the port dies or cancel()."""
        self._check_open()
        return self._db.reg(family, port, value)

    def db_family(
        self,
        family: str,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query:
        """The family as a {subkey: value} dict, from the global nodes."""
        return self._db.query("family", family, _check_timeout(timeout, "db_family"), cb, err)

    def db_keys(
        self,
        family: str,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query:
        """The family's subkeys as a list, from the global nodes."""
        return self._db.query("keys", family, _check_timeout(timeout, "db_keys"), cb, err)

    def db_values(
        self,
        family: str,
        *,
        timeout: float | None = 30.0,
        cb: Callback | None = None,
        err: Callable[[Exception], Any] | None = None,
    ) -> Query:
        """The family's values as a list, from the global nodes."""
        return self._db.query("values", family, _check_timeout(timeout, "db_values"), cb, err)

    def db_mon(self, family: str, cb: Callback) -> DbMonitor:
        """Call cb(family, added, changed, deleted): first with the whole family, then per change.

        ``family`` is a read-only live view of the family as this node knows it.
        """
        return self._db.mon(family, cb)

    @property
    def is_global(self) -> bool:
        """True if this node holds the merged database (a seed someone attached to)."""
        return self._db.glob is not None

    @property
    def master(self) -> str | None:
        """The global node this node's database requests go to (itself if global)."""
        return self._db.master


# ---------------------------------------------------------------- the database's host
# The node as aemp.db sees it (the Host Protocol of aemp/db/_host.py): thin
# methods over the node, kept together here until the kernel's registry.


def _per_node(tag: str, node: Node, remote: Remote | None, *args: Any) -> None:
    """REQUESTS' entry for a tag each node answers with its own handler."""
    fn = node._handlers.get(tag)
    if fn is None:
        raise ValueError(f"{tag!r} is not a request this node answers")
    fn(None if remote is None else remote.id, *args)


class _DbHost:
    __slots__ = ("config", "id", "loop", "node")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.id = node.id
        self.loop = node.loop
        self.config = node.config

    @property
    def closed(self) -> bool:
        return self.node.closed

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        self.node._post(fn, *args)

    def call_in(self, owner: str | None, fn: Callback, args: tuple[Any, ...]) -> Any:
        return self.node._call_in(owner, fn, args)

    def port_alive(self, port: str) -> bool:
        return port in self.node._ports

    def mon(self, port: str, cb: Callback) -> Monitor:
        return self.node.mon(port, cb)

    def spawn_task(self, coro: Any) -> asyncio.Future[Any]:
        return self.node.spawn_task(coro)

    def handle(self, tag: str, fn: Callable[..., None]) -> None:
        handlers = self.node._handlers
        if tag in handlers:
            raise ValueError(f"node request {tag!r} is registered already")
        entry = REQUESTS.get(tag)
        if entry is None:
            register(tag, functools.partial(_per_node, tag))
        elif getattr(entry, "func", None) is not _per_node:
            raise ValueError(f"node request {tag!r} is one of the node's own")
        handlers[tag] = fn

    def request(self, nodeid: str, tag: str, *args: Any) -> None:
        self.node._remote(nodeid).send(["", tag, *args])

    def connect(self, nodeid: str) -> None:
        self.node._remote(nodeid).start_connect()

    def node_is_up(self, nodeid: str) -> bool:
        return self.node.node_is_up(nodeid)

    def up_nodes(self) -> list[str]:
        return self.node.up_nodes()

    def seed_ids(self) -> Collection[str] | None:
        net = self.node._net
        return None if net is None else net.seeds.values()
