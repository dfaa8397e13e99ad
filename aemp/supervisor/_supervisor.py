# The Supervisor: a port that places, watches and restarts its children
# (how and why: the header of aemp/supervisor/__init__.py).
#
# State is one list of _Child records in spec order, the hosts as three
# sets (listed in the database, linked, lost) and the times of the recent
# restarts. Everything runs on the node's loop in the supervisor's port
# context (monitors, db_mon and timers made there), so an exception in
# this code kills the supervisor's port, and with it the children: a
# supervisor with a bug leaves no orphans either.
#
# May import aemp, aemp.lowlevel, the leaves and the package's _spec.

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aemp
from aemp import lowlevel
from aemp._errors import InvalidArgument, InvalidFamily, OutOfRange
from aemp._ids import check_port_id
from aemp._message import check_message
from aemp._targets import parse_spawn_target

from ._spec import (
    MAX_CHILDREN,
    MAX_HOSTS,
    MAX_RESTARTS,
    STRATEGIES,
    Child,
    ChildInfo,
    Event,
    InvalidSpec,
    SupervisorExited,
)

log = logging.getLogger("aemp.supervisor")

SHUTDOWN = ("shutdown",)  # the reason a supervisor kills a child with
_FAMILY = re.compile(r"([A-Za-z][A-Za-z0-9_:.]*|'.+)\Z")  # as db_mon takes them


@dataclass(eq=False)
class _Child:
    spec: Child
    state: str = "new"  # then "running", "waiting", "stopped", "failed"
    port: str | None = None
    node: str | None = None
    restarts: int = 0
    monitor: Any = None  # the aemp.Monitor on port
    refused: set[str] = field(default_factory=set)  # hosts that refused its spawn
    started: bool = False  # started once: later starts are restarts
    restarting: bool = False  # the last spawn was a restart


def _resolves(target: str) -> tuple[Any, ...] | None:
    """None if target names a callable in this process, else a death reason."""
    module, path = parse_spawn_target(target)
    try:
        obj: Any = importlib.import_module(module)
        for part in path.split("."):
            obj = getattr(obj, part)
    except Exception as e:
        return ("die", f"SpawnRefused: {target!r} cannot be found here: {type(e).__name__}: {e}")
    if not callable(obj):
        return ("die", f"SpawnRefused: {target!r} names a {type(obj).__name__}, not a function")
    return None


def _on_node(node: aemp.Node) -> weakref.WeakSet[Supervisor]:
    """The node's supervisors, told when it closes (a closed node fires no monitor)."""
    sups: weakref.WeakSet[Supervisor] = weakref.WeakSet()

    def closed() -> None:
        for sup in list(sups):
            sup._node_closed()

    lowlevel.on_close(node, closed)
    return sups


def _nodes(keys: Iterable[str]) -> set[str]:
    """The node IDs of a family's subkeys (node or port IDs); others are skipped:
    any node may write the family, and a bad entry must not stop a supervisor."""
    out = set()
    for k in keys:
        try:
            out.add(aemp.node_of(k))
        except (aemp.InvalidID, TypeError):
            pass
    return out


def _refusal(reason: tuple[Any, ...]) -> bool:
    return (
        len(reason) >= 2
        and reason[0] == "die"
        and isinstance(reason[1], str)
        and reason[1].startswith("SpawnRefused:")
    )


