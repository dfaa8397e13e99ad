# The distributed database as every node sees it: its own entries, its
# master, its monitors and queries (Db, DbEntry, DbMonitor, Query).
#
# Every node keeps the entries it set itself (its *local* database) and
# sends each change to its master, a global node. Queries and monitors go
# to the master too. A node without a master keeps writing locally and
# queues its queries and monitors; when it attaches to a master (at start,
# or again after losing one) it sends its whole local database and re-opens
# every monitor, so writes made meanwhile are not lost and each db_mon
# callback gets one call with the difference between what it saw and what
# is now.
#
# While no master vouches for a monitored family (none reachable, or the new
# one has not answered yet) its view is kept as it was and is marked not
# current: a registry that is away for a while is not the loss of every
# service. Only the keys of nodes this node saw go down (their node ID, or
# one of their port IDs) leave such a view at once. Those very keys are
# held back from the next master's first answer, in case that master has
# not noticed yet, until it reports them deleted or for monitor_timeout at
# most: after that what the master lists stands (the node may be alive and
# only its link to this node broke). Other keys of the same node ID, as a
# restarted node's new port IDs, show at once.
#
# Answers (g_chg1, g_chg2, g_reply, g_found) are taken from the current
# master only, and query IDs are random: no other peer can answer this
# node's questions, nor guess what to answer.
#
# A node with no seeds is its own master: it becomes global at once, so the
# database works on a single node too. A node that becomes global while it
# knows other globals (it was a slave, say) is its own master only once
# every global listed in 'g has sent its view (g_set), or monitor_timeout
# has passed: until then its merged view holds little more than its own
# entries, so its views stay as they were, not current, and its queries wait.
#
# Layering: the client creates the global service (aemp/db/_service.py)
# when its node becomes global and calls it; the service reports back only
# through the Owner callbacks (set_own, del_own, answer, globals_changed,
# synced) that Db implements. The node is reached only through the Host
# Protocol (aemp/db/_host.py). Every g_* tag is registered with the node's
# request registry here, once, from two tables that list each tag once:
# ANSWERS below (what a master sends to its slaves) and the service's
# REQUESTS (what global nodes answer), which Db.handle_global extends.

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .._errors import AlreadyHandled, DbTimeout, InvalidArgument, NodeClosed
from .._ids import check_port_id
from .._message import check_message
from .._pending import Pending
from .._runtime import SELF
from ..kernel import Handle
from ._host import Cancellable, Host
from ._names import Shard, check_family, check_subkey
from ._service import REQUESTS, Global, GlobalRequest

log = logging.getLogger("aemp.db")

Callback = Callable[..., Any]


class _Family:
    """One monitored family: the view from the master and who watches it."""

    __slots__ = ("current", "data", "filled", "hidden", "pruned", "reveal", "view", "watchers")

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.view = types.MappingProxyType(self.data)
        self.filled = False  # True once a master sent the whole family
        self.current = False  # ... and that master is still ours
        self.watchers: dict[DbMonitor, None] = {}
        # keys of nodes seen going down while not current: held back from
        # the next g_chg1 (pruned), then while the master still lists them
        # (hidden, with its values) until `reveal` fires
        self.pruned: set[str] = set()
        self.hidden: dict[str, Any] = {}
        self.reveal: asyncio.TimerHandle | None = None

    def stale(self) -> None:
        """No master vouches for the view any more (until the next g_chg1)."""
        self.current = False
        self.pruned.update(self.hidden)
        self.hidden.clear()
        if self.reveal is not None:
            self.reveal.cancel()
            self.reveal = None


