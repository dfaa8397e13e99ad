"""Properties of the global nodes' pure merge (aemp/db/_merge.py).

Owners write families; the merged view shows, per key, the value of the
newest writer among the owners that hold it, except in 'l, where a node's
own record of itself shows over what others say about it. The tests check
the merge against that model, and the properties the mesh relies on: every
Change says exactly how the merged view and the own view moved, order of
arrival across owners does not matter where owners agree, an update applied
twice changes nothing, dropping an owner removes exactly its entries, and
two globals that exchange their own views see one database.

When two owners hold one key with different values, the newest write wins,
and which is newest depends on arrival: that is the protocol's rule (Perl's
too), so the order and exchange properties are stated for owners that
agree on shared keys (values drawn per key), which is how the database is
used (a port ID or a node ID as the key, written by its own node).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aemp.db._merge import Change, Merge, shown

OWNERS = ["a", "b", "c"]
FAMILIES = ["f", "'l"]
KEYS = ["a", "b", "x", "y"]  # 'l keys are node IDs: "a" and "b" are owners too

SETTINGS = settings(max_examples=80, deadline=None)

Op = tuple[str, str, dict[str, Any], list[str]]  # src, family, sets, dels


def _value(src: str, family: str, key: str, n: int) -> Any:
    """Owners agree on shared keys, but a node's own 'l record is its own."""
    if family == "'l" and key == src:
        return ["own", src, n]
    return [family, key]


@st.composite
def ops(
    draw: st.DrawFn,
    owners: list[str] = OWNERS,
    agree: bool = True,
    free: set[str] | None = None,
) -> list[Op]:
    """Updates from `owners`. Only the owners in `free` (all if None) write
    'l records of other nodes: the service lets only other globals do that."""
    out: list[Op] = []
    for _ in range(draw(st.integers(0, 10))):
        src = draw(st.sampled_from(owners))
        family = draw(st.sampled_from(FAMILIES))
        may = KEYS if free is None or src in free or family != "'l" else [src]
        keys = draw(st.lists(st.sampled_from(may), max_size=3, unique=True))
        if agree:
            n = draw(st.integers(0, 2))
            sets = {k: _value(src, family, k, n) for k in keys}
        else:
            sets = {k: draw(st.integers(0, 2)) for k in keys}
        dels = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
        out.append((src, family, sets, dels))
    return out


