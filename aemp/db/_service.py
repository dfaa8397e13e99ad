# The global-node service: the g_* requests other nodes send to a global
# node, the mesh of global nodes, and the sending, around the pure merge
# (aemp/db/_merge.py).
#
# The client side (aemp/db/_client.py) creates this service when its node
# becomes global and calls it; the service never calls the client by name,
# only through the Owner callbacks it was given (its own entries in 'g and
# 'l, answers to this node's own queries, news of the 'g family). It reaches
# the node only through the Host Protocol (aemp/db/_host.py).
#
# Its table of requests is open: every node's client keeps one, starting
# from REQUESTS below (where each tag is listed once), and a capability
# adds its own with Db.handle_global(tag, fn); fn(service, src, *args).
#
# Who may write what (the wire does not say; Perl checks nothing): an entry
# lands in its sender's shard, so it is the sender's and goes when the
# sender goes. The reserved families ('l listeners, 'g global nodes, any
# other '...) say something about a node, so a node that is not one of our
# globals may write them only under its own node ID, and 'g not at all; the
# rest is refused (logged, dropped; the rest of the packet applies).
# Globals relay their slaves' 'l records and their list of globals, so what
# they send is taken, but in 'l a node's own record, when we hold one, shows
# over anything others say about that node.
#
# Nothing here calls user code: answers to this node's own client side go
# through the run queue like any packet would.

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .._errors import MessageError
from ._host import Host
from ._merge import Change, Merge, Shard
from ._names import check_entries, check_keys, check_peer_family, check_shard

log = logging.getLogger("aemp.global")

GlobalRequest = Callable[..., None]  # fn(service, src, *args)


class Owner(Protocol):
    """The client side, as the service reports to it."""

    def set_own(self, family: str, key: str, value: Any) -> None:
        """Set an entry in this node's own local database."""

    def del_own(self, family: str, key: str) -> None:
        """Delete an entry of this node's own local database (if it is there)."""

    def answer(self, tag: str, args: list[Any]) -> None:
        """A g_chg1, g_chg2, g_reply or g_found for this node's own client side."""

    def globals_changed(self) -> None:
        """The merged 'g family (the global nodes) changed."""

    def synced(self) -> None:
        """Another global's view (g_set) came in."""