class Db:
    """One node's side of the database."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.id = host.id
        self.local: Shard = {}
        self.glob: Global | None = None
        self.master: str | None = None
        self.families: dict[str, _Family] = {}
        self.queries: dict[str, Query[Any]] = {}
        self.finds: dict[str, list[asyncio.Future[list[str]]]] = {}
        self.known_globals: dict[str, None] = {}
        # Node.wait_joined: woken when a master is set, or the node closes
        self.master_waiters: list[asyncio.Future[None]] = []
        self._gen = 0
        self._gens: dict[tuple[str, str], int] = {}  # which db_set wrote a local key last
        # becoming global: waiting for the g_set of every global in 'g (see become_global)
        self._sync: asyncio.TimerHandle | None = None
        # the global service's requests: REQUESTS, and what handle_global adds
        self.global_requests: dict[str, GlobalRequest] = dict(REQUESTS)
        for tag in (*ANSWERS, *self.global_requests):
            host.handle(tag, self._node_request(tag))

    def _node_request(self, tag: str) -> Callable[..., None]:
        def handler(sender: str | None, *args: Any) -> None:
            if sender is None:
                # this node's own code writes with db_set and friends; a g_*
                # request it sends to its own node port is one it passed on
                # for someone else (a relay carries no authority of its own)
                raise ValueError("this node's own code sent it to its own node port")
            self.request(sender, tag, list(args))

        return handler

    def handle_global(self, tag: str, fn: GlobalRequest) -> None:
        """Global nodes answer node request `tag` with fn(service, src, *args)."""
        if type(tag) is not str or not tag:
            raise InvalidArgument(f"handle_global: tag must be a non-empty str (got {tag!r:.60})")
        if tag in self.global_requests or tag in ANSWERS:
            raise AlreadyHandled(
                f"handle_global: the global-node request {tag!r} is handled already"
            )
        self.host.handle(tag, self._node_request(tag))
        self.global_requests[tag] = fn

    def statistics(self) -> dict[str, Any]:
        """Counts: this node's entries, the families it watches and their monitors."""
        return {
            "entries": sum(len(kv) for kv in self.local.values()),
            "families": len(self.families),
            "monitors": sum(len(fam.watchers) for fam in self.families.values()),
            "queries": len(self.queries),
            "global": self.glob is not None,
            "merged": sum(len(kv) for kv in self.glob.merged.values()) if self.glob else 0,
        }

    def snapshot(self) -> dict[str, Any]:
        """Copies of what this node's database holds (for tests and for users)."""
        glob = self.glob
        return {
            "local": {f: dict(kv) for f, kv in self.local.items()},
            "master": self.master,
            "global": glob is not None,
            "globals": sorted(glob.globals) if glob is not None else [],
            "merged": {f: dict(kv) for f, kv in glob.merged.items()} if glob is not None else {},
            "shards": (
                {
                    src: {f: dict(kv) for f, kv in shard.items()}
                    for src, shard in glob.shards.items()
                }
                if glob is not None
                else {}
            ),
        }

    def _check_open(self) -> None:
        if self.host.closed:
            raise NodeClosed(f"node {self.id!r} is closed")

    # ------------------------------------------------------------ writes

    def set(self, family: str, key: str, value: Any = None) -> DbEntry:
        family = check_family(family, write=True)
        check_subkey(key)
        check_message((value,))
        return DbEntry(self, family, key, self._set(family, key, value))

    def _set(self, family: str, key: str, value: Any) -> int:
        self._gen += 1
        self._gens[family, key] = self._gen
        self.local.setdefault(family, {})[key] = value
        self._out(family, {key: value}, None)
        return self._gen

    def delete(self, family: str, *keys: str) -> None:
        family = check_family(family, write=True)
        for k in keys:
            check_subkey(k)
        self._del(family, keys)

    def _del(self, family: str, keys: tuple[str, ...] | list[str]) -> None:
        fam = self.local.get(family)
        if not fam:
            return
        gone = [k for k in keys if k in fam]
        if not gone:
            return
        for k in gone:
            del fam[k]
            del self._gens[family, k]
        if not fam:
            del self.local[family]
        self._out(family, None, gone)

    # the Owner callbacks of the global service (see the header)

    def set_own(self, family: str, key: str, value: Any) -> None:
        self._set(family, key, value)

    def del_own(self, family: str, key: str) -> None:
        self._del(family, [key])

    def answer(self, tag: str, args: list[Any]) -> None:
        self.from_master(self.id, tag, args)

    def globals_changed(self) -> None:
        if self._sync is not None:
            self.host.post(self.sync_check)

    def synced(self) -> None:
        self.sync_check()

    def reg(self, family: str, port: str | None, value: Any) -> DbEntry:
        if port is None:
            port = SELF.get()
            if port is None:
                raise InvalidArgument(
                    "db_reg needs a port: call it from a port callback, or pass port=..."
                )
        check_port_id(port)  # before anything is set
        entry = self.set(family, port, value)
        entry._mon = self.host.mon(port, lambda *reason: entry.cancel())
        return entry

    def _out(self, family: str, sets: dict[str, Any] | None, dels: list[str] | None) -> None:
        if self.glob is not None:
            self.glob.update(self.id, family, sets, dels)
        elif self.master is not None:
            if dels:
                self._to_master("g_upd", family, sets, dels)
            else:
                self._to_master("g_upd", family, sets)

    # ------------------------------------------------------------ reads

    def query(
        self,
        kind: str,
        family: str,
        timeout: float | None,
        cb: Callback | None,
        err: Callable[[Exception], Any] | None,
    ) -> Query[Any]:
        if kind != "families":  # the one query of the whole database
            family = check_family(family, write=False)
        self._check_open()
        # a query ID that cannot be guessed from earlier ones (12 random bytes)
        q: Query[Any] = Query(self, kind, family, secrets.token_urlsafe(12), timeout, cb, err)
        self.queries[q.id] = q
        if self.master is not None:
            self._to_master(*q.request)
        return q

    def mon(self, family: str, cb: Callback) -> DbMonitor:
        family = check_family(family, write=False)
        if not callable(cb):
            raise InvalidArgument(f"db_mon callback must be callable, got {cb!r}")
        self._check_open()
        m = DbMonitor(self, family, cb, SELF.get())
        fam = self.families.get(family)
        if fam is None:
            fam = self.families[family] = _Family()
            if self.master is not None:
                self._to_master("g_mon1", family)
        fam.watchers[m] = None
        if fam.filled:
            self.host.post(self._first_call, fam, m)
        return m

    def _first_call(self, fam: _Family, m: DbMonitor) -> None:
        if not m.primed:
            m._notify(fam.view, list(fam.data), [], [])

    def _unmon(self, m: DbMonitor) -> None:
        fam = self.families.get(m.family)
        if fam is None or m not in fam.watchers:
            return
        del fam.watchers[m]
        if fam.watchers:
            return
        fam.stale()
        del self.families[m.family]
        if self.master is not None:
            self._to_master("g_mon0", m.family)

    async def lookup(self, nodeid: str) -> list[str]:
        """Where `nodeid` listens, as the database knows it ([] if unknown)."""
        if self.glob is not None:
            return _addresses(self.glob.merged.get("'l", {}).get(nodeid))
        fut: asyncio.Future[list[str]] = self.host.loop.create_future()
        waiting = self.finds.setdefault(nodeid, [])
        waiting.append(fut)
        if len(waiting) == 1 and self.master is not None:
            self._to_master("g_find", nodeid)
        try:
            return await fut
        finally:
            if not fut.done() and fut in waiting:
                waiting.remove(fut)
                if not waiting and self.finds.get(nodeid) is waiting:
                    del self.finds[nodeid]

    # ------------------------------------------------------------ the master

    def _to_master(self, tag: str, *args: Any) -> None:
        if self.host.closed:  # nothing to tell: the links are gone (a cancel in close())
            return
        if self.master == self.id:
            assert self.glob is not None
            self.glob.request(self.id, tag, list(args))
        elif self.master is not None:
            self.host.request(self.master, tag, *args)

    def _master_set(self, master: str) -> None:
        if master != self.id:
            log.info("node %s: master is %s", self.id, master)
        self.master = master
        self._wake_master_waiters()
        if master != self.id:
            self._to_master("g_slave", {f: dict(kv) for f, kv in self.local.items()})
        for family, fam in self.families.items():
            fam.stale()  # until the new master's g_chg1
            self._to_master("g_mon1", family)
        for nodeid in self.finds:
            self._to_master("g_find", nodeid)
        for q in list(self.queries.values()):
            self._to_master(*q.request)

    def _master_search(self) -> None:
        host = self.host
        seeds = {n for n in host.seed_ids() or () if n}
        up = [n for n in seeds if host.node_is_up(n)]
        if not up:
            up = [n for n in self.known_globals if host.node_is_up(n)]
        if up:
            self._master_set(random.choice(up))

    def become_global(self, why: str = "") -> None:
        if self.glob is not None:
            return
        if why:
            log.info("node %s: now a global node (%s)", self.id, why)
        glob = self.glob = Global(self.host, self, self.global_requests)
        glob.replace(self.id, {f: dict(kv) for f, kv in self.local.items()})
        self._set("'g", self.id, None)
        for nodeid in self.host.up_nodes():
            glob.node_up(nodeid)
            if nodeid in self.known_globals:
                # it announced itself while we were not global and will not
                # do so again on this link: mesh with it from our side too
                glob.meet(nodeid)
        glob.start()
        if not glob.unsynced():
            self._master_set(self.id)
            return
        # Our merged view holds only our own entries until the other globals'
        # g_set arrive: answering our own monitors and queries from it now
        # would report every other node's entries deleted (and soon added
        # back). Views stay as they are, not current, until every global in
        # 'g has sent its view or monitor_timeout has passed.
        self.master = None
        for fam in self.families.values():
            fam.stale()
        self._sync = self.host.loop.call_later(self.host.config.monitor_timeout, self._synced, True)

    def sync_check(self) -> None:
        """Becoming global: is every other global's view in? Then serve ourselves."""
        if self._sync is not None and self.glob is not None and not self.glob.unsynced():
            self._synced(False)

    def _synced(self, late: bool) -> None:
        if self._sync is None or self.host.closed:
            return
        self._sync.cancel()
        self._sync = None
        if late and self.glob is not None:
            log.info("node %s: global without the view of %s", self.id,
                     ", ".join(sorted(self.glob.unsynced_ids())))  # fmt: skip
        self._master_set(self.id)

    # ------------------------------------------------------------ events

    def started(self, listeners: list[str]) -> None:
        if listeners:
            self._set("'l", self.id, listeners)
        if self.glob is not None:
            self.glob.start()

    def node_up(self, nodeid: str) -> None:
        if self.glob is not None:
            self.glob.node_up(nodeid)
        self.seed_known(nodeid)

    def seed_known(self, nodeid: str) -> None:
        """`nodeid` may be one of our seeds; if it is up, ask it to serve us."""
        seeds = self.host.seed_ids()
        if (
            seeds is None
            or nodeid == self.id
            or nodeid not in seeds
            or not self.host.node_is_up(nodeid)
        ):
            return
        self.host.request(nodeid, "g_slave")  # makes the seed global
        if self.master is None:
            self._master_set(nodeid)

    def node_down(self, nodeid: str) -> None:
        if self.host.closed:
            return  # closing: every connection goes, and nothing is left to tell
        self.known_globals.pop(nodeid, None)
        if self.glob is not None:
            self.glob.node_down(nodeid)
            return  # its own master: its views follow the merged database
        if nodeid == self.master:
            log.info("node %s: lost its master %s", self.id, nodeid)
            self.master = None
            for fam in self.families.values():
                fam.stale()
            self._master_search()
        self.host.post(self._prune, nodeid)

    def _prune(self, nodeid: str) -> None:
        """`nodeid` went down: take its keys out of the views no master vouches for.

        A view that is not current is kept as it was (a registry that is away
        for a while is not the loss of every service), but the entries of a
        node this node saw go down are dropped at once: keys that are its
        node ID or one of its port IDs. These keys are held back from the
        next g_chg1 (see _chg1), in case the new master has not yet noticed.
        """
        if self.glob is not None or self.host.closed or self.host.node_is_up(nodeid):
            return
        prefix = nodeid + "#"
        for fam in self.families.values():
            if fam.current:
                continue  # the master reports the node's keys deleted itself
            dead = [k for k in fam.data if k == nodeid or k.startswith(prefix)]
            if dead:
                fam.pruned.update(dead)
                for k in dead:
                    del fam.data[k]
                for m in list(fam.watchers):
                    if m.primed:
                        m._notify(fam.view, [], [], dead)

    def _reveal(self, fam: _Family) -> None:
        """monitor_timeout after a g_chg1, the master still lists keys we held
        back: it would have noticed their node's death by now, so they stand."""
        fam.reveal = None
        hidden = fam.hidden
        if not hidden or not fam.current or self.host.closed:
            return
        fam.hidden = {}
        fam.data.update(hidden)
        for m in list(fam.watchers):
            if m.primed:
                m._notify(fam.view, list(hidden), [], [])

    def master_changed(self) -> asyncio.Future[None]:
        """A future resolved when the next master is set (or the node closes)."""
        fut: asyncio.Future[None] = self.host.loop.create_future()
        self.master_waiters.append(fut)
        return fut

    def _wake_master_waiters(self) -> None:
        waiters, self.master_waiters = self.master_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        self._wake_master_waiters()
        if self._sync is not None:
            self._sync.cancel()
            self._sync = None
        for fam in self.families.values():
            fam.stale()
        for q in list(self.queries.values()):
            q._fail(NodeClosed(f"node {self.id!r} was closed"))
        for waiting in self.finds.values():
            for fut in waiting:
                if not fut.done():
                    fut.set_result([])
        self.finds.clear()

    # ------------------------------------------------------------ requests

    def request(self, src: str, tag: str, args: list[Any]) -> None:
        """A g_* request from node `src` (this node itself included)."""
        if tag in ANSWERS:
            self.from_master(src, tag, args)
        elif tag == "g_global" and self.glob is None:
            self.known_globals[src] = None
            if self.master is None:
                self._master_search()
        elif tag == "g_slave" and self.glob is None:
            self.become_global(f"{src} asked")
            if args:
                self.request(src, tag, args)
        elif self.glob is not None:
            self.glob.request(src, tag, args)
        else:
            raise ValueError(f"{tag!r} is for global nodes, and this node is not one")

    def from_master(self, src: str, tag: str, args: list[Any]) -> None:
        if src != self.master:
            return  # a late word from a former master, or a forgery
        ANSWERS[tag](self, args)

    def _reply(self, args: list[Any]) -> None:
        qid, result = args
        q = self.queries.get(qid) if type(qid) is str else None
        if q is not None:
            q._answer(result)

    def _found(self, args: list[Any]) -> None:
        nodeid, addrs = args
        found = _addresses(addrs)
        for fut in self.finds.pop(nodeid, ()) if type(nodeid) is str else ():
            if not fut.done():
                fut.set_result(found)

    def _g_chg1(self, args: list[Any]) -> None:
        family, data = args
        self._chg1(family, {} if data is None else data)

    def _g_chg2(self, args: list[Any]) -> None:
        family, sets, dels = (*args, None) if len(args) == 2 else args
        self._chg2(family, sets or {}, dels or [])

    def _chg1(self, family: Any, data: Any) -> None:
        if type(data) is not dict:
            raise TypeError(f"g_chg1 wants a family object, got {data!r:.80}")
        fam = self.families.get(family) if type(family) is str else None
        if fam is None:
            return
        fam.stale()
        held = {k: data[k] for k in fam.pruned if k in data}
        fam.pruned.clear()
        if held:
            data = {k: v for k, v in data.items() if k not in held}
            fam.hidden = held
            fam.reveal = self.host.loop.call_later(
                self.host.config.monitor_timeout, self._reveal, fam
            )
        old = fam.data
        added = [k for k in data if k not in old]
        changed = [k for k, v in data.items() if k in old and old[k] != v]
        deleted = [k for k in old if k not in data]
        old.clear()
        old.update(data)
        fam.filled = fam.current = True
        # one call per attach: the first with everything, later ones with
        # the difference to the view kept meanwhile (perhaps none at all)
        for m in list(fam.watchers):
            if not m.primed:
                m._notify(fam.view, list(old), [], [])
            else:
                m._notify(fam.view, added, changed, deleted)

    def _chg2(self, family: Any, sets: Any, dels: Any) -> None:
        if type(sets) is not dict or type(dels) is not list:
            raise TypeError(f"g_chg2 wants an object and a list, got {sets!r:.60}, {dels!r:.60}")
        fam = self.families.get(family) if type(family) is str else None
        if fam is None or not fam.current:
            return
        data = fam.data
        hidden = fam.hidden
        added: list[str] = []
        changed: list[str] = []
        deleted: list[str] = []
        if hidden:
            # the master's word on a key held back: a delete was reported
            # already, a new value shows
            for k in dels:
                if type(k) is str:
                    hidden.pop(k, None)
            for k in sets:
                hidden.pop(k, None)
        for k, v in sets.items():
            if k not in data:
                added.append(k)
            elif data[k] != v:
                changed.append(k)
            else:
                continue
            data[k] = v
        for k in dels:
            if type(k) is str and k in data:
                del data[k]
                deleted.append(k)
        if added or changed or deleted:
            for m in list(fam.watchers):
                if m.primed:
                    m._notify(fam.view, added, changed, deleted)


