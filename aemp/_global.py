# The global-node service: the merged database and the g_* requests that
# other nodes send to it.
#
# A global node keeps one *shard* per source: each slave's local database,
# each other global node's merged view of its own slaves, and its own local
# database (a global node is its own slave). The merge of all shards is the
# database that queries read and monitors watch. Who holds which key is
# indexed, so that deleting a key one source held while another still holds
# it falls back to that other value instead of losing it (PROTOCOL.md Part B
# 4.3). Changes that come from this node or its slaves are forwarded to the
# other global nodes; changes that come from other global nodes are not, so
# every change crosses the mesh once.
#
# Who may write what (the wire does not say; PROTOCOL Part B 4.3 checks
# nothing): an entry lands in its sender's shard, so it is the sender's and
# goes when the sender goes. The reserved families ('l listeners, 'g global
# nodes, any other '...) say something about a node, so a node that is not
# one of our globals may write them only under its own node ID, and 'g not
# at all; the rest is refused (logged, dropped; the rest of the packet
# applies). Globals relay their slaves' 'l records and their list of
# globals, so what they send is taken, but in 'l a node's own record, when
# we hold one, shows over anything others say about that node.
#
# Nothing here calls user code: answers to this node's own client side go
# through the run queue like any packet would.

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._db import MAX_FAMILY, Db, valid_peer_family
from ._errors import MessageError

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("aemp.global")

Shard = dict[str, dict[str, Any]]  # family -> subkey -> value


