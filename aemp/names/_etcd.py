# etcd://host:port[,host:port...][/prefix]: name leases on an etcd v3 cluster.
#
# Two keys per name under the prefix (default /aemp/names):
#   PREFIX/n/FAMILY/NAME  the record, {"c": created_at, "u": updated_at};
#                         written only by a grant, so its mod_revision is
#                         the revision of the last grant: the fencing token
#   PREFIX/h/FAMILY/NAME  the hold key, attached to the holder's etcd lease;
#                         it exists exactly while the name is held
# A grant is one transaction: "the hold key does not exist and the record
# is as I read it" -> put both. etcd's revision grows with every write of
# the cluster, so the token grows with every grant of a name, across
# resets and restarts. The lease (one per held name, TTL from the grant
# answer) deletes the hold key when it lapses, or at once when revoked.
# A renewal is the lease's keep-alive plus a look at the hold key: a name
# released by somebody else (`aemp names release`) or reset is lost even
# though its etcd lease still lives.
#
# While etcd has a quorum no name is held twice: both the check and the
# grant are in one linearizable transaction.
#
# A capability (layer 6): imports only aemp, aemp.lowlevel and the leaves.

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any

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
    register_backend,
    smallest_free,
)
from ._etcd_http import EtcdError, Gateway, b64, prefix_end, unb64

#: a grant retried after a conflicting write, at most: 50 contenders for the
#: smallest free number need as many rounds at worst
MAX_ROUNDS = 200