# What a master sends its slaves, taken from the current master only; each
# of these g_* tags is listed here once (the global service's in REQUESTS).
ANSWERS: dict[str, Callable[[Db, list[Any]], None]] = {
    "g_chg1": Db._g_chg1,
    "g_chg2": Db._g_chg2,
    "g_reply": Db._reply,
    "g_found": Db._found,
}


def _addresses(addrs: Any) -> list[str]:
    if type(addrs) is list:
        return [a for a in addrs if type(a) is str]
    return []


class DbEntry(Handle):
    """A ``db_set`` or ``db_reg`` entry: cancel() deletes it."""

    __slots__ = ("_db", "_gen", "_mon", "family", "key")

    def __init__(self, db: Db, family: str, key: str, gen: int) -> None:
        super().__init__()
        self._db = db
        self.family = family
        self.key = key
        self._gen = gen
        self._mon: Cancellable | None = None

    def _undo(self) -> None:
        if self._mon is not None:
            self._mon.cancel()
        db = self._db
        # only the entry this handle wrote: a later db_set of the key stays
        if db._gens.get((self.family, self.key)) == self._gen and not db.host.closed:
            db._del(self.family, [self.key])

    def __repr__(self) -> str:
        return f"<aemp.DbEntry {self.family!r}/{self.key!r}{'' if self._active else ' gone'}>"