class Global:
    """The database and mesh duties of a node that became global."""

    def __init__(self, host: Host, owner: Owner, requests: Mapping[str, GlobalRequest]) -> None:
        self.host = host
        self.owner = owner
        self.requests = requests
        self.id = host.id
        self.merge = Merge()
        self.slaves: set[str] = set()
        self.synced: set[str] = set()  # globals whose g_set we hold
        self.subs: dict[str, dict[str, None]] = {}  # family -> subscribed node IDs
        self._mesh_task: asyncio.Future[Any] | None = None
        self._mesh_wake = asyncio.Event()
        self._answering: str | None = None  # the node whose request is being handled

    # the merge's state, read by the client side and by tests
    @property
    def merged(self) -> Shard:
        return self.merge.merged

    @property
    def shards(self) -> dict[str, Shard]:
        return self.merge.shards

    @property
    def globals(self) -> set[str]:
        """Other global nodes we exchanged g_global with."""
        return self.merge.globals

    # ------------------------------------------------------------ merging

    def update(self, src: str, family: str, sets: Mapping[str, Any] | None, dels: Any) -> Change:
        """Apply one source's change to one family; notify and forward it."""
        change = self.merge.update(src, family, sets, dels)
        self._spread(change)
        return change

    def replace(self, src: str, shard: Shard) -> None:
        """Make `shard` the whole database of `src`, as one change per family."""
        for change in self.merge.replace(src, shard):
            self._spread(change)

    def drop(self, src: str) -> None:
        """Forget everything `src` held."""
        for change in self.merge.drop(src):
            self._spread(change)

    def _spread(self, change: Change) -> None:
        """Send a change of the merge to whom it concerns."""
        family, eff_set, eff_del, fwd_set, fwd_del = change
        if fwd_set or fwd_del:
            for g in self.merge.globals:
                self.send(g, "g_upd", family, fwd_set, fwd_del)
        if eff_set or eff_del:
            subs = self.subs.get(family)
            if subs:
                for n in list(subs):
                    self.send(n, "g_chg2", family, eff_set, eff_del)
            if family == "'g":
                self._mesh_wake.set()
                self.owner.globals_changed()

    def unsynced_ids(self) -> list[str]:
        """The globals listed in 'g whose view (g_set) we do not hold yet."""
        return [g for g in self.merged.get("'g", {}) if g != self.id and g not in self.synced]

    def unsynced(self) -> bool:
        return bool(self.unsynced_ids())

    def own_view(self) -> Shard:
        """This node's and its slaves' entries: what other global nodes get as g_set."""
        return self.merge.own_view()

    # ------------------------------------------------------------ requests

    def request(self, src: str, tag: str, args: list[Any]) -> None:
        """A g_* request from `src` (this node's own client side included)."""
        handler = self.requests.get(tag)
        if handler is None:
            raise ValueError(f"{tag!r} is not a request a global node answers")
        # src may not count as up yet: a connection that authenticated while
        # its twin is in its handshake delivers before it becomes the link
        # (aemp/net/_network.py, _settle). Answers to src then wait in the
        # node for that link instead of being lost (see send).
        outer, self._answering = self._answering, src
        try:
            handler(self, src, *args)
        finally:
            self._answering = outer

    def _slave(self, src: str, *db: Any) -> None:
        if not db:
            return  # "become global": we are already
        shard = check_shard(db[0])
        if src not in self.globals:
            shard = {f: self._own(src, "g_slave", f, kv) for f, kv in shard.items()}
        self.slaves.add(src)
        self.replace(src, shard)

    def _upd(self, src: str, family: Any, sets: Any = None, dels: Any = None) -> None:
        family = check_peer_family(family)
        if sets is not None:
            check_entries(sets)
        if dels is not None:
            check_keys(dels)
        if src not in self.globals:
            self.slaves.add(src)
            if sets:
                sets = self._own(src, "g_upd", family, sets)
        self.update(src, family, sets, dels)

    def _set(self, src: str, db: Any) -> None:
        shard = check_shard(db)
        if src not in self.globals:
            # g_set without g_global first: no relay, a node's own entries only
            shard = {f: self._own(src, "g_set", f, kv) for f, kv in shard.items()}
        self.replace(src, shard)
        # a global's listeners go into our own database, so that every
        # global node and every slave of ours can reach it
        addrs = shard.get("'l", {}).get(src)
        if addrs is not None:
            self.owner.set_own("'l", src, addrs)
        if src in self.globals:
            self.synced.add(src)
            self.owner.synced()

    def _global(self, src: str) -> None:
        if src == self.id:
            return
        if src not in self.globals:
            # whatever it did as a slave is superseded: it sends g_set now
            # and, being its own master, follows no family through us
            self.drop(src)
            self.slaves.discard(src)
            for family in [f for f, subs in self.subs.items() if src in subs]:
                self._mon0(src, family)
        self.meet(src)

    def meet(self, nodeid: str) -> None:
        """Mesh with global node `nodeid`: list it in 'g and send it our view.

        Called when it announces itself (g_global), and when this node
        becomes global while connected to a node that had announced itself
        before (as Perl's g_global_connect): without that, the node that
        became global later would never count the other as a global, and
        its slaves' changes would reach nobody.
        """
        if not self.host.node_is_up(nodeid):
            # answering a request that came on a connection which is not the
            # link yet (see request): our own g_global, due when the link is
            # up, must still reach it before our g_set, or it would take our
            # view for a slave's and drop it at that g_global
            self.send(nodeid, "g_global")
        self.globals.add(nodeid)
        self.owner.set_own("'g", nodeid, None)
        self.send(nodeid, "g_set", self.own_view())

    def _own(self, src: str, tag: str, family: str, entries: dict[str, Any]) -> dict[str, Any]:
        """`entries` of `family` less what `src` may not write: see the header."""
        if not family.startswith("'"):
            return entries
        # 'g says who is global: a node says so with g_global, never here
        refused = {k for k in entries if k != src or family == "'g"}
        if not refused:
            return entries
        for k in refused:
            log.warning(
                "node %s: refused %s from %s: %s/%s (a slave writes reserved families "
                "only under its own node ID, and 'g never)",
                self.id, tag, src, family, k[:80],
            )  # fmt: skip
        return {k: v for k, v in entries.items() if k not in refused}

    def _find(self, src: str, nodeid: Any) -> None:
        if type(nodeid) is not str:
            raise TypeError(f"g_find wants a node ID, got {nodeid!r:.80}")
        self.send(src, "g_found", nodeid, self.merged.get("'l", {}).get(nodeid))

    def _mon1(self, src: str, family: Any) -> None:
        family = check_peer_family(family)
        if src not in self.globals:
            self.slaves.add(src)
        self.subs.setdefault(family, {})[src] = None
        self.send(src, "g_chg1", family, dict(self.merged.get(family) or {}) or None)

    def _mon0(self, src: str, family: Any) -> None:
        family = check_peer_family(family)
        subs = self.subs.get(family)
        if subs is not None:
            subs.pop(src, None)
            if not subs:
                del self.subs[family]

    def _query(self, kind: str, src: str, family: Any, qid: Any) -> None:
        if kind == "families":  # the whole database: each family with its entries counted
            counts = {f: len(kv) for f, kv in self.merged.items() if kv}
            self.send(src, "g_reply", qid, counts)
            return
        family = check_peer_family(family)
        data = self.merged.get(family) or {}
        result: Any
        if kind == "keys":
            result = list(data)
        elif kind == "values":
            result = list(data.values())
        else:
            result = dict(data)
        self.send(src, "g_reply", qid, result)

    # ------------------------------------------------------------ nodes

    def node_up(self, nodeid: str) -> None:
        self.host.request(nodeid, "g_global")
        # A node we heard from before its link was up here (its requests came
        # on a connection that was settling, see request) got our answers,
        # but no change since: send() drops what is for a node that is not
        # up. What it holds from us is brought up to date now, whole.
        if nodeid in self.globals:
            self.send(nodeid, "g_set", self.own_view())
        for family, subs in self.subs.items():
            if nodeid in subs:
                self.send(nodeid, "g_chg1", family, dict(self.merged.get(family) or {}) or None)

    def node_down(self, nodeid: str) -> None:
        """A node we were connected to is gone: its entries go with it."""
        for family in [f for f, subs in self.subs.items() if nodeid in subs]:
            self._mon0(nodeid, family)
        # dropped while still known as global: the other globals see it go
        # themselves, so only a slave's loss is forwarded to them
        self.drop(nodeid)
        self.globals.discard(nodeid)
        self.synced.discard(nodeid)
        self.slaves.discard(nodeid)
        # what this node wrote about it: listed as global, where it listens
        # (deleting what is not there is nothing)
        self.owner.del_own("'g", nodeid)
        self.owner.del_own("'l", nodeid)

    def send(self, nodeid: str, tag: str, *args: Any) -> None:
        """Send node request [tag, *args] to `nodeid` if it is up (this node: its client side)."""
        if nodeid == self.id:
            self.host.post(self.owner.answer, tag, list(args))
            return
        if nodeid == self._answering or self.host.node_is_up(nodeid):
            try:
                self.host.request(nodeid, tag, *args)
            except MessageError as e:
                # bytes set by a msgpack node cannot reach a json one
                log.warning("node %s: %s not sent to %s: %s", self.id, tag, nodeid, e)
        # a node that is gone gets nothing: its subscriptions were dropped
        # with it, and it re-subscribes when it attaches again

    # ------------------------------------------------------------ the mesh

    def start(self) -> None:
        """Keep a connection to every global node for as long as we live."""
        if self._mesh_task is None and self.host.seed_ids() is not None:
            self._mesh_task = self.host.spawn_task(self._mesh())

    async def _mesh(self) -> None:
        # Perl's schedule: at once, then 0.6-1.2 s doubling up to monitor_timeout
        cap = self.host.config.monitor_timeout
        delay = 0.0
        while True:
            missing = [
                g for g in self.merged.get("'g", {}) if g != self.id and not self.host.node_is_up(g)
            ]
            for g in missing:
                self.host.connect(g)
            if not missing:
                delay = 0.0
                self._mesh_wake.clear()
                await self._mesh_wake.wait()
                continue
            delay = min(cap, delay * 2 if delay else 0.6 * (1 + random.random()))
            self._mesh_wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._mesh_wake.wait()
            except TimeoutError:
                pass


def _query(kind: str) -> GlobalRequest:
    def handler(glob: Global, src: str, family: Any, qid: Any) -> None:
        glob._query(kind, src, family, qid)

    return handler


# The requests a global node answers; each g_* tag the service speaks is
# listed here once (the client's own are in _client.ANSWERS).
REQUESTS: dict[str, GlobalRequest] = {
    "g_slave": Global._slave,
    "g_upd": Global._upd,
    "g_set": Global._set,
    "g_global": Global._global,
    "g_find": Global._find,
    "g_mon1": Global._mon1,
    "g_mon0": Global._mon0,
    "g_db_family": _query("family"),
    "g_db_keys": _query("keys"),
    "g_db_values": _query("values"),
    # aemp's own: the families with their entries counted ("" for the family)
    "g_db_families": _query("families"),
}