class EtcdNames(NameManager):
    def __init__(self, gw: Gateway, prefix: str, ttl: float) -> None:
        super().__init__(ttl)
        self.gw = gw
        self.prefix = prefix
        self._leases: dict[int, str] = {}  # token -> etcd lease ID
        self._holder = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"

    def _rec(self, family: str, name: str = "") -> str:
        return f"{self.prefix}/n/{family}/{name}"

    def _hold(self, family: str, name: str = "") -> str:
        return f"{self.prefix}/h/{family}/{name}"

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.gw.post(path, body)
        except EtcdError as e:
            raise BackendUnavailable(str(e)) from e

    async def _grant(self, family: str, name: str | None, must_exist: bool) -> tuple[Lease, float]:
        ans = await self._call("/v3/lease/grant", {"TTL": max(1, round(self.ttl))})
        lease_id, ttl = ans["ID"], float(ans.get("TTL", 0))
        try:
            return await self._grant_with(family, name, must_exist, lease_id), ttl
        except BaseException:
            await self._revoke(lease_id)
            raise

    async def _grant_with(
        self, family: str, fixed: str | None, must_exist: bool, lease_id: str
    ) -> Lease:
        for _ in range(MAX_ROUNDS):
            if fixed is None:
                held = await self._call(
                    "/v3/kv/range",
                    {"key": b64(self._hold(family)), "range_end": prefix_end(self._hold(family)),
                     "keys_only": True},
                )  # fmt: skip
                skip = len(self._hold(family))
                name = smallest_free({unb64(kv["key"])[skip:] for kv in held.get("kvs", [])})
            else:
                name = fixed
            rec_key, hold_key = self._rec(family, name), self._hold(family, name)
            got = await self._call("/v3/kv/range", {"key": b64(rec_key)})
            kvs = got.get("kvs", [])
            now = time.time()
            if kvs:
                rec = json.loads(unb64(kvs[0].get("value", ""))) if kvs[0].get("value") else {}
                created, seen = rec.get("c", now), kvs[0]["mod_revision"]
            elif must_exist:
                raise NameNotExist(f"{family}/{name} was never acquired")
            else:
                created, seen = now, "0"
            value = json.dumps({"c": created, "u": now})
            ans = await self._call(
                "/v3/kv/txn",
                {
                    "compare": [
                        {"key": b64(hold_key), "target": "CREATE", "create_revision": "0"},
                        {"key": b64(rec_key), "target": "MOD", "mod_revision": seen},
                    ],
                    "success": [
                        {"request_put": {"key": b64(rec_key), "value": b64(value)}},
                        {
                            "request_put": {
                                "key": b64(hold_key),
                                "value": b64(self._holder),
                                "lease": lease_id,
                            }
                        },
                    ],
                    "failure": [{"request_range": {"key": b64(hold_key), "keys_only": True}}],
                },
            )
            if ans.get("succeeded"):
                token = int(ans["header"]["revision"])
                self._leases[token] = lease_id
                return Lease(family, name, token)
            in_use = ans["responses"][0]["response_range"].get("kvs")
            if in_use and fixed is not None:
                raise NameInUse(f"{family}/{name} is held")
            # somebody else's grant came between: look again
        raise BackendUnavailable(f"{family}: no grant after {MAX_ROUNDS} rounds of contention")

    async def _revoke(self, lease_id: str) -> None:
        with contextlib.suppress(BackendUnavailable):  # else it lapses by itself
            await self._call("/v3/lease/revoke", {"ID": lease_id})

    async def _renew(self, lease: Lease) -> float:
        lease_id = self._leases.get(lease.token)
        if lease_id is None:
            raise NameLost(f"{lease.family}/{lease.name}: no longer held by this manager")
        ans = await self._call("/v3/lease/keepalive", {"ID": lease_id})
        ttl = float(ans.get("result", {}).get("TTL", 0))
        got = await self._call("/v3/kv/range", {"key": b64(self._hold(lease.family, lease.name))})
        kvs = got.get("kvs", [])
        if ttl <= 0 or not kvs or int(kvs[0]["create_revision"]) != lease.token:
            self._leases.pop(lease.token, None)
            why = "lease lapsed" if ttl <= 0 else "released or given to another holder"
            raise NameLost(f"{lease.family}/{lease.name}: {why}")
        return ttl

    async def _release(self, family: str, name: str, lease: Lease | None) -> None:
        lease_id = self._leases.pop(lease.token, None) if lease else None
        if lease_id is not None:
            await self._call("/v3/lease/revoke", {"ID": lease_id})
        else:
            await self._call("/v3/kv/deleterange", {"key": b64(self._hold(family, name))})

    async def _list(self, family: str | None) -> list[Name]:
        rec_base = self._rec(family) if family else f"{self.prefix}/n/"
        hold_base = self._hold(family) if family else f"{self.prefix}/h/"
        recs = await self._call(
            "/v3/kv/range", {"key": b64(rec_base), "range_end": prefix_end(rec_base)}
        )
        held = await self._call(
            "/v3/kv/range",
            {"key": b64(hold_base), "range_end": prefix_end(hold_base), "keys_only": True},
        )
        skip = len(f"{self.prefix}/h/")
        held_names = {unb64(kv["key"])[skip:] for kv in held.get("kvs", [])}
        out = []
        skip = len(f"{self.prefix}/n/")
        for kv in recs.get("kvs", []):
            fam, _, name = unb64(kv["key"])[skip:].partition("/")
            rec = json.loads(unb64(kv.get("value", "")) or "{}")
            free = f"{fam}/{name}" not in held_names
            out.append(
                Name(fam, name, rec.get("c", 0.0), rec.get("u", 0.0), free, int(kv["mod_revision"]))
            )
        return out

    async def _reset(self) -> None:
        for lease_id in list(self._leases.values()):
            await self._revoke(lease_id)
        self._leases.clear()
        base = f"{self.prefix}/"
        await self._call("/v3/kv/deleterange", {"key": b64(base), "range_end": prefix_end(base)})

    async def _close(self) -> None:
        await self.gw.close()


def parse_url(rest: str) -> tuple[list[tuple[str, int]], str]:
    hosts, slash, prefix = rest.partition("/")
    endpoints = []
    for part in hosts.split(","):
        host, colon, port = part.rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UnknownBackend(
                "etcd:// wants host:port[,host:port...][/prefix]"
                f" (got {part!r:.60} in {rest!r:.80})"
            )
        endpoints.append((host, int(port)))
    prefix = "/" + prefix.strip("/") if slash and prefix.strip("/") else "/aemp/names"
    return endpoints, prefix


async def _create(
    rest: str, *, ttl: float = 10.0, request_timeout: float = 5.0, **options: Any
) -> EtcdNames:
    if options:
        raise UnknownBackend(
            f"etcd:// takes only the options ttl and request_timeout (got {sorted(options)})"
        )
    endpoints, prefix = parse_url(rest)
    manager = EtcdNames(Gateway(endpoints, request_timeout), prefix, ttl)
    await asyncio.sleep(0)
    return manager


register_backend(
    Backend(
        "etcd",
        "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]: leases on an etcd v3 cluster (its JSON "
        "gateway, the client port); a name is never held twice while etcd has a quorum. "
        "PREFIX defaults to /aemp/names.",
        _create,
    )
)