class DbMonitor(Handle):
    """A ``db_mon`` registration: cancel() stops the calls."""

    __slots__ = ("_cb", "_db", "_owner", "family", "primed")

    def __init__(self, db: Db, family: str, cb: Callback, owner: str | None) -> None:
        super().__init__()
        self._db = db
        self.family = family
        self._cb = cb
        self._owner = owner
        self.primed = False

    def _notify(
        self, view: Mapping[str, Any], added: list[str], changed: list[str], deleted: list[str]
    ) -> None:
        if not self._active:
            return
        host = self._db.host
        if self._owner is not None and not host.port_alive(self._owner):
            self.cancel()  # the port that asked is gone
            return
        self.primed = True
        host.call_in(self._owner, self._cb, (view, added, changed, deleted))

    @property
    def current(self) -> bool:
        """True while the master this node is attached to vouches for the view.

        False before the first call, while the node has no master (the view
        is the last one it had, less the entries of nodes seen to go down)
        and after a change of master until the new master's answer; the call
        that reports the difference comes when it is current again.
        """
        fam = self._db.families.get(self.family)
        return fam is not None and fam.current and self in fam.watchers

    def _undo(self) -> None:
        self._db._unmon(self)

    def __repr__(self) -> str:
        return f"<aemp.DbMonitor {self.family!r}{'' if self._active else ' cancelled'}>"