class Global:
    """The database and mesh duties of a node that became global."""

    def __init__(self, node: Node, db: Db) -> None:
        self.node = node
        self.db = db
        self.id = node.id
        self.shards: dict[str, Shard] = {}
        self.merged: dict[str, dict[str, Any]] = {}
        # family -> subkey -> the sources that hold it, oldest write first
        self.holders: dict[str, dict[str, dict[str, None]]] = {}
        self.globals: set[str] = set()  # other global nodes we exchanged g_global with
        self.slaves: set[str] = set()
        self.synced: set[str] = set()  # globals whose g_set we hold
        self.subs: dict[str, dict[str, None]] = {}  # family -> subscribed node IDs
        self._mesh_task: asyncio.Future[Any] | None = None
        self._mesh_wake = asyncio.Event()

    # ------------------------------------------------------------ merging

    def update(
        self, src: str, family: str, sets: Mapping[str, Any] | None, dels: Any
    ) -> tuple[dict[str, Any], list[str]]:
        """Apply one source's change to one family; notify and forward it.

        Returns the change as the merged view saw it.
        """
        shard = self.shards.setdefault(src, {})
        fam = shard.get(family)
        merged = self.merged.get(family)
        holders = self.holders.get(family)
        if fam is None:
            fam = shard[family] = {}
        if merged is None:
            merged = self.merged[family] = {}
            holders = self.holders[family] = {}
        assert holders is not None
        eff_set: dict[str, Any] = {}
        eff_del: list[str] = []
        fwd_set: dict[str, Any] = {}
        fwd_del: list[str] = []
        forward = src not in self.globals
        listeners = family == "'l"
        if sets:
            for k, v in sets.items():
                fam[k] = v
                hs = holders.get(k)
                if hs is None:
                    hs = holders[k] = {}
                else:
                    hs.pop(src, None)
                hs[src] = None  # the newest writer is last
                if listeners and k != src and k in hs:
                    pass  # the node's own record of its listeners stands
                elif k not in merged or merged[k] != v:
                    merged[k] = v
                    eff_set[k] = v
                if forward:
                    fwd_set[k] = v
        if dels:
            for k in dels:
                if k not in fam:
                    continue
                del fam[k]
                hs = holders[k]
                del hs[src]
                if hs:
                    # another source still holds the key: its newest value shows
                    v = self.shards[_shown(family, k, hs)][family][k]
                    if merged[k] != v:
                        merged[k] = v
                        eff_set[k] = v
                else:
                    del holders[k]
                    del merged[k]
                    eff_del.append(k)
                if forward:
                    # what this node's own view (itself and its slaves) now says
                    mine = [h for h in hs if h not in self.globals]
                    if mine:
                        fwd_set[k] = self.shards[_shown(family, k, mine)][family][k]
                    else:
                        fwd_del.append(k)
        if not fam:
            del shard[family]
        if not merged:
            del self.merged[family]
            del self.holders[family]
        if fwd_set or fwd_del:
            pkt = ["", "g_upd", family, fwd_set, fwd_del]
            for g in self.globals:
                self._send(g, pkt)
        if eff_set or eff_del:
            subs = self.subs.get(family)
            if subs:
                pkt = ["", "g_chg2", family, eff_set, eff_del]
                for n in list(subs):
                    self._send(n, pkt)
            if family == "'g":
                self._mesh_wake.set()
                if self.db._sync is not None:
                    self.node.post(self.db.sync_check)
        return eff_set, eff_del

    def replace(self, src: str, shard: Shard) -> None:
        """Make `shard` the whole database of `src`, as one change per family."""
        old = self.shards.get(src, {})
        for family in set(old) | set(shard):
            before = old.get(family, {})
            after = shard.get(family, {})
            sets = {k: v for k, v in after.items() if k not in before or before[k] != v}
            dels = [k for k in before if k not in after]
            if sets or dels:
                self.update(src, family, sets, dels)

    def drop(self, src: str) -> None:
        """Forget everything `src` held."""
        self.replace(src, {})
        self.shards.pop(src, None)

    def unsynced_ids(self) -> list[str]:
        """The globals listed in 'g whose view (g_set) we do not hold yet."""
        return [g for g in self.merged.get("'g", {}) if g != self.id and g not in self.synced]

    def unsynced(self) -> bool:
        return bool(self.unsynced_ids())

    def own_view(self) -> Shard:
        """This node's and its slaves' entries: what other global nodes get as g_set."""
        out: Shard = {}
        for family, keys in self.holders.items():
            for k, hs in keys.items():
                mine = [h for h in hs if h not in self.globals]
                if mine:
                    out.setdefault(family, {})[k] = self.shards[_shown(family, k, mine)][family][k]
        return out

    # ------------------------------------------------------------ requests

    def request(self, src: str, tag: str, args: list[Any]) -> None:
        """A g_* request from `src` (this node's own client side included)."""
        handler = _HANDLERS.get(tag)
        if handler is None:
            extra = self.db.global_handlers.get(tag)
            if extra is None:
                raise ValueError(f"{tag!r} is not a request a global node answers")
            extra(src, *args)
            return
        handler(self, src, *args)

    def _slave(self, src: str, *db: Any) -> None:
        if not db:
            return  # "become global": we are already
        shard = _check_shard(db[0])
        if src not in self.globals:
            shard = {f: self._own(src, "g_slave", f, kv) for f, kv in shard.items()}
        self.slaves.add(src)
        self.replace(src, shard)

    def _upd(self, src: str, family: Any, sets: Any = None, dels: Any = None) -> None:
        family = _check_family(family)
        if sets is not None:
            _check_entries(sets)
        if dels is not None:
            _check_keys(dels)
        if src not in self.globals:
            self.slaves.add(src)
            if sets:
                sets = self._own(src, "g_upd", family, sets)
        self.update(src, family, sets, dels)

    def _set(self, src: str, db: Any) -> None:
        shard = _check_shard(db)
        if src not in self.globals:
            # g_set without g_global first: no relay, a node's own entries only
            shard = {f: self._own(src, "g_set", f, kv) for f, kv in shard.items()}
        self.replace(src, shard)
        # a global's listeners go into our own database, so that every
        # global node and every slave of ours can reach it
        addrs = shard.get("'l", {}).get(src)
        if addrs is not None:
            self.db.set_internal("'l", src, addrs)
        if src in self.globals:
            self.synced.add(src)
            self.db.sync_check()

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
        self.globals.add(nodeid)
        self.db.set_internal("'g", nodeid, None)
        self._send(nodeid, ["", "g_set", self.own_view()])

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
        self._send(src, ["", "g_found", nodeid, self.merged.get("'l", {}).get(nodeid)])

    def _mon1(self, src: str, family: Any) -> None:
        family = _check_family(family)
        if src not in self.globals:
            self.slaves.add(src)
        self.subs.setdefault(family, {})[src] = None
        self._send(src, ["", "g_chg1", family, dict(self.merged.get(family) or {}) or None])

    def _mon0(self, src: str, family: Any) -> None:
        family = _check_family(family)
        subs = self.subs.get(family)
        if subs is not None:
            subs.pop(src, None)
            if not subs:
                del self.subs[family]

    def _query(self, kind: str, src: str, family: Any, qid: Any) -> None:
        family = _check_family(family)
        data = self.merged.get(family) or {}
        result: Any
        if kind == "keys":
            result = list(data)
        elif kind == "values":
            result = list(data.values())
        else:
            result = dict(data)
        self._send(src, ["", "g_reply", qid, result])

    # ------------------------------------------------------------ nodes

    def node_up(self, nodeid: str) -> None:
        self.node.request(nodeid, "g_global")

    def node_down(self, nodeid: str) -> None:
        """A node we were connected to is gone: its entries go with it."""
        was_global = nodeid in self.globals
        for family in [f for f, subs in self.subs.items() if nodeid in subs]:
            self._mon0(nodeid, family)
        # dropped while still known as global: the other globals see it go
        # themselves, so only a slave's loss is forwarded to them
        self.drop(nodeid)
        self.globals.discard(nodeid)
        self.synced.discard(nodeid)
        self.slaves.discard(nodeid)
        if was_global or nodeid in self.db.local.get("'g", {}):
            self.db.del_internal("'g", nodeid)
        if nodeid in self.db.local.get("'l", {}):
            self.db.del_internal("'l", nodeid)

    def _send(self, nodeid: str, pkt: list[Any]) -> None:
        if nodeid == self.id:
            self.node.post(self.db.from_master, self.id, pkt[1], pkt[2:])
            return
        if self.node.node_is_up(nodeid):
            try:
                self.node.request(nodeid, *pkt[1:])
            except MessageError as e:
                # bytes set by a msgpack node cannot reach a json one
                log.warning("node %s: %s not sent to %s: %s", self.id, pkt[1], nodeid, e)
        # a node that is gone gets nothing: its subscriptions were dropped
        # with it, and it re-subscribes when it attaches again

    # ------------------------------------------------------------ the mesh

    def start(self) -> None:
        """Keep a connection to every global node for as long as we live."""
        if self._mesh_task is None and self.node._net is not None:
            self._mesh_task = self.node.spawn_task(self._mesh())

    async def _mesh(self) -> None:
        # Part B 5.2: at once, then 0.6-1.2 s doubling up to monitor_timeout
        cap = self.node.config.monitor_timeout
        delay = 0.0
        while True:
            missing = [
                g for g in self.merged.get("'g", {}) if g != self.id and not self.node.node_is_up(g)
            ]
            for g in missing:
                self.node.connect(g)
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


