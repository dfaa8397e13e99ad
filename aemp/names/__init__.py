"""aemp.names: unique names in families, held as leases that lapse unless
kept alive, on one of several backends chosen by URL.

    from aemp import names

    async with await names.open("memory://") as manager:
        async with await manager.hold("workers") as held:
            print(held.name, held.token)      # "0" and its fencing token

Backends: ``memory://`` (this process), ``aemp://`` (the lease table on the
network's global nodes), ``etcd://host:port`` (an etcd v3 cluster).
``backends()`` lists them with their descriptions; ``register_backend``
adds one. Documented in docs/names.md. A capability: ``import aemp`` never
imports it.
"""

from __future__ import annotations

from . import _aemp, _etcd, _memory  # noqa: F401  (each registers its backend)
from ._aemp import serve
from ._api import (
    Backend,
    BackendUnavailable,
    Holding,
    InvalidName,
    Lease,
    Name,
    NameInUse,
    NameLost,
    NameManager,
    NameNotExist,
    UnknownBackend,
    backends,
    open,
    register_backend,
)
from ._singleton import Singleton

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Holding",
    "InvalidName",
    "Lease",
    "Name",
    "NameInUse",
    "NameLost",
    "NameManager",
    "NameNotExist",
    "Singleton",
    "UnknownBackend",
    "backends",
    "open",
    "register_backend",
    "serve",
]