class Supervisor:
    """A supervisor port that starts, watches and restarts its children.

    ``Supervisor(children, strategy=..., max_restarts=..., period=...,
    hosts=..., rebalance=..., on_event=..., node=...)`` starts at once;
    ``port`` is its port ID. See docs/api.md (Module aemp.supervisor).
    """

    def __init__(
        self,
        children: Iterable[Child] = (),
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        period: float = 5.0,
        hosts: Sequence[str] | str | None = None,
        rebalance: bool = True,
        on_event: Callable[[Event], Any] | str | None = None,
        node: aemp.Node | None = None,
        _port: str | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise InvalidSpec(f"strategy must be one of {', '.join(STRATEGIES)} (got {strategy!r})")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
            raise InvalidArgument(f"max_restarts must be an int >= 0 (got {max_restarts!r})")
        if not 0 <= max_restarts <= MAX_RESTARTS:
            raise OutOfRange(f"max_restarts must be 0 to {MAX_RESTARTS} (got {max_restarts})")
        if isinstance(period, bool) or not isinstance(period, int | float):
            raise InvalidArgument(f"period must be a number of seconds > 0 (got {period!r})")
        if not 0 < period < float("inf"):
            raise OutOfRange(f"period must be a finite number of seconds > 0 (got {period!r})")
        if on_event is not None and not callable(on_event):
            if not isinstance(on_event, str):
                raise InvalidArgument(
                    f"on_event must be a callable, a port ID or None (got {on_event!r})"
                )
            check_port_id(on_event)
        specs = list(children)
        for spec in specs:
            if not isinstance(spec, Child):
                raise InvalidArgument(f"children must be Child specs (got {spec!r:.80})")
        if len(specs) > MAX_CHILDREN:
            raise OutOfRange(f"a supervisor has at most {MAX_CHILDREN} children")
        twice = sorted(i for i, n in Counter(s.id for s in specs).items() if n > 1)
        if twice:
            raise InvalidSpec(f"child ids must differ: {', '.join(map(repr, twice))} twice")
        self.node: aemp.Node = node if node is not None else lowlevel.current_node()
        self._family: str | None = None
        self._hosts: list[str] | None = None
        if isinstance(hosts, str):
            if not _FAMILY.match(hosts):
                raise InvalidFamily(
                    f"hosts {hosts!r} is no family name: family names match "
                    "[A-Za-z][A-Za-z0-9_:.]* (or give a list of node IDs)"
                )
            self._family = hosts
        elif hosts is not None:
            self._hosts = []
            if len(hosts) > MAX_HOSTS:
                raise OutOfRange(f"hosts lists at most {MAX_HOSTS} node IDs (got {len(hosts)})")
            for h in hosts:
                check_port_id(h)
                if not isinstance(h, str) or "#" in h:
                    raise InvalidSpec(f"hosts must be node IDs (got the port ID {h!r})")
                if h not in self._hosts:
                    self._hosts.append(h)
            if not self._hosts:
                raise InvalidSpec("hosts is an empty list: give node IDs, a family, or None")
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.period = float(period)
        self.rebalance = bool(rebalance)
        self._on_event = on_event
        self._children = [_Child(s) for s in specs]
        self._restarts: deque[float] = deque()  # loop times of the recent restarts
        self._present: set[str] = set()  # hosts the database lists now
        self._linked: set[str] = set()  # hosts linked now
        self._lost: set[str] = set()  # hosts a child was lost with, until they show again
        self._seen = False  # the first db_mon call came: the hosts are known
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._watches: list[Any] = []
        self.reason: tuple[Any, ...] | None = None  # the exit reason, once exited
        node = self.node
        lowlevel.extension(node, "aemp.supervisor", lambda: _on_node(node)).add(self)
        self.port: str = _port if _port is not None else node.port()
        node.rcv(self.port, self._unhandled, which_children=self._which_children)
        lowlevel.call_in(node, self.port, self._begin)

    def __repr__(self) -> str:
        state = "running" if self.reason is None else f"exited {self.reason!r}"
        return f"<aemp.supervisor.Supervisor {self.port} {state}>"

    # ---------------------------------------------------------------- the API

    def children(self) -> list[ChildInfo]:
        """Each child's id, state, port, node and restart count, in spec order."""
        return [
            ChildInfo(c.spec.id, "waiting" if c.state == "new" else c.state, c.port, c.node,
                      c.restarts)
            for c in self._children
        ]  # fmt: skip

    def hosts(self) -> list[str]:
        """The hosts a child may be placed on now, in placement order."""
        if self._family is None and self._hosts is None:
            return [self.node.id]
        if self._hosts is not None:
            up = self._present | self._linked | {self.node.id}
            return [h for h in self._hosts if h in up and h not in self._lost]
        return sorted(self._present - self._lost)

    def start_child(self, spec: Child) -> None:
        """Add a child spec and start it (InvalidSpec for an id in use)."""
        if not isinstance(spec, Child):
            raise InvalidArgument(f"start_child takes a Child spec (got {spec!r:.80})")
        self._check_running()
        if any(c.spec.id == spec.id for c in self._children):
            raise InvalidSpec(f"start_child: child id {spec.id!r} is in use")
        if len(self._children) >= MAX_CHILDREN:
            raise OutOfRange(f"a supervisor has at most {MAX_CHILDREN} children")
        c = _Child(spec)
        self._children.append(c)
        lowlevel.call_in(self.node, self.port, self._start, c, None)

    def stop_child(self, child_id: str) -> None:
        """Kill a child with ("shutdown",) and forget its spec (InvalidSpec if unknown)."""
        self._check_running()
        c = self._find(child_id)
        self._terminate(c)
        self._children.remove(c)
        self._changed()

    def stop(self, *reason: Any) -> None:
        """Stop: kill the children (last first) with ("shutdown",), then the
        supervisor's port with `reason` (none: a normal exit)."""
        if self.reason is not None:
            return
        if reason:
            check_message(reason)
        for c in reversed(self._children):
            self._terminate(c)
        self.node.kil(self.port, *reason)

    async def wait_started(self) -> None:
        """Wait until no child waits for a host (each runs, stopped or failed).

        Raises SupervisorExited if the supervisor exits first; bound the
        wait with asyncio.timeout.
        """
        await self._wait(lambda: all(c.state not in ("new", "waiting") for c in self._children))

    async def wait_for_hosts(self, n: int = 1) -> list[str]:
        """Wait until at least n hosts are available; returns them (see hosts())."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgument(f"wait_for_hosts: n must be an int >= 1 (got {n!r})")
        await self._wait(lambda: len(self.hosts()) >= n)
        return self.hosts()

    async def wait_closed(self) -> tuple[Any, ...]:
        """Wait until the supervisor exited; returns its reason (empty: normal)."""
        if self.reason is None:
            fut = self.node.loop.create_future()
            entry = (lambda: False, fut)
            self._waiters.append(entry)
            try:
                await fut
            except SupervisorExited:
                pass
            finally:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        assert self.reason is not None
        return self.reason

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await self.wait_closed()

    # ---------------------------------------------------------------- waiting

    async def _wait(self, cond: Callable[[], bool]) -> None:
        if cond():
            return
        self._check_running()
        fut = self.node.loop.create_future()
        entry = (cond, fut)
        self._waiters.append(entry)
        try:
            await fut
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _changed(self) -> None:
        for cond, fut in list(self._waiters):
            if not fut.done() and cond():
                fut.set_result(None)
                self._waiters.remove((cond, fut))

    def _check_running(self) -> None:
        if self.reason is not None:
            raise SupervisorExited(self.port, self.reason)

    def _find(self, child_id: str) -> _Child:
        for c in self._children:
            if c.spec.id == child_id:
                return c
        raise InvalidSpec(f"no child with id {child_id!r} in supervisor {self.port}")

    # ---------------------------------------------------------------- the port

    def _unhandled(self, *msg: Any) -> None:
        log.warning("supervisor %s: message %.80r ignored", self.port, msg)

    def _which_children(self, reply: Any, *tag: Any) -> None:
        if isinstance(reply, str) and "#" in reply:
            self.node.snd(reply, *tag, [asdict(c) for c in self.children()])

    def _begin(self) -> None:
        """In the port's context: watch the port, the hosts, then start the children."""
        node = self.node
        node.mon(self.port, self._exited_self)
        if self._family is None and self._hosts is None:
            self._seen = True
            self._start_all()
            return
        self._watches.append(lowlevel.watch_links(node, self._link))
        self._linked = {h for h in node.up_nodes()}
        # the first db_mon call comes promptly with the family: the children wait for it
        family = self._family if self._family is not None else "'l"
        self._watches.append(node.db_mon(family, self._listed))

    def _start_all(self) -> None:
        for c in self._children:
            if c.state in ("new", "waiting") and c.port is None:
                self._start(c, None)
        self._changed()

    # ---------------------------------------------------------------- hosts

    def _listed(self, fam: Any, added: list[str], changed: list[str], deleted: list[str]) -> None:
        if self.reason is not None:
            return
        first, self._seen = not self._seen, True
        before = set(self.hosts())
        self._present = _nodes(fam)
        shown = _nodes((*added, *changed))  # (re)started, or (re)registered
        self._lost -= shown
        for c in self._children:
            c.refused -= shown  # it may have loaded the target since
        after = set(self.hosts())
        self._hosts_changed(first or bool(after - before) or bool(shown & after))

    def _link(self, nodeid: str, up: bool) -> None:
        if self.reason is not None:
            return
        if up:
            before = set(self.hosts())
            self._linked.add(nodeid)
            self._lost.discard(nodeid)  # it answers again
            if set(self.hosts()) - before:
                lowlevel.call_in(self.node, self.port, self._hosts_changed, True)
        else:
            self._linked.discard(nodeid)

    def _recheck(self, host: str) -> None:
        """A lost host is still listed after the grace: it lives, take it back."""
        if self.reason is None and host in self._lost and host in self._present:
            self._lost.discard(host)
            log.info("supervisor %s: host %s is still listed: taken back", self.port, host)
            self._hosts_changed(True)

    def _hosts_changed(self, more: bool) -> None:
        """Hosts came (more) or went: place waiting children, retry failed ones, rebalance."""
        if self.reason is not None or not self._seen:
            return
        if more:
            for c in self._children:
                if c.state in ("new", "waiting", "failed") and c.port is None:
                    self._start(c, None)
            self._rebalance()
        self._changed()

    def _rebalance(self) -> None:
        if not self.rebalance:
            return
        for _ in range(len(self._children)):
            hosts = self.hosts()
            if len(hosts) < 2:
                return
            load = self._loads(hosts)
            low = min(hosts, key=lambda h: load[h])
            high = max(hosts, key=lambda h: load[h])
            movable = [
                c
                for c in self._children
                if c.node == high and c.state == "running" and c.spec.restart != "temporary"
                and low not in c.refused
            ]  # fmt: skip
            if load[high] - load[low] <= 1 or not movable:
                return
            c = movable[-1]
            if low == self.node.id and (why := _resolves(c.spec.target)) is not None:
                c.refused.add(low)  # it would die here at once: no move
                self._event("refused", c, None, low, why)
                continue
            old_port, old_node = c.port, c.node
            self._terminate(c, ("rebalance", low), quiet=True)
            self._spawn(c, low, "moved", ("rebalance", old_node, old_port))

    def _loads(self, hosts: list[str]) -> dict[str, int]:
        load = dict.fromkeys(hosts, 0)
        for c in self._children:
            if c.state == "running" and c.node in load:
                load[c.node] += 1
        return load

    def _place(self, c: _Child, prefer: str | None) -> str | None:
        hosts = [h for h in self.hosts() if h not in c.refused]
        if prefer in hosts:
            return prefer
        if not hosts:
            return None
        load = self._loads(hosts)
        return min(hosts, key=lambda h: load[h])

    # ---------------------------------------------------------------- children

    def _start(self, c: _Child, prefer: str | None) -> None:
        if not self._seen:
            return  # "new": started once the hosts are known
        host = self._place(c, prefer)
        if host is None:
            hosts = self.hosts()
            if c.refused and hosts and not (set(hosts) - c.refused):
                if c.state != "failed":
                    c.state = "failed"
                    self._event("failed", c, None, None, ("refused on every host",))
            elif c.state != "waiting":
                c.state = "waiting"
                self._event("waiting", c, None, None, ())
            return
        if host == self.node.id:
            why = _resolves(c.spec.target)
            if why is not None:
                c.refused.add(host)
                self._event("refused", c, None, host, why)
                self._start(c, None)
                return
        self._spawn(c, host, "restarted" if c.started else "started", ())

    def _spawn(self, c: _Child, host: str, kind: str, why: tuple[Any, ...]) -> None:
        node = self.node
        port = lowlevel.spawn_linked(node, host, self.port, c.spec.target, *c.spec.args)
        c.restarting = c.started
        if c.started:
            c.restarts += 1
        c.started = True
        c.port, c.node, c.state = port, host, "running"
        c.monitor = node.mon(port, lambda *reason: self._child_exited(c, port, reason))
        self._event(kind, c, port, host, why)

    def _terminate(
        self, c: _Child, reason: tuple[Any, ...] = SHUTDOWN, quiet: bool = False
    ) -> None:
        """Kill a running child on purpose: its exit is no failure."""
        if c.port is None:
            return
        port = c.port
        c.monitor.cancel()
        c.port = c.monitor = None
        c.state = "stopped"
        self.node.kil(port, *reason)
        if not quiet:
            self._event("exited", c, port, c.node, reason)

    def _child_exited(self, c: _Child, port: str, reason: tuple[Any, ...]) -> None:
        if self.reason is not None or c.port != port:
            return  # an old port of this child, or the supervisor is gone
        host = c.node
        c.port = c.monitor = None
        c.state = "stopped"
        if _refusal(reason):
            assert host is not None
            c.refused.add(host)  # it never ran: the next start is what this one was
            if c.restarting:
                c.restarts -= 1
            else:
                c.started = False
            self._event("refused", c, port, host, reason)
            self._start(c, None)
            self._changed()
            return
        self._event("exited", c, port, host, reason)
        lost = (
            reason[:1] == ("transport_error",) and host != self.node.id and host not in self._lost
        )
        if lost:
            assert host is not None
            self._lost.add(host)  # until it shows up again
            # A node that died leaves the database within the global nodes'
            # monitor_timeout; one still listed well after that is alive, and
            # only its link to us broke (nothing may dial it again): take it back.
            grace = 2 * self.node.config.monitor_timeout
            lowlevel.timer(self.node, grace, lowlevel.call_in, self.node, self.port,
                           self._recheck, host)  # fmt: skip
        restart = c.spec.restart == "permanent" or (c.spec.restart == "transient" and reason)
        if not restart:
            if c.spec.restart == "temporary":
                self._children.remove(c)
            self._changed()
            return
        stale = reason[:1] == ("transport_error",) and not lost and host != self.node.id
        if not stale and not self._count(c, reason):
            return
        i = self._children.index(c)
        if self.strategy == "one_for_one":
            group = [c]
        elif self.strategy == "one_for_all":
            group = list(self._children)
        else:
            group = self._children[i:]
        # the strategy restarts those that run (or wait to): not those that ended
        group = [o for o in group if o is c or o.port is not None or o.state == "waiting"]
        for o in reversed(group):
            if o is not c:
                self._terminate(o)
        for o in group:
            if o.spec.restart == "temporary" and o is not c:
                self._children.remove(o)
            elif o.port is None:
                self._start(o, o.node if o.node not in self._lost else None)
        self._changed()

    def _count(self, c: _Child, reason: tuple[Any, ...]) -> bool:
        """Count a restart; False (and the supervisor exits) past the intensity."""
        now = self.node.loop.time()
        self._restarts.append(now)
        while self._restarts and self._restarts[0] <= now - self.period:
            self._restarts.popleft()
        if len(self._restarts) <= self.max_restarts:
            return True
        text = (
            f"more than {self.max_restarts} restarts within {self.period:g} s "
            f"(last: {c.spec.id} exited with {reason!r:.200})"
        )
        self.reason = ("max_restarts", text)  # nothing more starts while the kill goes out
        self._event("gave_up", None, None, None, self.reason)
        self.node.kil(self.port, *self.reason)
        return False

    def _exited_self(self, *reason: Any) -> None:
        """The supervisor's port died (stop, gave up, killed, a failure): the end."""
        self.reason = tuple(reason)
        for w in self._watches:
            w.cancel()
        self._watches.clear()
        for c in reversed(self._children):
            if c.port is not None:  # linked: it dies anyway; this reaches it sooner
                c.monitor.cancel()
                self.node.kil(c.port, *(reason or SHUTDOWN))
                c.port = c.monitor = None
                c.state = "stopped"
        self._event("stopped", None, None, None, self.reason)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(SupervisorExited(self.port, self.reason))
        self._waiters.clear()

    def _node_closed(self) -> None:
        """The node closed: its ports died without monitors, this one too."""
        if self.reason is None:
            self.reason = ("node_closed", self.node.id)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(SupervisorExited(self.port, self.reason))
        self._waiters.clear()

    # ---------------------------------------------------------------- events

    def _event(
        self,
        kind: str,
        c: _Child | None,
        port: str | None,
        node: str | None,
        reason: tuple[Any, ...],
    ) -> None:
        ev = Event(kind, self.port, c.spec.id if c is not None else None, port, node, reason)
        level = logging.WARNING if kind in ("refused", "failed", "gave_up") else logging.INFO
        log.log(level, "%s", ev)
        target = self._on_event
        if target is None:
            return
        if isinstance(target, str):
            msg = ("supervisor", kind, self.port, ev.child, port, node, list(reason))
            self.node.snd(target, *msg)
        else:
            lowlevel.post(self.node, lowlevel.call_in, self.node, self.port, target, ev)