R = TypeVar("R")


class Query(Pending[R]):
    """A pending ``db_family``, ``db_keys``, ``db_values`` or ``db_families``:
    await it, or cancel() it."""

    __slots__ = ("_db", "_timer", "family", "id", "kind", "request")

    def __init__(
        self,
        db: Db,
        kind: str,
        family: str,
        qid: str,
        timeout: float | None,
        cb: Callback | None,
        err: Callable[[Exception], Any] | None,
    ) -> None:
        self._db = db
        self.kind = kind
        self.family = family
        self.id = qid
        self.request = (f"g_db_{kind}", family, qid)
        self._cb = cb
        self._err = err
        self._owner = SELF.get()
        self._done = False
        self._exc = None
        self._future = None
        self._timer = (
            db.host.loop.call_later(timeout, self._on_timeout, timeout)
            if timeout is not None
            else None
        )

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        what = "()" if self.kind == "families" else f"({self.family!r})"
        return f"<aemp.Query db_{self.kind}{what} {state}>"

    def _fail(self, exc: BaseException) -> None:
        self._finish(None, exc)

    def _answer(self, result: Any) -> None:
        want = dict if self.kind in ("family", "families") else list
        if type(result) is not want:
            raise TypeError(f"g_reply to db_{self.kind} is not a {want.__name__}: {result!r:.80}")
        self._finish(result, None)

    def _on_timeout(self, timeout: float) -> None:
        db = self._db
        where = f"master {db.master}" if db.master else "no master reachable"
        what = "()" if self.kind == "families" else f"({self.family!r})"
        self._finish(None, DbTimeout(f"db_{self.kind}{what}", timeout, where))

    def _finish(self, result: Any, exc: BaseException | None) -> None:
        if self._done:
            return
        db = self._db
        db.queries.pop(self.id, None)
        if self._timer is not None:
            self._timer.cancel()
        self._result = result
        self._settle(exc)
        run = self._callback(exc, (result,))
        if run is not None:
            host = db.host
            host.post(host.call_in, self._owner, *run)