def _shown(family: str, key: str, holders: dict[str, None] | list[str]) -> str:
    """Which of the sources holding `key` the merged view shows: the newest
    writer, but in 'l the node itself when it is one of them."""
    if family == "'l" and key in holders:
        return key
    return next(reversed(holders))


def _check_family(family: Any) -> str:
    if not valid_peer_family(family):
        raise ValueError(
            f"{family!r:.80} is not a family name (a string of 1 to {MAX_FAMILY} characters)"
        )
    return str(family)


def _check_entries(entries: Any) -> None:
    if type(entries) is not dict:
        raise TypeError(f"expected a {{subkey: value}} object, got {entries!r:.80}")
    for k in entries:
        if type(k) is not str:
            raise TypeError(f"subkey {k!r:.80} is not a string")


def _check_keys(keys: Any) -> None:
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise TypeError(f"expected a list of subkeys, got {keys!r:.80}")


def _check_shard(db: Any) -> Shard:
    if type(db) is not dict:
        raise TypeError(f"expected a {{family: {{subkey: value}}}} object, got {db!r:.80}")
    for family, entries in db.items():
        _check_family(family)
        _check_entries(entries)
    return db


_HANDLERS: dict[str, Any] = {
    "g_slave": Global._slave,
    "g_upd": Global._upd,
    "g_set": Global._set,
    "g_global": Global._global,
    "g_find": Global._find,
    "g_mon1": Global._mon1,
    "g_mon0": Global._mon0,
    "g_db_family": lambda g, src, f, qid: g._query("family", src, f, qid),
    "g_db_keys": lambda g, src, f, qid: g._query("keys", src, f, qid),
    "g_db_values": lambda g, src, f, qid: g._query("values", src, f, qid),
}

GLOBAL_TAGS = tuple(_HANDLERS)  # the g_* requests a global node answers