class Model:
    """The merge, written the slow and obvious way."""

    def __init__(self) -> None:
        self.shards: dict[str, dict[str, dict[str, Any]]] = {}
        self.written: dict[tuple[str, str, str], int] = {}  # (owner, family, key) -> when
        self.clock = 0

    def update(self, src: str, family: str, sets: dict[str, Any], dels: list[str]) -> None:
        fam = self.shards.setdefault(src, {}).setdefault(family, {})
        for k, v in sets.items():
            self.clock += 1
            fam[k] = v
            self.written[src, family, k] = self.clock
        for k in dels:
            fam.pop(k, None)

    def drop(self, src: str) -> None:
        self.shards.pop(src, None)

    def merged(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        keys = {(f, k) for shard in self.shards.values() for f, kv in shard.items() for k in kv}
        for f, k in keys:
            holders = [o for o, shard in self.shards.items() if k in shard.get(f, {})]
            if f == "'l" and k in holders:
                who = k
            else:
                who = max(holders, key=lambda o: self.written[o, f, k])
            out.setdefault(f, {})[k] = self.shards[who][f][k]
        return out


def state(m: Merge) -> Any:
    """Everything a Merge holds, order of holders included."""
    holders = {f: {k: list(hs) for k, hs in kv.items()} for f, kv in m.holders.items()}
    return copy.deepcopy((m.shards, m.merged, holders, sorted(m.globals)))


def check_index(m: Merge) -> None:
    """The holder index lists exactly who holds what, and the view follows it."""
    held: dict[str, dict[str, set[str]]] = {}
    for owner, shard in m.shards.items():
        for family, kv in shard.items():
            assert kv, f"{owner} keeps an empty family {family!r}"
            for k in kv:
                held.setdefault(family, {}).setdefault(k, set()).add(owner)
    assert {f: {k: set(hs) for k, hs in kv.items()} for f, kv in m.holders.items()} == held
    assert all(m.holders.values()) and all(m.merged.values())
    assert {f: set(kv) for f, kv in m.merged.items()} == {f: set(kv) for f, kv in held.items()}
    for family, kv in m.holders.items():
        for k, hs in kv.items():
            assert m.merged[family][k] == m.shards[shown(family, k, hs)][family][k]


def patch(view: dict[str, dict[str, Any]], family: str, sets: Any, dels: Any) -> None:
    """Apply a change the way a receiver does (g_chg2 to a monitor, g_upd to a global)."""
    fam = view.setdefault(family, {})
    fam.update(sets)
    for k in dels:
        fam.pop(k, None)
    if not fam:
        del view[family]


def apply(m: Merge, todo: list[Op]) -> None:
    for src, family, sets, dels in todo:
        m.update(src, family, sets, dels)


@SETTINGS
@given(ops(agree=False))
def test_the_merge_follows_the_model_and_keeps_its_index(todo: list[Op]) -> None:
    m, model = Merge(), Model()
    for src, family, sets, dels in todo:
        m.update(src, family, sets, dels)
        model.update(src, family, sets, dels)
        check_index(m)
        assert m.merged == model.merged()


@SETTINGS
@given(st.data(), st.sets(st.sampled_from(OWNERS), max_size=1))
def test_every_change_says_exactly_how_the_views_moved(data: Any, globals_: set[str]) -> None:
    """sets/dels turn the old merged view into the new one (what monitors get);
    fwd_sets/fwd_dels turn the old own view into the new one (what globals get)."""
    todo = data.draw(ops(agree=False, free=globals_))
    m = Merge()
    m.globals |= globals_
    for src, family, sets, dels in todo:
        before, own_before = copy.deepcopy(m.merged), m.own_view()
        change = m.update(src, family, sets, dels)
        assert isinstance(change, Change) and change.family == family
        patch(before, family, change.sets, change.dels)
        assert before == m.merged
        if src in globals_:
            assert not change.fwd_sets and not change.fwd_dels  # crosses the mesh once
        patch(own_before, family, change.fwd_sets, change.fwd_dels)
        assert own_before == m.own_view()


@SETTINGS
@given(ops(), st.randoms(use_true_random=False))
def test_the_order_of_arrival_across_owners_does_not_matter(todo: list[Op], rnd: Any) -> None:
    # the same updates, each owner's own in its order, interleaved another way
    slots = [op[0] for op in todo]
    rnd.shuffle(slots)
    queues = {o: [op for op in todo if op[0] == o] for o in OWNERS}
    other = [queues[o].pop(0) for o in slots]
    m1, m2 = Merge(), Merge()
    apply(m1, todo)
    apply(m2, other)
    assert m1.merged == m2.merged
    assert m1.shards == m2.shards
    assert m1.own_view() == m2.own_view()
    who1 = {f: {k: set(hs) for k, hs in kv.items()} for f, kv in m1.holders.items()}
    who2 = {f: {k: set(hs) for k, hs in kv.items()} for f, kv in m2.holders.items()}
    assert who1 == who2


@SETTINGS
@given(ops(agree=False), st.sampled_from(OWNERS), st.sampled_from(FAMILIES),
       st.dictionaries(st.sampled_from(KEYS), st.integers(0, 2), max_size=3),
       st.lists(st.sampled_from(KEYS), max_size=2))  # fmt: skip
def test_an_update_applied_twice_changes_nothing(
    todo: list[Op], src: str, family: str, sets: dict[str, Any], dels: list[str]
) -> None:
    m = Merge()
    apply(m, todo)
    m.update(src, family, sets, dels)
    once = state(m)
    again = m.update(src, family, sets, dels)
    assert state(m) == once
    view = copy.deepcopy(m.merged)
    patch(view, family, again.sets, again.dels)
    assert view == m.merged
    if not set(sets) & set(dels):
        assert not again.sets and not again.dels  # nothing to tell any monitor
    # and a whole shard sent twice (g_slave, g_set) changes nothing either
    shard = copy.deepcopy(m.shards.get(src, {}))
    assert m.replace(src, shard) == []
    assert state(m) == once


@SETTINGS
@given(ops(agree=False), st.sampled_from(OWNERS))
def test_dropping_an_owner_removes_exactly_its_entries(todo: list[Op], gone: str) -> None:
    m, model = Merge(), Model()
    for src, family, sets, dels in todo:
        m.update(src, family, sets, dels)
        model.update(src, family, sets, dels)
    before = copy.deepcopy(m.merged)
    changes = m.drop(gone)
    model.drop(gone)
    check_index(m)
    assert gone not in m.shards
    assert all(gone not in hs for kv in m.holders.values() for hs in kv.values())
    # a key another owner holds falls back to that owner's value; the rest stays
    assert m.merged == model.merged()
    for change in changes:
        patch(before, change.family, change.sets, change.dels)
    assert before == m.merged


@SETTINGS
@given(
    ops(owners=["a", "b"], free=set()),
    ops(owners=["c", "d"], free=set()),
    ops(owners=["a", "b", "c", "d"], free=set()),
)
def test_two_globals_that_exchange_their_views_see_one_database(
    first: list[Op], second: list[Op], later: list[Op]
) -> None:
    """g1 serves a and b, g2 serves c and d. They meet (g_set each way), then
    every later change of a slave reaches the other global as a g_upd."""
    g1, g2 = Merge(), Merge()
    g1.globals.add("g2")
    g2.globals.add("g1")
    apply(g1, first)
    apply(g2, second)
    g1.replace("g2", g2.own_view())
    g2.replace("g1", g1.own_view())
    for m in (g1, g2):
        check_index(m)
    assert g1.merged == g2.merged
    for src, family, sets, dels in later:
        here, there, me = (g1, g2, "g1") if src in ("a", "b") else (g2, g1, "g2")
        change = here.update(src, family, sets, dels)
        there.update(me, family, change.fwd_sets, change.fwd_dels)
        assert g1.merged == g2.merged
    # a global that goes takes its slaves' entries with it, and only those
    g1.drop("g2")
    g1.globals.discard("g2")
    check_index(g1)
    assert set(g1.shards) <= {"a", "b"}
    assert g1.merged == g1.own_view()
