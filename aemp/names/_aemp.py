# aemp://: name leases on the network's global nodes.
#
# The lease table lives on the global nodes. One of them decides: the
# *leader*, the global with the smallest node ID among those a global sees
# (itself and lowlevel.global_nodes()). A node asks its master
# (node.master) with the global-node request "g_names"; a master that is
# not the leader passes the request on once, naming the asking node as the
# holder. The leader answers from its table and sends every change to the
# other globals ("g_names_sync"), which keep a copy.
#
# Leases lapse `ttl` seconds after the leader last heard a grant or renewal;
# the holder counts its deadline from when it *sent* that request
# (_api.py), so it gives the name up first. A holder node that dies simply
# stops renewing: the name is free one ttl after its last renewal, never
# before (freeing it at the moment the leader sees the link drop would let
# somebody else in before a live holder on a flaky link knew).
#
# A global that becomes leader (the old one died, or a partition cut it
# off) first waits the longest ttl in use, its *quiet period*: it grants no name then,
# and adopts renewals of leases it has no record of (a grant whose sync
# was lost with the old leader). After it every lease the old leader
# granted has either been renewed here or lapsed on its holder's side.
#
# Partitions: each side has a leader and may grant the same name. When the
# globals see each other again, a global whose leader changed sends its
# table to the new leader ("g_names_merge"), which keeps, for each name held
# on both sides, the *older* grant (then the smaller holder ID) and sends
# the merged table to everybody. The other holder's next renewal is refused
# with NameLost before it could succeed; list() reads the leader's table,
# one holder per name. Tokens come from each leader's counter and may
# repeat across a partition; docs/names.md says so and points to etcd://.
#
# A capability (layer 6): imports only aemp, aemp.lowlevel and the leaves.

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aemp
from aemp import lowlevel

from .._errors import AempError, CallTimeout, InvalidArgument, NodeClosed, PortDead
from .._runtime import CURRENT
from ._api import (
    Backend,
    BackendUnavailable,
    Lease,
    Name,
    NameInUse,
    NameLost,
    NameManager,
    NameNotExist,
    UnknownBackend,
    check_name,
    check_ttl,
    register_backend,
    smallest_free,
)

log = logging.getLogger("aemp.names")

#: names in one leader's table, at most: a peer that asks for more is refused
MAX_NAMES = 100_000
#: how often a global looks whether the leader changed (seconds)
LEADER_CHECK = 0.1
#: a request waits at most this long for a master, a leader or a reply
REQUEST_TIMEOUT = 5.0


@dataclass(slots=True)
class _Entry:
    created_at: float
    updated_at: float
    token: int
    granted_at: float  # wall clock of the grant: the older grant wins a merge
    holder: str | None = None  # node ID, None when free
    expires: float = 0.0  # loop clock

    def wire(self, now: float) -> list[Any]:
        left = max(0.0, self.expires - now) if self.holder else 0.0
        return [self.created_at, self.updated_at, self.token, self.granted_at, self.holder, left]

    @classmethod
    def unwire(cls, w: Any, now: float) -> _Entry:
        if not isinstance(w, list | tuple) or len(w) != 6:
            raise ValueError(f"names: a table entry is a list of 6 (got {w!r:.60})")
        c, u, t, g, h, left = w
        if not all(isinstance(x, int | float) for x in (c, u, g, left)) or type(t) is not int:
            raise ValueError(f"names: malformed table entry {w!r:.60}")
        if h is not None and not isinstance(h, str):
            raise ValueError(f"names: malformed holder {h!r:.60}")
        return cls(float(c), float(u), t, float(g), h, now + float(left))


def _live(e: _Entry, now: float) -> bool:
    """Whether `e` is held now; a lapsed lease is freed on the way (lazily:
    no request walks the whole table, except list and the exchanges
    between globals)."""
    if e.holder is not None and now > e.expires:
        e.holder = None
    return e.holder is not None


def _seconds(optional: Any) -> float:
    """The ttl a peer sent as an optional last argument (0.0 without one)."""
    if optional and isinstance(optional[0], int | float) and 0 <= optional[0] <= 3600:
        return float(optional[0])
    return 0.0


def _older(a: _Entry, b: _Entry) -> _Entry:
    return a if (a.granted_at, a.holder or "") <= (b.granted_at, b.holder or "") else b


