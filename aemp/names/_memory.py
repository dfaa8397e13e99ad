# memory://[STORE]: name leases in this process, for tests and for a single
# node. Managers opened with the same STORE (empty by default) share one
# table, held as long as one of them is open (a weak mapping, so a test's
# stores go when its managers do). A lease lapses `ttl` seconds after its
# last grant or renewal, on the loop's clock; lapsed entries are freed when
# the table is next looked at, which is all a single process needs.
#
# A capability (layer 6): imports only aemp, aemp.lowlevel and the leaves.

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from ._api import (
    Backend,
    Lease,
    Name,
    NameInUse,
    NameLost,
    NameManager,
    NameNotExist,
    UnknownBackend,
    register_backend,
    smallest_free,
)


@dataclass(slots=True)
class _Entry:
    created_at: float
    updated_at: float
    token: int
    holder: object | None = None  # the manager holding it, None when free
    expires: float = 0.0


@dataclass(eq=False)
class MemoryStore:
    """One table of names: {family: {name: entry}} and the token counter."""

    families: dict[str, dict[str, _Entry]] = field(default_factory=dict)
    counter: int = 0

    def sweep(self, family: dict[str, _Entry], now: float) -> None:
        for e in family.values():
            if e.holder is not None and now > e.expires:
                e.holder = None


_STORES: weakref.WeakValueDictionary[str, MemoryStore] = weakref.WeakValueDictionary()


class MemoryNames(NameManager):
    def __init__(self, store: MemoryStore, ttl: float) -> None:
        super().__init__(ttl)
        self.store = store

    def _family(self, family: str) -> dict[str, _Entry]:
        fam = self.store.families.setdefault(family, {})
        self.store.sweep(fam, asyncio.get_running_loop().time())
        return fam

    async def _grant(self, family: str, name: str | None, must_exist: bool) -> tuple[Lease, float]:
        fam = self._family(family)
        if name is None:
            name = smallest_free({n for n, e in fam.items() if e.holder is not None})
        e = fam.get(name)
        if e is None:
            if must_exist:
                raise NameNotExist(f"{family}/{name} was never acquired")
            e = fam[name] = _Entry(time.time(), time.time(), 0)
        elif e.holder is not None:
            raise NameInUse(f"{family}/{name} is held")
        self.store.counter += 1
        e.token = self.store.counter
        e.holder = self
        e.updated_at = time.time()
        e.expires = asyncio.get_running_loop().time() + self.ttl
        return Lease(family, name, e.token), self.ttl

    async def _renew(self, lease: Lease) -> float:
        e = self._family(lease.family).get(lease.name)
        if e is None or e.holder is not self or e.token != lease.token:
            raise NameLost(f"{lease.family}/{lease.name}: no longer held by this manager")
        e.expires = asyncio.get_running_loop().time() + self.ttl
        return self.ttl

    async def _release(self, family: str, name: str, lease: Lease | None) -> None:
        e = self._family(family).get(name)
        if e is not None and (lease is None or e.token == lease.token):
            e.holder = None

    async def _list(self, family: str | None) -> list[Name]:
        fams = [family] if family is not None else list(self.store.families)
        out = []
        for f in fams:
            for n, e in self._family(f).items():
                out.append(Name(f, n, e.created_at, e.updated_at, e.holder is None, e.token))
        return out

    async def _reset(self) -> None:
        self.store.families.clear()


async def _create(rest: str, *, ttl: float = 10.0, **options: Any) -> MemoryNames:
    if options:
        raise UnknownBackend(f"memory:// takes only the option ttl (got {sorted(options)})")
    store = _STORES.get(rest)
    if store is None:
        store = _STORES[rest] = MemoryStore()
    return MemoryNames(store, ttl)


register_backend(
    Backend(
        "memory",
        "memory://[STORE]: leases in this process only; managers opened with the same "
        "STORE share one table. For tests and single-node programs.",
        _create,
    )
)
