# The global nodes' merge: shards in, one merged view out. Pure: no I/O,
# no node, no event loop, so that its properties can be tested alone
# (tests/test_db_merge.py).
#
# A global node keeps one *shard* per owner: each slave's local database,
# each other global node's view of itself and its slaves (its "own view"),
# and its own local database (a global node is its own slave). The merge
# of all shards is the database that queries read and monitors watch.
#
# Who holds which key is indexed (`holders`, oldest write first), so that
# deleting a key one owner held while another still holds it falls back to
# that other owner's value instead of losing it (docs/protocol.md, section
# 10). The merged view shows the newest writer's value, except in 'l (the
# listeners), where a node's own record of itself shows over anything
# others say about it.
#
# Every operation returns what changed, as Change records in the order the
# caller should act on them: `sets`/`dels` is the change of the merged view
# (for the monitors of the family), `fwd_sets`/`fwd_dels` the change of this
# node's own view (for the other global nodes). Changes that come from
# another global node are not forwarded, so every change crosses the mesh
# once. Nothing is sent from here: aemp/db/_service.py does that.
#
# Invariants (tested): holders[f][k] lists exactly the owners whose shard
# holds f/k, and exists only while one does; merged[f][k] is the value of
# the owner shown (see shown()); no family is kept empty in holders or
# merged, nor in a shard.
#
# May import only the standard library.

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

Shard = dict[str, dict[str, Any]]  # family -> subkey -> value


class Change(NamedTuple):
    """What one update of one family changed."""

    family: str
    sets: dict[str, Any]  # the merged view: new or changed keys, with their values
    dels: list[str]  # the merged view: keys gone
    fwd_sets: dict[str, Any]  # this node's own view, for the other global nodes
    fwd_dels: list[str]


def shown(family: str, key: str, holders: dict[str, None] | list[str]) -> str:
    """Which of the owners holding `key` the merged view shows: the newest
    writer, but in 'l the node itself when it is one of them."""
    if family == "'l" and key in holders:
        return key
    return next(reversed(holders))


class Merge:
    """The shards of every owner and their merged view."""

    __slots__ = ("globals", "holders", "merged", "shards")

    def __init__(self) -> None:
        self.shards: dict[str, Shard] = {}
        self.merged: Shard = {}
        # family -> subkey -> the owners that hold it, oldest write first
        self.holders: dict[str, dict[str, dict[str, None]]] = {}
        # the other global nodes: their shards are their own views, which
        # are neither forwarded nor part of this node's own view
        self.globals: set[str] = set()

    def update(self, src: str, family: str, sets: Mapping[str, Any] | None, dels: Any) -> Change:
        """Apply owner `src`'s change of `family`: `sets` written, `dels` deleted."""
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
                # a node's own record of its listeners stands over a relayed one
                own_stands = listeners and k != src and k in hs
                if not own_stands and (k not in merged or merged[k] != v):
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
                    # another owner still holds the key: its newest value shows
                    v = self.shards[shown(family, k, hs)][family][k]
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
                        fwd_set[k] = self.shards[shown(family, k, mine)][family][k]
                    else:
                        fwd_del.append(k)
        if not fam:
            del shard[family]
        if not merged:
            del self.merged[family]
            del self.holders[family]
        return Change(family, eff_set, eff_del, fwd_set, fwd_del)

    def replace(self, src: str, shard: Shard) -> list[Change]:
        """Make `shard` the whole database of `src`, as one change per family."""
        old = self.shards.get(src, {})
        out = []
        for family in set(old) | set(shard):
            before = old.get(family, {})
            after = shard.get(family, {})
            sets = {k: v for k, v in after.items() if k not in before or before[k] != v}
            dels = [k for k in before if k not in after]
            if sets or dels:
                out.append(self.update(src, family, sets, dels))
        return out

    def drop(self, src: str) -> list[Change]:
        """Forget everything `src` held."""
        out = self.replace(src, {})
        self.shards.pop(src, None)
        return out

    def own_view(self) -> Shard:
        """This node's and its slaves' entries: what other global nodes get as g_set."""
        out: Shard = {}
        for family, keys in self.holders.items():
            for k, hs in keys.items():
                mine = [h for h in hs if h not in self.globals]
                if mine:
                    out.setdefault(family, {})[k] = self.shards[shown(family, k, mine)][family][k]
        return out