class LeaseTable:
    """One global node's lease table and its part in the leader protocol."""

    def __init__(self, node: aemp.Node) -> None:
        self.node = node
        self.loop = asyncio.get_running_loop()
        self.names: dict[tuple[str, str], _Entry] = {}
        self.counter = 0
        self.leader: str | None = None
        self.quiet_until = 0.0
        # the longest ttl granted here or by a leader whose table we copied:
        # a new leader's quiet period, long enough for every lease the old
        # one may have renewed to lapse on its holder's side
        self.ttl_seen = 0.0
        lowlevel.handle_global(node, "g_names", self._g_names)
        lowlevel.handle_global(node, "g_names_sync", self._g_sync)
        lowlevel.handle_global(node, "g_names_merge", self._g_merge)
        self._task = lowlevel.spawn_task(node, self._watch_leader())

    # ------------------------------------------------------------ who decides

    def current_leader(self) -> str:
        """The leader as this node sees it now; a change starts here, so that
        a new leader's quiet period begins before it answers anything."""
        self._check_leader()
        return self.leader or self.node.id

    def _view(self) -> str:
        return min([self.node.id, *lowlevel.global_nodes(self.node)])

    async def _watch_leader(self) -> None:
        while True:
            self._check_leader()
            await asyncio.sleep(LEADER_CHECK)

    def _check_leader(self) -> None:
        if not self.node.is_global:
            return
        leader = self._view()
        if leader == self.leader:
            return
        old, self.leader = self.leader, leader
        if leader == self.node.id:
            if old is not None:
                # a leader we were not: wait out every lease it may have granted
                self.quiet_until = self.loop.time() + max(self.ttl_seen, 1.0)
                for e in self.names.values():
                    if e.holder:
                        e.expires = max(e.expires, self.quiet_until)
            log.debug("names: %s leads the lease table", self.node.id)
        elif self.names:
            lowlevel.request(self.node, leader, "g_names_merge", self._snapshot())

    def _snapshot(self) -> list[Any]:
        now = self.loop.time()
        self._sweep(now)
        entries = [[f, n, e.wire(now)] for (f, n), e in self.names.items()]
        return [self.counter, entries, self.ttl_seen]

    def _sweep(self, now: float) -> None:
        for e in self.names.values():
            if e.holder is not None and now > e.expires:
                e.holder = None

    def _sync(self, changes: list[Any], full: bool = False) -> None:
        for g in lowlevel.global_nodes(self.node):
            lowlevel.request(
                self.node, g, "g_names_sync", self.counter, changes, full, self.ttl_seen
            )

    def _changed(self, family: str, name: str) -> None:
        e = self.names.get((family, name))
        self._sync([[family, name, e.wire(self.loop.time()) if e else None]])

    # ------------------------------------------------------------ requests

    def _g_names(self, sender: str, op: Any, holder: Any, args: Any, reply: Any, *_: Any) -> None:
        if not isinstance(reply, str):
            raise TypeError(f"g_names: reply must be a port ID (got {reply!r:.40})")
        if holder is None:
            holder = sender
        elif holder != sender and sender not in lowlevel.global_nodes(self.node):
            raise ValueError(f"g_names: {sender!r} may not ask for {holder!r}")
        if self.current_leader() != self.node.id:
            if holder != sender:  # passed on once already: the asker tries again
                self.node.snd(reply, "retry", "not the leader")
                return
            lowlevel.spawn_task(self.node, self._forward(op, holder, args, reply))
            return
        try:
            answer = self.answer(op, holder, args)
        except (TypeError, ValueError) as e:
            self.node.snd(reply, "error", str(e)[:200])
            raise
        self.node.snd(reply, *answer)

    async def _forward(self, op: Any, holder: str, args: Any, reply: str) -> None:
        leader = self.current_leader()
        try:
            answer = await self.node.cal(
                leader, "g_names", op, holder, args, timeout=REQUEST_TIMEOUT
            )
        except (PortDead, CallTimeout) as e:
            answer = ("retry", f"leader {leader!r}: {e}")
        except NodeClosed:
            return
        self.node.snd(reply, *answer)

    def answer(self, op: Any, holder: str, args: Any) -> tuple[Any, ...]:
        """The leader's answer to one request, as a tuple: ("ok", ...),
        ("in_use",), ("not_exist",), ("lost", why) or ("retry", why)."""
        now = self.loop.time()
        if not isinstance(args, list | tuple):
            raise TypeError(f"g_names: args must be a list (got {args!r:.40})")
        if op == "grant":
            family, name, must_exist, ttl = args
            return self._grant(check_name("family", family), name, bool(must_exist),
                               holder, check_ttl(ttl), now)  # fmt: skip
        if op == "renew":
            family, name, token, ttl = args
            return self._renew(check_name("family", family), check_name("name", name),
                               token, holder, check_ttl(ttl), now)  # fmt: skip
        if op == "release":
            family, name, token = args
            e = self.names.get((check_name("family", family), check_name("name", name)))
            if e is not None and _live(e, now) and (token is None or token == e.token):
                e.holder = None
                self._changed(family, name)
            return ("ok",)
        if op == "list":
            (family,) = args
            self._sweep(now)
            return ("ok", [[f, n, e.wire(now)] for (f, n), e in self.names.items()
                           if family is None or f == family])  # fmt: skip
        if op == "reset":
            self.names.clear()
            self._sync([], full=True)
            return ("ok",)
        raise ValueError(f"g_names: unknown operation {op!r:.40}")

    def _grant(
        self, family: str, name: Any, must_exist: bool, holder: str, ttl: float, now: float
    ) -> tuple[Any, ...]:
        if now < self.quiet_until:
            return ("retry", f"new leader, quiet for {self.quiet_until - now:.2f} s")
        if name is None:
            name = smallest_free(
                {n for (f, n), e in self.names.items() if f == family and _live(e, now)}
            )
        check_name("name", name)
        e = self.names.get((family, name))
        if e is None:
            if must_exist:
                return ("not_exist",)
            if len(self.names) >= MAX_NAMES:
                raise ValueError(f"g_names: the table holds {MAX_NAMES} names already")
            e = self.names[(family, name)] = _Entry(time.time(), time.time(), 0, 0.0)
        elif _live(e, now):
            return ("in_use",)
        self.counter += 1
        e.token, e.holder = self.counter, holder
        e.updated_at = e.granted_at = time.time()
        e.expires = now + ttl
        self.ttl_seen = max(self.ttl_seen, ttl)
        self._changed(family, name)
        return ("ok", name, e.token)

    def _renew(
        self, family: str, name: str, token: Any, holder: str, ttl: float, now: float
    ) -> tuple[Any, ...]:
        if type(token) is not int:
            raise TypeError(f"g_names: a token is an int (got {token!r:.40})")
        e = self.names.get((family, name))
        if e is not None:
            _live(e, now)
        if e is not None and e.holder == holder and e.token == token:
            e.expires = now + ttl
            self.ttl_seen = max(self.ttl_seen, ttl)
            return ("ok",)
        if now < self.quiet_until and (e is None or e.holder is None):
            # a lease granted by the leader before us, whose sync never came
            if e is None:
                e = self.names[(family, name)] = _Entry(time.time(), time.time(), token, 0.0)
            e.token, e.holder, e.granted_at, e.expires = token, holder, time.time(), now + ttl
            self.counter = max(self.counter, token)
            self._changed(family, name)
            return ("ok",)
        why = "lapsed or released" if e is None or e.holder is None else "held by another grant"
        return ("lost", why)

    # ------------------------------------------------------------ between globals

    def _g_sync(self, sender: str, counter: Any, changes: Any, full: Any, *more: Any) -> None:
        if sender != self.current_leader() or sender == self.node.id:
            return  # an old leader's late word: the merge settles it
        if type(counter) is not int or not isinstance(changes, list):
            raise TypeError("g_names_sync: (counter, [[family, name, entry]...], full)")
        now = self.loop.time()
        if full:
            self.names.clear()
        for item in changes:
            family, name, w = item
            if w is None:
                self.names.pop((family, name), None)
            else:
                self.names[(check_name("family", family), check_name("name", name))] = (
                    _Entry.unwire(w, now)
                )
        self.counter = max(self.counter, counter)
        self.ttl_seen = max(self.ttl_seen, _seconds(more[:1]))

    def _g_merge(self, sender: str, snapshot: Any, *_: Any) -> None:
        if (
            not isinstance(snapshot, list)
            or len(snapshot) not in (2, 3)
            or type(snapshot[0]) is not int
        ):
            raise TypeError("g_names_merge: [counter, [[family, name, entry]...]]")
        now = self.loop.time()
        self._sweep(now)
        for family, name, w in snapshot[1]:
            key = (check_name("family", family), check_name("name", name))
            theirs = _Entry.unwire(w, now)
            ours = self.names.get(key)
            if theirs.holder is not None and now > theirs.expires:
                theirs.holder = None
            if ours is None:
                self.names[key] = theirs
            elif theirs.holder is not None and ours.holder is not None:
                self.names[key] = _older(ours, theirs)
            elif theirs.holder is not None:
                self.names[key] = theirs
        self.counter = max(self.counter, snapshot[0])
        self.ttl_seen = max(self.ttl_seen, _seconds(snapshot[2:3]))
        if self.current_leader() == self.node.id:
            self._sync(self._snapshot()[1], full=True)


def table(node: aemp.Node) -> LeaseTable:
    """The node's lease table (made on first use; serves while it is global)."""
    return lowlevel.extension(node, "aemp.names", lambda: LeaseTable(node))  # type: ignore[no-any-return]


class AempNames(NameManager):
    def __init__(self, node: aemp.Node, ttl: float) -> None:
        super().__init__(ttl)
        self.node = node
        self.table = table(node)

    async def _ask(self, op: str, *args: Any) -> tuple[Any, ...]:
        return (await self._ask_late(op, *args))[0]

    async def _ask_late(self, op: str, *args: Any) -> tuple[tuple[Any, ...], float]:
        """The leader's answer, and how much later than the first attempt the
        answered one was sent (its ttl counts from then). Retries (no
        master yet, a new leader's quiet period) until REQUEST_TIMEOUT."""
        loop = asyncio.get_running_loop()
        first = loop.time()
        end = first + REQUEST_TIMEOUT
        why = "no master"
        while loop.time() < end:
            master = self.node.master
            late = loop.time() - first
            try:
                if master is None:
                    why = "no master (no global node reachable)"
                elif master == self.node.id:
                    if self.table.current_leader() == self.node.id:
                        answer = self.table.answer(op, self.node.id, list(args))
                    else:
                        answer = await self.node.cal(
                            self.table.current_leader(), "g_names", op, self.node.id, list(args),
                            timeout=max(0.01, end - loop.time()),
                        )  # fmt: skip
                else:
                    answer = await self.node.cal(
                        master, "g_names", op, None, list(args),
                        timeout=max(0.01, end - loop.time()),
                    )  # fmt: skip
                if master is not None:
                    if answer[0] != "retry":
                        return answer, late
                    why = str(answer[1])
            except (PortDead, CallTimeout) as e:
                why = str(e)
            except NodeClosed as e:
                raise BackendUnavailable(f"aemp://: node {self.node.id} is closed") from e
            await asyncio.sleep(0.05)
        raise BackendUnavailable(f"aemp://: no answer from the global nodes ({why})")

    async def _grant(self, family: str, name: str | None, must_exist: bool) -> tuple[Lease, float]:
        answer, late = await self._ask_late("grant", family, name, must_exist, self.ttl)
        if answer[0] == "ok":
            return Lease(family, answer[1], answer[2]), self.ttl + late
        if answer[0] == "in_use":
            raise NameInUse(f"{family}/{name} is held")
        if answer[0] == "not_exist":
            raise NameNotExist(f"{family}/{name} was never acquired")
        raise BackendUnavailable(f"aemp://: {answer!r:.200}")

    async def _renew(self, lease: Lease) -> float:
        answer, late = await self._ask_late(
            "renew", lease.family, lease.name, lease.token, self.ttl
        )
        if answer[0] == "ok":
            return self.ttl + late
        if answer[0] == "lost":
            raise NameLost(f"{lease.family}/{lease.name}: {answer[1]}")
        raise BackendUnavailable(f"aemp://: {answer!r:.200}")

    async def _release(self, family: str, name: str, lease: Lease | None) -> None:
        await self._ask("release", family, name, lease.token if lease else None)

    async def _list(self, family: str | None) -> list[Name]:
        answer = await self._ask("list", family)
        out = []
        for f, n, w in answer[1]:
            e = _Entry.unwire(w, 0.0)
            out.append(Name(f, n, e.created_at, e.updated_at, e.holder is None, e.token))
        return out

    async def _reset(self) -> None:
        await self._ask("reset")


async def _create(rest: str, *, ttl: float = 10.0, node: Any = None, **options: Any) -> AempNames:
    if options:
        raise UnknownBackend(f"aemp:// takes only the options ttl and node (got {sorted(options)})")
    if rest:
        raise UnknownBackend(f"aemp:// takes nothing after the protocol (got {rest!r:.60})")
    if not isinstance(node, aemp.Node):
        raise UnknownBackend(
            f"aemp:// needs node=, the aemp.Node to work through (got {node!r:.60})"
        )
    if node.closed:
        raise BackendUnavailable(f"aemp://: node {node.id} is closed")
    try:
        return AempNames(node, ttl)
    except AempError:
        raise


register_backend(
    Backend(
        "aemp",
        "aemp://: leases on the network's global nodes, through the node given as node=; "
        "a name is released when its holder stops renewing it (its node lost or "
        "stuck). Under a partition both sides may grant a name: see docs/names.md.",
        _create,
    )
)


def serve(node: aemp.Node | None = None) -> None:
    """Serve the aemp:// lease table on `node` (default: the current node).

    Every global node of a network whose nodes use aemp:// must run it:
    call it after making the node, or list ``"aemp.names:serve"`` in the
    node's ``services``. Calling it again does nothing.
    """
    if node is None:
        node = CURRENT.get()
        if node is None:
            raise BackendUnavailable("aemp.names.serve: no node given and no current node")
    if not isinstance(node, aemp.Node):
        raise InvalidArgument(f"serve wants an aemp.Node (got {node!r:.60})")
    table(node)
